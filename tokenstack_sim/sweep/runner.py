"""A whole sweep: expand the spec, skip finished points, characterize, run the rest, keep the index.

`run_sweep(spec, out_dir, executor=...)`, in order:
1. the points (sweep/points.py), every (system, parameters) combination loaded once (refusals name
   the spec);
2. the folder: the spec copied to `spec.toml`; each point whose file is finished (sweep/index.py) is
   skipped when `resume` (its record is taken from the old index, or read from its file); the index
   is written with the rest "pending";
3. the characterization cache filled, here and before any worker starts, with every (stack, op) the
   pending points read (`sim.engine.ensure_tables`, `characterize_workers` processes): workers only
   read it, so they never race to characterize the same op. For a Dask executor each job also carries
   the cache files it reads (sweep/executor.py);
4. the points run on the executor; each finished point's file is written here, atomically, as it
   arrives, and the index is rewritten at most every `INDEX_EVERY_S` seconds and at the end (also
   after an error or Ctrl-C, with what finished);
5. a line per point to `progress` (sweep/progress.py).

Returns a `SweepOutcome`: counts by status and the failed points. Leaves out: running two sweeps into
one folder at once, deleting files of points no longer in the spec (they stay, unindexed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.errors import InputError
from tokenstack_sim.sweep import index as idx
from tokenstack_sim.sweep.points import Point, check_points, expand, job
from tokenstack_sim.sweep.progress import Progress
from tokenstack_sim.sweep.spec import SweepSpec

INDEX_EVERY_S = 2.0


@dataclass
class SweepOutcome:
    out_dir: Path
    total: int
    skipped: int = 0
    stale: int = 0  # finished by other code, so run again (sweep/index.py point_state)
    counts: dict = field(default_factory=dict)  # status -> points run in this call
    errors: list = field(default_factory=list)  # (point id, message)
    wall_s: float = 0.0


def point_label(point: Point, swept: set[str] | None = None) -> str:
    """system model workload qps seed, the swept design values (all of them when `swept` is None), id."""
    p = point.params
    extra = [f"{k}={v}" for sec in ("engine", "scheduler", "kv", "params") for k, v in p[sec].items()
             if swept is None or f"{sec}.{k}" in swept]
    return " ".join([p["system"], p["model"], Path(p["workload"]).stem, f"qps={p['qps']:g}", f"seed={p['seed']}",
                     *extra, f"({point.id})"])


def _old_records(out_dir: Path) -> dict:
    try:
        return {r["id"]: r for r in idx.read_index(out_dir)["points"]}
    except InputError:
        return {}


def _prepare_key(j) -> str:
    return json.dumps([j.system, j.overrides, j.model, dataclasses.asdict(j.options), j.spec.scheduler,
                       j.spec.kv_blocks, j.spec.kv], sort_keys=True, default=str)


def _required(jobs) -> dict[str, list]:
    """prepare key -> the (stack, op) pairs its step model reads."""
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.sim.engine import required_pairs

    out = {}
    for j in jobs:
        key = _prepare_key(j)
        if key not in out:
            system = load_config(j.system, list(j.overrides), kind="system")
            out[key] = required_pairs(system, j.model, options=j.options, scheduler=j.spec.scheduler,
                                      kv_blocks=j.spec.kv_blocks, kv=j.spec.kv)
    return out


def _cache_entries(pairs) -> tuple[tuple[str, str], ...]:
    from tokenstack_sim.hw.opcost import OpCosts
    from tokenstack_sim.sim.engine import serving_grid

    out = {}
    for stack, op in pairs:
        _, _, path = OpCosts(stack).entry(op, serving_grid(op))
        if path.name not in out and path.is_file():
            out[path.name] = path.read_text()
    return tuple(sorted(out.items()))


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, executor=None, resume: bool = True,
              characterize_workers: int | None = None, progress: Callable[[str], None] | None = None,
              note: Callable[[str], None] | None = None, points: list[Point] | None = None,
              make_job: Callable | None = None, keep_stale: bool = False) -> SweepOutcome:
    """Run the spec's points into `out_dir` (module docstring). `executor` defaults to this process.
    `resume` skips finished points; one computed by other code (sweep/index.py `point_state`) runs again
    unless `keep_stale`.
    `points` / `make_job`: another study's points of the spec and their jobs (robust/sweep.py: the
    spec's points, each also under injectors); default `expand(spec)` and `job`."""
    from tokenstack_sim.sim.engine import ensure_tables
    from tokenstack_sim.sweep.executor import DaskExecutor, LocalExecutor

    t0 = time.perf_counter()
    executor = executor or LocalExecutor(1)
    out_dir = Path(out_dir)
    points = expand(spec) if points is None else points
    check_points(spec, points)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / idx.SPEC_NAME, "wb", suffix=".toml.tmp") as fh:
        fh.write(spec.source.read_bytes())

    old = _old_records(out_dir)
    records: dict[str, dict] = {}
    pending: list[Point] = []
    stale = 0
    for p in points:
        state = idx.point_state(out_dir, p) if resume else "missing"
        stale += state == "stale" and not keep_stale
        if state == "finished" or (state == "stale" and keep_stale):
            rec = old.get(p.id)
            if not (rec and rec["status"] in ("ok", "does_not_fit") and rec["params"] == p.params):
                rec = idx.record(out_dir, p, run=idx.read_point(out_dir, p))
            records[p.id] = rec
        else:
            records[p.id] = idx.record(out_dir, p)
            pending.append(p)
    outcome = SweepOutcome(out_dir, len(points), skipped=len(points) - len(pending), stale=stale)

    def write_index() -> None:
        idx.write_index(out_dir, spec.name, spec.dims, [records[p.id] for p in points])

    write_index()
    if note and outcome.skipped:
        note(f"{outcome.skipped} of {len(points)} points already finished in {out_dir}; skipped")
    if note and stale:
        note(f"{stale} of {len(points)} points in {out_dir} were finished by other code (the simulator's sources "
             "or presets changed since): running them again (keep them with --keep-stale)")
    if not pending:
        outcome.wall_s = time.perf_counter() - t0
        return outcome

    jobs = [(make_job or job)(spec, p) for p in pending]
    required = _required(jobs)
    ensure_tables([pair for pairs in required.values() for pair in pairs], workers=characterize_workers,
                  progress=note)
    if isinstance(executor, DaskExecutor):
        entries = {k: _cache_entries(v) for k, v in required.items()}
        jobs = [dataclasses.replace(j, cache_entries=entries[_prepare_key(j)]) for j in jobs]
    by_id = {p.id: p for p in pending}
    if note:
        note(f"running {len(pending)} of {len(points)} points on {executor.describe()}")
    prog = Progress(len(points), outcome.skipped, progress)
    swept = {d.name for d in spec.dims if d.swept}
    last_write = time.monotonic()
    try:
        with contextlib.closing(executor.run(jobs)) as outcomes:
            for o in outcomes:
                p = by_id[o.point_id]
                if o.result is not None:
                    idx.write_point(out_dir, p, o.result, spec.name)
                    records[p.id] = idx.record(out_dir, p, run=o.result, wall_s=o.wall_s)
                else:
                    records[p.id] = idx.record(out_dir, p, status="error", error=o.error, wall_s=o.wall_s)
                    outcome.errors.append((p.id, o.error))
                status = records[p.id]["status"]
                outcome.counts[status] = outcome.counts.get(status, 0) + 1
                if time.monotonic() - last_write >= INDEX_EVERY_S:
                    write_index()
                    last_write = time.monotonic()
                prog.point_done(status, point_label(p, swept) + (f": {o.error}" if o.error else ""))
    finally:
        write_index()
    outcome.wall_s = time.perf_counter() - t0
    return outcome
