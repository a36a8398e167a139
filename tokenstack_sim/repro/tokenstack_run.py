"""Runs a TokenStack reproduction plan (repro/tokenstack_plan.py) and gathers what the report needs.

Order: (1) every grid, AttAcc-split and ablation sweep at once through one shared executor
(repro/pool.py), resumable: finished points are skipped; (2) AttAcc's best split per (model, workload)
from its grid (repro/stats.py `best_split` on goodput = output tok/s x SLO attainment, geometric mean
over the rates and seeds; ties within 0.5% go to the lower TPOT p50); (3) per seed, SLO-capacity
searches of TokenStack and of AttAcc at that split, all at once (repro/sweep_capacity.py), starting at
each workload's own rate. `gather(...)` returns plain data: the records keyed by system label, model,
workload, rate multiple and seed, the chosen splits, and the capacity results.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tokenstack_sim.repro import tokenstack_plan as tp


@dataclass
class Gathered:
    plan: object
    root: Path
    runs: dict = field(default_factory=dict)  # (system label, model, workload, multiple, seed) -> record
    splits: dict = field(default_factory=dict)  # (model, workload) -> best split (or None)
    split_scores: dict = field(default_factory=dict)  # (model, workload) -> {split: (goodput, tpot)}
    ablations: dict = field(default_factory=dict)  # (knob, value, seed) -> record
    capacity: dict = field(default_factory=dict)  # (system label, model, workload, seed) -> CapacityResult | exc
    errors: list = field(default_factory=list)  # messages of failed points or sweeps
    wall_s: dict = field(default_factory=dict)  # phase -> seconds
    native: dict = field(default_factory=dict)  # workload -> its own rate (req/s)
    compute_s: dict = field(default_factory=dict)  # phase -> sum of its points' run times (finished earlier too)


def attacc_label(split) -> str:
    return f"{tp.ATTACC} p={split}"


def _index(gathered: Gathered) -> None:
    """Fill runs and ablations from the sweep folders' index records."""
    from tokenstack_sim.repro.sweep_io import records

    plan, root = gathered.plan, gathered.root
    for w in plan.workloads:
        for x in plan.multiples:
            for folder, attacc in ((tp.grid_folder(root, w, x), False), (tp.attacc_folder(root, w, x), True)):
                for r in records(folder):
                    p = r["params"]
                    label = attacc_label(p["params"][tp.SPLIT_PARAM]) if attacc else p["system"]
                    gathered.runs[(label, p["model"], w, x, p["seed"])] = r
                    if r["status"] == "error":
                        gathered.errors.append(f"{folder.name} {r['id']}: {r['error']}")
    for knob, (table, key, _) in tp._ablation_dims(plan.ablation).items():
        for r in records(tp.ablation_folder(root, knob)):
            gathered.ablations[(knob, r["params"][table][key], r["params"]["seed"])] = r
    gathered.compute_s["grids"] = sum(r.get("wall_s") or 0.0 for r in gathered.runs.values())
    gathered.compute_s["ablations"] = sum(r.get("wall_s") or 0.0 for r in gathered.ablations.values())


def capacity_compute_s(root: Path) -> float:
    """Sum of the run times of every capacity probe point under root/capacity."""
    from tokenstack_sim.repro.sweep_io import records

    return sum(r.get("wall_s") or 0.0 for f in sorted((Path(root) / "capacity").glob("*/q*"))
               for r in records(f))


def goodput(summary: dict) -> float:
    """Output tokens per second of the requests that met the SLO, approximated as throughput x attainment."""
    t, a = summary.get("output_tokens_per_s"), summary.get("slo_attainment")
    if t is None or a is None or not (math.isfinite(t) and math.isfinite(a)):
        return float("nan")
    return t * a


def choose_splits(gathered: Gathered) -> None:
    from tokenstack_sim.repro.stats import best_split, geomean

    plan = gathered.plan
    for m in plan.models:
        for w in plan.workloads:
            scores = {}
            for k in plan.splits:
                recs = [gathered.runs.get((attacc_label(k), m, w, x, s)) for x in plan.multiples
                        for s in range(plan.seeds)]
                ok = [r["summary"] for r in recs if r is not None and r["status"] == "ok"]
                if len(ok) == len(recs):
                    tpots = [s["tpot_s_p50"] for s in ok if math.isfinite(s.get("tpot_s_p50", math.nan))]
                    scores[k] = (geomean(goodput(s) for s in ok), sum(tpots) / len(tpots) if tpots else math.nan)
            gathered.split_scores[(m, w)] = scores
            gathered.splits[(m, w)] = best_split(scores)


def capacity_tasks(gathered: Gathered) -> dict:
    """folder -> CapacityTask for TokenStack and AttAcc's best split, per (model, workload, seed)."""
    from tokenstack_sim.repro.sweep_capacity import CapacityTask

    plan, root = gathered.plan, gathered.root
    out = {}
    for m in plan.models:
        for w in plan.workloads:
            split = gathered.splits.get((m, w))
            systems = [(tp.TOKENSTACK, {}, tp.TOKENSTACK, "ts")]
            if split is not None:
                systems.append((tp.ATTACC, {tp.SPLIT_PARAM: split}, attacc_label(split), f"attacc-p{split}"))
            for s in range(plan.seeds):
                for system, params, label, short in systems:
                    folder = root / "capacity" / f"{short}--{m}--{w}--s{s}"
                    out[folder] = CapacityTask(system, m, w, s, params=params, run=dict(tp.SLO),
                                               duration_s=plan.capacity_duration_s,
                                               request_cap=plan.capacity_request_cap,
                                               qps_start=tp.native_rate(w), tolerance=plan.capacity_tolerance,
                                               label=label)
    return out


def run_plan(plan, root: str | Path, executor, *, workers: int | None = None,
             progress: Callable[[str], None] | None = None, note: Callable[[str], None] | None = None) -> Gathered:
    """The three phases (module docstring); returns what they gathered."""
    from tokenstack_sim.repro.pool import characterize_all, run_sweeps
    from tokenstack_sim.repro.sweep_capacity import search_all

    tp.check(plan)
    root = Path(root)
    g = Gathered(plan, root, native={w: tp.native_rate(w) for w in plan.workloads})
    t0 = time.perf_counter()
    tasks = tp.specs(plan, root)
    characterize_all([s for s, _ in tasks], workers=workers, note=note)
    for folder, out in run_sweeps(tasks, executor, progress=progress, note=note).items():
        if isinstance(out, Exception):
            g.errors.append(f"{folder.name}: {type(out).__name__}: {out}")
    g.wall_s["grids"] = time.perf_counter() - t0
    _index(g)
    choose_splits(g)
    t1 = time.perf_counter()
    ctasks = capacity_tasks(g)
    results = search_all(ctasks, executor, progress=progress)
    for folder, task in ctasks.items():
        res = results[folder]
        g.capacity[(task.label, task.model, task.workload, task.seed)] = res
        if isinstance(res, Exception):
            g.errors.append(f"capacity {folder.name}: {type(res).__name__}: {res}")
    g.wall_s["capacity"] = time.perf_counter() - t1
    g.compute_s["capacity"] = capacity_compute_s(root)
    return g
