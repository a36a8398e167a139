"""`tokenstack robustness SPEC.toml`: designs and policies x injector types x magnitudes x seeds, run on
the sweep machinery (sweep/runner.py: one HDF5 file per point, `index.json`, resumable, local processes or
Dask), then compared with the nominal runs (robust/metrics.py) into `robustness.json`.

The spec is a sweep spec (sweep/spec.py: systems, models, workloads, qps, seeds, `[kv]`, `[params]`, ...)
plus a `[robustness]` table:

```toml
[robustness]
window_s = 1.0          # recovery: window of the throughput series, s
tolerance = 0.1         # recovery: within this share of the nominal run
hold_windows = 3        # recovery: for this many windows in a row
series = "output_tokens_per_s"   # or "num_waiting"

[[robustness.injectors]]         # one table per injector (robust/injectors.py keys), with
type = "gpu_slowdown"            # `magnitudes` (a list) instead of `magnitude`
magnitudes = [0.5, 1.0]
start_s = 10.0
end_s = 15.0
```

Every point of the sweep spec runs nominal (the same point id as in a plain sweep of the spec, so a
sweep folder is reused) and once per injector x magnitude (the point's params gain `perturb`: a list of
one injector table, so its id differs). A magnitude of 0 is the nominal point itself. Refresh storms'
op costs are characterized here before the points run (workers only read the cache; a Dask worker
without the cache characterizes them itself).

`robustness.json` (written atomically): the settings and one row per perturbed point — its design
(every spec dimension's value), injector type, scope, magnitude, seed, the metrics of
`robust/metrics.compare` — and the nominal point it was compared with.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.config.loader import read_toml
from tokenstack_sim.errors import InputError
from tokenstack_sim.robust import metrics as rm
from tokenstack_sim.robust.injectors import parse_injector
from tokenstack_sim.sweep.points import Point, expand, job, point_id

ROBUST_KEYS = ("window_s", "tolerance", "hold_windows", "series", "injectors")
RESULT_NAME = "robustness.json"


@dataclasses.dataclass(frozen=True)
class RobustSpec:
    sweep: object  # SweepSpec
    injectors: tuple[dict, ...]  # one table per (injector, magnitude), as RunSpec.perturb takes them
    window_s: float = rm.DEFAULT_WINDOW_S
    tolerance: float = rm.DEFAULT_TOLERANCE
    hold_windows: int = rm.DEFAULT_HOLD_WINDOWS
    series: str = "output_tokens_per_s"

    def settings(self) -> dict:
        return {"window_s": self.window_s, "tolerance": self.tolerance, "hold_windows": self.hold_windows,
                "series": self.series}


def load_robust_spec(path: str | Path) -> RobustSpec:
    """A sweep spec with its `[robustness]` table, checked whole (errors name the file and key)."""
    from tokenstack_sim.sweep.spec import load_sweep_spec

    path = Path(path)
    spec = load_sweep_spec(path, extra_keys=("robustness",))
    raw = read_toml(path).get("robustness")
    if not isinstance(raw, dict):
        raise InputError("required table is missing ([robustness] with [[robustness.injectors]])", source=path,
                         where="robustness")
    for k in raw:
        if k not in ROBUST_KEYS:
            raise InputError(f"unknown key; valid keys here: {', '.join(ROBUST_KEYS)}", source=path,
                             where=f"robustness.{k}")
    kw = {}
    for k, typ in (("window_s", float), ("tolerance", float), ("hold_windows", int)):
        if k in raw:
            v = raw[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (typ is int and not isinstance(v, int)) \
                    or not math.isfinite(v) or v <= 0 and k != "tolerance" or v < 0:
                raise InputError(f"expected a {'whole ' if typ is int else ''}number > 0, got {v!r}", source=path,
                                 where=f"robustness.{k}")
            kw[k] = typ(v)
    if "series" in raw:
        if raw["series"] not in rm.SERIES:
            raise InputError(f"expected one of {', '.join(rm.SERIES)}, got {raw['series']!r}", source=path,
                             where="robustness.series")
        kw["series"] = raw["series"]
    tables = raw.get("injectors")
    if not isinstance(tables, list) or not tables:
        raise InputError("expected one or more [[robustness.injectors]] tables", source=path,
                         where="robustness.injectors")
    out = []
    for i, t in enumerate(tables):
        where = f"robustness.injectors[{i}]"
        if not isinstance(t, dict):
            raise InputError(f"expected a table, got {t!r}", source=path, where=where)
        t = dict(t)
        if "magnitude" in t and "magnitudes" in t:
            raise InputError("give magnitude or magnitudes, not both", source=path, where=f"{where}.magnitudes")
        mags = t.pop("magnitudes", None)
        if mags is None:
            mags = [t.pop("magnitude")] if "magnitude" in t else None
        if not isinstance(mags, list) or not mags:
            raise InputError("expected magnitudes = [a list of numbers]", source=path, where=f"{where}.magnitudes")
        for j, m in enumerate(mags):
            try:
                inj = parse_injector(t | {"magnitude": m}, where)
            except InputError as exc:
                w = exc.where.replace(".magnitude", f".magnitudes[{j}]") if exc.where else where
                raise InputError(exc.message, source=path, where=w) from None
            if not inj.is_nominal:
                out.append(inj.as_dict())
    return RobustSpec(spec, tuple(out), **kw)


def expand_points(rs: RobustSpec) -> list[Point]:
    """Every nominal point of the sweep spec followed by its perturbed points (module docstring)."""
    return with_injectors(expand(rs.sweep), rs.injectors)


def with_injectors(points: list[Point], injectors) -> list[Point]:
    """Each point followed by a copy of it per injector table (params + `perturb`, its own id)."""
    out = []
    for p in points:
        out.append(p)
        for inj in injectors:
            params = dict(p.params) | {"perturb": [inj]}
            out.append(Point(point_id(params), params))
    return out


def with_runtime(points: list[Point], runtime: str, options: dict) -> Point:
    """Points of an agent workload served by `runtime` with AgentRuntimeParams `options` (ids change)."""
    out = []
    for p in points:
        params = dict(p.params) | {"runtime": runtime, "runtime_options": dict(options)}
        out.append(Point(point_id(params), params))
    return out


def make_job(spec, point: Point):
    """sweep.points.job, with the point's injectors (and agent runtime, where it names one) in its RunSpec."""
    j = job(spec, point)
    extra = {}
    if point.params.get("perturb"):
        extra["perturb"] = list(point.params["perturb"])
    if "runtime" in point.params:
        extra |= {"runtime": point.params["runtime"], "runtime_options": dict(point.params.get("runtime_options", {}))}
    if extra:
        j = dataclasses.replace(j, spec=dataclasses.replace(j.spec, **extra))
    return j


def nominal_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "perturb"}


def prime_storms(rs: RobustSpec, points: list[Point], progress: Callable[[str], None] | None = None) -> None:
    """Characterize, into the cache, the op costs of every refresh storm level on every system (and its
    parameters) of the spec."""
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.hw.opcost import OpCosts
    from tokenstack_sim.robust.perturb import storm_stack
    from tokenstack_sim.sim.engine import prepare, serving_grid

    levels = sorted({i["magnitude"] for i in rs.injectors if i["type"] == "refresh_storm"})
    if not levels:
        return
    seen = set()
    for p in points:
        if p.params.get("perturb"):
            continue
        j = job(rs.sweep, p)
        key = json.dumps([j.system, j.overrides, j.model, dataclasses.asdict(j.options), j.spec.scheduler,
                          j.spec.kv_blocks, j.spec.kv], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        system = load_config(j.system, list(j.overrides), kind="system")
        prep = prepare(system, j.model, options=j.options, scheduler=j.spec.scheduler, kv_blocks=j.spec.kv_blocks,
                       kv=j.spec.kv, bind=False)
        if prep.step_model is None:
            continue
        for m in levels:
            stacks = {}
            for stack, op in prep.step_model.required_ops():
                st = stacks.get(id(stack))
                if st is None:
                    st = stacks[id(stack)] = OpCosts(storm_stack(system, stack, m), on_missing="characterize",
                                                     progress=progress)
                st.table(op, serving_grid(op))


def run_robustness(rs: RobustSpec, out_dir: str | Path, *, executor=None, resume: bool = True,
                   characterize_workers: int | None = None, progress=None, note=None, points=None):
    """Run every point (sweep/runner.py) and write `robustness.json`; returns (SweepOutcome, rows).
    `points`: others than the spec's (`with_injectors`, `with_runtime`)."""
    from tokenstack_sim.sweep.runner import run_sweep

    points = expand_points(rs) if points is None else points
    prime_storms(rs, points, progress=note)
    outcome = run_sweep(rs.sweep, out_dir, executor=executor, resume=resume,
                        characterize_workers=characterize_workers, progress=progress, note=note,
                        points=points, make_job=make_job)
    rows = compare_points(rs, out_dir, points)
    return outcome, rows


def _design(params: dict, swept: set[str]) -> str:
    """A short label of a point's design: system, and every swept design dimension's value."""
    parts = [params["system"]]
    if "model" in swept:
        parts.append(params["model"])
    for sec in ("engine", "scheduler", "kv", "params"):
        for k, v in params[sec].items():
            if f"{sec}.{k}" in swept:
                parts.append(f"{k}={v}")
    if "qps" in swept:
        parts.append(f"qps={params['qps']:g}")
    if "runtime" in params:
        parts.append(params["runtime"])
        parts += [f"{k}={v}" for k, v in sorted(params.get("runtime_options", {}).items())]
    return " ".join(parts)


def compare_points(rs: RobustSpec, out_dir: str | Path, points: list[Point] | None = None) -> list[dict]:
    """One row per finished perturbed point with its nominal point finished too; written to
    DIR/robustness.json."""
    from tokenstack_sim.sweep import index as idx

    out_dir = Path(out_dir)
    points = points if points is not None else expand_points(rs)
    swept = {d.name for d in rs.sweep.dims if d.swept}
    if len(rs.sweep.models) > 1:
        swept.add("model")
    by_id = {p.id: p for p in points}
    nominal_runs: dict[str, object] = {}
    rows = []
    for p in points:
        if not p.params.get("perturb") or not idx.is_finished(out_dir, p):
            continue
        nom = Point(point_id(nominal_params(p.params)), nominal_params(p.params))
        if nom.id not in by_id or not idx.is_finished(out_dir, nom):
            continue
        if nom.id not in nominal_runs:
            nominal_runs[nom.id] = idx.read_point(out_dir, nom)
        n = nominal_runs[nom.id]
        r = idx.read_point(out_dir, p)
        if n.status != "ok" or r.status != "ok":
            continue
        typ, scope, mag = rm.describe(p.params["perturb"])
        row = {"id": p.id, "nominal_id": nom.id, "design": _design(p.params, swept), "system": p.params["system"],
               "model": p.params["model"], "workload": p.params["workload"], "qps": p.params["qps"],
               "seed": p.params["seed"], "kv": p.params["kv"], "params": p.params["params"],
               "scheduler": p.params["scheduler"], "engine": p.params["engine"],
               "runtime_options": p.params.get("runtime_options", {}),
               "type": typ, "scope": "all" if scope == "all" else "one", "scope_key": scope, "magnitude": mag}
        row |= rm.compare(n, r, window_s=rs.window_s, tolerance=rs.tolerance, hold_windows=rs.hold_windows,
                          what=rs.series)
        rows.append(row)
    doc = {"schema_version": 1, "settings": rs.settings(), "rows": rows}
    with atomic_write(out_dir / RESULT_NAME, "w", suffix=".json.tmp") as fh:
        json.dump(doc, fh, indent=1, default=_json_default, allow_nan=True)
    return rows


def _json_default(v):
    import numpy as np

    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    raise TypeError(type(v).__name__)


def read_rows(out_dir: str | Path) -> dict:
    path = Path(out_dir) / RESULT_NAME
    if not path.is_file():
        raise InputError(f"no {RESULT_NAME} here (run `tokenstack robustness SPEC.toml --out {out_dir}` first)",
                         source=str(out_dir))
    return json.loads(path.read_text())
