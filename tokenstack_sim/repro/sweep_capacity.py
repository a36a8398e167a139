"""SLO capacity searches whose probes are sweep points: resumable, parallel with other searches.

`search(task, folder, executor)` runs `sim.capacity.capacity_search` for one (system, parameters,
model, workload, seed) with a `serve` hook: each probed rate becomes a one-point sweep in
`folder/q<rate>/` (run_sweep skips it when finished), so a killed search resumes from its finished
probes. With `duration_s` set, a probe at rate r serves N = ceil(r x duration_s) requests (at most
`request_cap`; repro/tokenstack_plan.py says why a count and not a window); without it the task's `run`
keys apply to every probe as they are. The rule, the doubling and the geometric bisection are
capacity_search's own (sim/capacity.py). One seed per search: the reproduction searches each seed on
its own and puts the interval over seeds on the capacities (repro/stats.py), where capacity_search's
several-seed mode would give one capacity by its mean-attainment rule.

`search_all(tasks, executor)` runs many searches at once, each in a thread, all through the shared
executor (repro/pool.py). A probe whose point failed stops its search with that point's message.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable


@dataclass(frozen=True)
class CapacityTask:
    system: str  # preset name
    model: str
    workload: str
    seed: int
    params: dict = field(default_factory=dict)  # [params] of the spec (e.g. pim_device.pim_stacks)
    run: dict = field(default_factory=dict)  # RunSpec keys: max_requests, duration_s, slo_ttft_s, ...
    engine: dict = field(default_factory=dict)  # EngineOptions fields ([engine] of the spec)
    qps_start: float = 1.0
    tolerance: float = 0.1
    target: float = 0.9
    label: str = ""  # the system as the report names it (e.g. attacc-hbm4 p=4)
    duration_s: float | None = None  # a probe serves ceil(rate x duration_s) requests (max_requests)
    request_cap: int | None = None  # ... at most this many

    def run_at(self, qps: float) -> dict:
        """The RunSpec keys of the probe at `qps`."""
        from tokenstack_sim.repro.tokenstack_plan import requests_at

        if self.duration_s is None:
            return dict(self.run)
        return {**self.run, "max_requests": requests_at(qps, self.duration_s, self.request_cap or 10**9)}


def probe_folder(folder: Path, qps: float) -> Path:
    return Path(folder) / f"q{qps:.8g}"


def _spec_fields(task: CapacityTask, qps: float, name: str) -> dict:
    return dict(name=name, description=f"capacity search of {task.label or task.system} ({task.model}, "
                f"{task.workload}, seed {task.seed}): the probe at {qps:.8g} req/s", systems=[task.system],
                models=[task.model], workloads=[task.workload], qps=[qps], seeds=[task.seed],
                run=task.run_at(qps), engine=dict(task.engine), params=dict(task.params))


def search(task: CapacityTask, folder: str | Path, executor, *,
           progress: Callable[[str], None] | None = None):
    """capacity_search for one task, its probes run as sweep points in `folder` (module docstring)."""
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.config.schema import build
    from tokenstack_sim.repro.sweep_io import records, write_spec
    from tokenstack_sim.sim.capacity import capacity_search
    from tokenstack_sim.sim.engine import RunSpec, prepare
    from tokenstack_sim.sim.step_cost import EngineOptions
    from tokenstack_sim.sweep.overrides import system_overrides
    from tokenstack_sim.sweep.runner import run_sweep

    folder = Path(folder)
    name = folder.name

    def serve(qps: float, seeds: list) -> list:
        sub = probe_folder(folder, qps)
        spec = write_spec(sub / "spec.toml", **_spec_fields(task, qps, f"{name}-{sub.name}"))
        out = run_sweep(spec, sub, executor=executor, resume=True, characterize_workers=1)
        if out.errors:
            raise RuntimeError(f"{sub}: point {out.errors[0][0]} failed: {out.errors[0][1]}")
        recs = [r for r in records(sub) if r["params"]["qps"] == qps and r["params"]["seed"] in seeds]
        by_seed = {r["params"]["seed"]: r for r in recs}
        return [SimpleNamespace(params={"qps": qps, "seed": s}, status=by_seed[s]["status"],
                                summary=by_seed[s]["summary"] or {"slo_attainment": math.nan}) for s in seeds]

    system = load_config(task.system, system_overrides(task.system, task.params), kind="system")
    spec = RunSpec(task.workload, qps=task.qps_start, seed=task.seed, **task.run_at(task.qps_start))
    prep = prepare(system, task.model, options=build(EngineOptions, dict(task.engine), where="engine"),
                   scheduler=spec.scheduler, kv_blocks=spec.kv_blocks, kv=spec.kv, bind=False)
    say = (lambda m: progress(f"{name}: {m}")) if progress else None
    return capacity_search(prep, spec, qps_start=task.qps_start, tolerance=task.tolerance, target=task.target,
                           seeds=1, progress=say, serve=serve)


def search_all(tasks: dict, executor, *, progress: Callable[[str], None] | None = None) -> dict:
    """tasks: folder -> CapacityTask. Returns folder -> CapacityResult, or the exception that stopped it."""
    if not tasks:
        return {}
    out = {}
    with cf.ThreadPoolExecutor(max_workers=len(tasks)) as threads:
        futs = {threads.submit(search, t, f, executor, progress=progress): f for f, t in tasks.items()}
        for fut in cf.as_completed(futs):
            try:
                out[futs[fut]] = fut.result()
            except Exception as exc:
                out[futs[fut]] = exc
    return out
