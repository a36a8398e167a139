"""The points of a sweep: one serving run each, named by a stable hash of what defines it.

`expand(spec)` crosses systems x models x workloads x design points (sweep/sampling.py) x seeds, in that
order (seeds innermost), into `Point`s. A point's `params` is plain JSON data:

    {"system": ..., "model": ..., "workload": ...,   # as written in the spec
     "seed": int, "qps": float,
     "run": {fixed RunSpec fields the spec gives: duration_s, max_requests, slo_ttft_s, ...},
     "engine": {EngineOptions field: value},          # only the fields the spec names
     "scheduler": {SchedulerParams field: value},     # idem
     "kv": {KvPolicy field: value},                   # idem
     "params": {system-config path: value}}           # idem

Its id is the first 16 hex digits of the SHA-256 of that JSON with sorted keys: the same parameters give
the same id in any spec, order or machine, so a point's file is found again on resume and a spec that
grows reuses the points it shares with the old one. Defaults left unnamed are not part of the id (a
new engine option with a default does not rename old points); neither is the content of a preset named
by its name (edit a preset, then sweep into a new folder).

`job(spec, point)` turns a point into the inputs of one run (`PointJob`: the system to load with its
`--set` overrides, the model, the `RunSpec`, the `EngineOptions`), names resolved against the spec's
folder. `check_points` loads every distinct (system, parameters) combination once, so a combination
the config loader refuses (say 13 PIM dies in a 12-die stack) is an `InputError` naming the spec before
anything runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from tokenstack_sim.config.schema import build
from tokenstack_sim.errors import InputError
from tokenstack_sim.sweep.sampling import design
from tokenstack_sim.sweep.spec import SweepSpec, quoted

ID_HEX_DIGITS = 16


@dataclass(frozen=True)
class Point:
    id: str
    params: dict = field(compare=False)


@dataclass(frozen=True)
class PointJob:
    """Everything a worker needs to run one point (picklable; no resolved config objects)."""
    point_id: str
    system: str  # preset name or absolute path
    overrides: tuple[str, ...]  # --set strings for the system (sweep/overrides.py)
    model: str
    spec: object  # sim.engine.RunSpec
    options: object  # sim.step_cost.EngineOptions
    cache_entries: tuple[tuple[str, str], ...] = ()  # (file name, JSON text) of characterized costs it reads


def point_id(params: dict) -> str:
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:ID_HEX_DIGITS]


def _section(d: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}


def expand(spec: SweepSpec) -> list[Point]:
    """Every point of the spec, in run order (module docstring)."""
    designs = design(spec.dims, spec.method, spec.points, spec.sampling_seed, spec.cross)
    out, seen = [], set()
    for system in spec.systems:
        for model in spec.models:
            for workload in spec.workloads:
                for d in designs:
                    for seed in spec.seeds:
                        params = {"system": system, "model": model, "workload": workload, "seed": seed,
                                  "qps": float(d["qps"]), "run": dict(spec.run),
                                  "engine": _section(d, "engine."), "scheduler": _section(d, "scheduler."),
                                  "kv": _section(d, "kv."), "params": _section(d, "params.")}
                        pid = point_id(params)
                        if pid not in seen:  # random draws over short lists can repeat a point
                            seen.add(pid)
                            out.append(Point(pid, params))
    return out


def job(spec: SweepSpec, point: Point) -> PointJob:
    from tokenstack_sim.sim.engine import RunSpec
    from tokenstack_sim.sim.step_cost import EngineOptions
    from tokenstack_sim.sweep.overrides import system_overrides

    p = point.params
    system = spec.resolve(p["system"])
    run_spec = RunSpec(workload=spec.resolve(p["workload"]), qps=p["qps"], seed=p["seed"],
                       scheduler=dict(p["scheduler"]), kv=dict(p["kv"]), **p["run"])
    return PointJob(point_id=point.id, system=system, overrides=tuple(system_overrides(system, p["params"])),
                    model=spec.resolve(p["model"]), spec=run_spec,
                    options=build(EngineOptions, dict(p["engine"]), where="engine", source=str(spec.source)))


def check_points(spec: SweepSpec, points: list[Point]) -> None:
    """Load each distinct (system, parameter values) once; a refused combination names the spec."""
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.sweep.overrides import system_overrides

    seen = set()
    for pt in points:
        key = json.dumps([pt.params["system"], pt.params["params"]], sort_keys=True)
        if key in seen or not pt.params["params"]:
            continue
        seen.add(key)
        system = spec.resolve(pt.params["system"])
        try:
            load_config(system, system_overrides(system, pt.params["params"]), kind="system")
        except InputError as exc:
            values = ", ".join(f"{quoted(k)} = {v!r}" for k, v in pt.params["params"].items())
            raise InputError(f"the combination {values} on system {pt.params['system']!r} is refused: {exc}",
                             source=spec.source, where="params") from None
