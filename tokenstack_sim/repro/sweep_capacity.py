"""SLO capacity searches whose probes are sweep points: resumable, parallel with other searches.

`search(task, folder, executor)` runs `sim.capacity.capacity_search` for one (system, parameters,
model, workload, seed) with a `serve` hook: each probed rate becomes a point of a one-folder sweep
(`folder/spec.toml` lists every rate probed so far; run_sweep skips the finished ones), so a killed
search resumes from its finished probes and `tokenstack report folder` shows them. The rule, the
doubling and the geometric bisection are capacity_search's own (sim/capacity.py). One seed per search:
the reproduction searches each seed on its own and puts the interval over seeds on the capacities
(repro/stats.py), where capacity_search's several-seed mode would give one capacity per rate rule.

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


def _spec_fields(task: CapacityTask, rates: list[float], name: str) -> dict:
    return dict(name=name, description=f"capacity search of {task.label or task.system} ({task.model}, "
                f"{task.workload}, seed {task.seed}): every probed rate", systems=[task.system],
                models=[task.model], workloads=[task.workload], qps=sorted(rates), seeds=[task.seed],
                run=dict(task.run), engine=dict(task.engine), params=dict(task.params))


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
    rates: list[float] = []
    name = folder.name

    def serve(qps: float, seeds: list) -> list:
        if qps not in rates:
            rates.append(qps)
        spec = write_spec(folder / "spec.toml", **_spec_fields(task, rates, name))
        out = run_sweep(spec, folder, executor=executor, resume=True, characterize_workers=1)
        if out.errors:
            raise RuntimeError(f"{folder}: point {out.errors[0][0]} failed: {out.errors[0][1]}")
        recs = [r for r in records(folder) if r["params"]["qps"] == qps and r["params"]["seed"] in seeds]
        by_seed = {r["params"]["seed"]: r for r in recs}
        return [SimpleNamespace(params={"qps": qps, "seed": s}, status=by_seed[s]["status"],
                                summary=by_seed[s]["summary"] or {"slo_attainment": math.nan}) for s in seeds]

    system = load_config(task.system, system_overrides(task.system, task.params), kind="system")
    run = dict(task.run)
    spec = RunSpec(task.workload, qps=task.qps_start, seed=task.seed, **run)
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
