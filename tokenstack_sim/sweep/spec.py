"""The sweep spec: a TOML file that says which runs a design-space sweep makes, read and checked whole.

```toml
schema_version = 1
name = "example"                       # optional; also description
systems = ["tokenstack-hbm4", "gpu-hbm4"]   # system presets or TOML paths (relative to this file)
models = ["llama-3.1-8b"]              # model presets or TOML paths
workloads = ["azure-conv-like"]        # built-in workload specs, spec TOMLs or trace files
qps = [2.0, 4.0]                       # offered request rates (req/s)
seeds = [0, 1]                         # or a count: seeds = 2 means 0, 1
duration_s = 10.0                      # simulated seconds of arrivals (or max_requests, or both)
# optional, as the run command's options: max_requests, warmup_frac, drain_frac, slo_ttft_s,
# slo_tpot_s (seconds), kv_blocks

[engine]       # EngineOptions fields (sim/step_cost.py): memory_timing, overlap, pim_batching, ...
memory_timing = "roofline"
[scheduler]    # SchedulerParams fields (runtime/params.py) except num_kv_blocks (use kv_blocks)
max_num_seqs = [64, 256]
[kv]           # KvPolicy fields (kv/policy.py): placement, eviction, demote_format, replication_budget, ...
eviction = ["workload-aware", "lru"]
[params]       # system-config paths, as `--set` takes them (see sweep/overrides.py for gpu_stack.* etc.)
"memory_utilization" = [0.8, 0.9]
"gpu_stack.layout.pim_dies" = {min = 2, max = 8}   # a range: random / lhs sampling only
[sampling]
method = "grid"        # grid | random | lhs
points = 16            # random / lhs: design points drawn
seed = 0               # random / lhs: the draw's seed
cross = ["qps"]        # random / lhs: dimensions crossed with the drawn points instead of drawn
```

Dimensions. `systems`, `models`, `workloads` and `seeds` are always crossed (every combination). The
design dimensions are `qps`, each `[engine]`, `[scheduler]`, `[kv]` and `[params]` key, named `qps`,
`engine.<field>`, `scheduler.<field>`, `kv.<field>` and `params.<path>`. A design value is a scalar (fixed), a list
(the values it takes) or, for random and Latin-hypercube sampling, a numeric range `{min, max}` with
optional `log = true` (integers when min and max are both integers). A list-valued parameter that is
fixed is written as a list of one list. `sampling.method = "grid"` takes every combination of the
design lists; "random" and "lhs" draw `points` design points (sweep/sampling.py) and cross them with the
dimensions named in `cross`.

Checks, all before anything runs, each an `InputError` naming this file and the key (`systems[1]`,
`scheduler.max_num_seqs[0]`, `params."gpu_stack.layout.pim_dies".max`): unknown keys, wrong types,
every system, model and workload found and valid, every engine, scheduler and kv value accepted by
`EngineOptions` / `SchedulerParams` / `KvPolicy`, and every `[params]` value (and range end) accepted by the config
loader on every system. Combinations of parameters are checked when the points are made
(sweep/points.py).

Leaves out: per-system parameter sets (a parameter applies to every listed system; sweep a
parameter that only some systems have in a spec of its own), conditional dimensions, units in strings
("100ms"): times are numbers of seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tokenstack_sim.config.loader import list_presets, load_config, read_toml
from tokenstack_sim.config.schema import build
from tokenstack_sim.errors import InputError

SCHEMA_VERSION = 1
METHODS = ("grid", "random", "lhs")
# Fixed RunSpec fields a spec may set at its top level (the names of sim/engine.py's RunSpec).
RUN_KEYS = ("duration_s", "max_requests", "warmup_frac", "drain_frac", "slo_ttft_s", "slo_tpot_s", "kv_blocks")
TOP_KEYS = ("schema_version", "name", "description", "systems", "models", "workloads", "qps", "seeds", *RUN_KEYS,
            "engine", "scheduler", "kv", "params", "sampling")
SAMPLING_KEYS = ("method", "points", "seed", "cross")


@dataclass(frozen=True)
class Range:
    """A numeric interval to draw from: uniform, or log-uniform with `log`; integers when both ends are."""
    min: float
    max: float
    log: bool = False

    @property
    def integer(self) -> bool:
        return isinstance(self.min, int) and isinstance(self.max, int)


@dataclass(frozen=True)
class Dim:
    """One design dimension: its name (`qps`, `engine.overlap`, `params.gpu_stack.layout.pim_dies`) and
    either the values it takes or a range."""
    name: str
    values: tuple = ()
    range: Range | None = None

    @property
    def swept(self) -> bool:
        return self.range is not None or len(self.values) > 1


@dataclass(frozen=True)
class SweepSpec:
    source: Path
    name: str
    description: str
    systems: tuple[str, ...]  # as written (a point's identity); `resolve` gives what to load
    models: tuple[str, ...]
    workloads: tuple[str, ...]
    seeds: tuple[int, ...]
    run: dict  # fixed RunSpec fields (RUN_KEYS given in the file)
    dims: tuple[Dim, ...]  # qps, engine.*, scheduler.*, kv.*, params.* in file order
    method: str = "grid"
    points: int | None = None
    sampling_seed: int = 0
    cross: tuple[str, ...] = ()

    def resolve(self, text: str) -> str:
        """A preset or built-in name as it is; a relative path relative to the spec's folder."""
        return resolve_name(text, self.source)

    def dim(self, name: str) -> Dim:
        return next(d for d in self.dims if d.name == name)


def resolve_name(text: str, source: Path) -> str:
    from tokenstack_sim.workload.agent_workloads import AGENT_WORKLOADS
    from tokenstack_sim.workload.source import builtin_workloads

    if text in list_presets() or text in builtin_workloads() or text in AGENT_WORKLOADS:
        return text
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (source.parent / p))


def quoted(key: str) -> str:
    """A TOML key as it would be written: dotted keys in quotes."""
    return f'"{key}"' if ("." in key or " " in key) else key


def _describe(value) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _plain(value) -> bool:
    """A value a point's JSON parameters and a --set string can both carry."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, (str, int, float, bool))


class _Reader:
    """Checks one spec file, every error located in it."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, message: str) -> InputError:
        return InputError(message, source=self.path, where=where)

    def strings(self, raw: dict, key: str, what: str) -> tuple[str, ...]:
        if key not in raw:
            raise self.fail(key, f"required key is missing (a list of {what})")
        v = raw[key]
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v:
            raise self.fail(key, f"expected a non-empty list of {what}, got {_describe(v)}")
        for i, s in enumerate(v):
            if not isinstance(s, str) or not s:
                raise self.fail(f"{key}[{i}]", f"expected a name or path, got {_describe(s)}")
        dupes = sorted({s for s in v if v.count(s) > 1})
        if dupes:
            raise self.fail(key, f"listed twice: {', '.join(dupes)}")
        return tuple(v)

    def configs(self, raw: dict, key: str, kind: str) -> tuple[str, ...]:
        names = self.strings(raw, key, f"{kind} presets or TOML files")
        for i, name in enumerate(names):
            try:
                load_config(resolve_name(name, self.path), kind=kind)
            except InputError as exc:
                raise self.fail(f"{key}[{i}]", str(exc)) from None
        return names

    def workloads(self, raw: dict) -> tuple[str, ...]:
        from tokenstack_sim.workload.agent_workloads import AGENT_WORKLOADS
        from tokenstack_sim.workload.source import builtin_workloads

        names = self.strings(raw, "workloads", "workload names or files")
        for i, name in enumerate(names):
            if name not in builtin_workloads() and name not in AGENT_WORKLOADS \
                    and not Path(resolve_name(name, self.path)).is_file():
                raise self.fail(f"workloads[{i}]", f"unknown workload {name!r}: not a built-in "
                                f"({', '.join(builtin_workloads())}) and no such file (relative to the spec's folder)")
        return names

    def seeds(self, raw: dict) -> tuple[int, ...]:
        v = raw.get("seeds", [0])
        if isinstance(v, int) and not isinstance(v, bool):
            if v < 1:
                raise self.fail("seeds", f"expected a count >= 1 or a list of seeds, got {v}")
            return tuple(range(v))
        if not isinstance(v, list) or not v:
            raise self.fail("seeds", f"expected a count or a non-empty list of integers, got {_describe(v)}")
        for i, s in enumerate(v):
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:
                raise self.fail(f"seeds[{i}]", f"expected an integer >= 0, got {_describe(s)}")
        if len(set(v)) != len(v):
            raise self.fail("seeds", "a seed is listed twice")
        return tuple(v)

    def run_fields(self, raw: dict) -> dict:
        from tokenstack_sim.sim.engine import RunSpec

        run = {k: raw[k] for k in RUN_KEYS if k in raw}
        for k, v in run.items():
            ints = k in ("max_requests", "kv_blocks")
            ok = isinstance(v, int) if ints else isinstance(v, (int, float))
            if not ok or isinstance(v, bool):
                raise self.fail(k, f"expected {'an integer' if ints else 'a number'}, got {_describe(v)}")
            if not ints:
                run[k] = float(v)
        if "duration_s" not in run and "max_requests" not in run:
            raise self.fail("duration_s", "required key is missing (simulated seconds of arrivals per run; "
                                          "or give max_requests)")
        try:
            RunSpec(workload="-", **run)
        except InputError as exc:
            raise self.fail(exc.where or "", exc.message) from None
        return run

    def value_domain(self, value, where: str, method: str) -> tuple[tuple, Range | None]:
        """(values, range) of one design key; `check(value, where)` is done by the caller."""
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"min", "max", "log"})
            if unknown:
                raise self.fail(f"{where}.{unknown[0]}", "unknown key; a range has min, max and optional log")
            for k in ("min", "max"):
                if k not in value:
                    raise self.fail(f"{where}.{k}", "required key is missing (a range is {min, max})")
                x = value[k]
                if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
                    raise self.fail(f"{where}.{k}", f"expected a finite number, got {_describe(x)}")
            log = value.get("log", False)
            if not isinstance(log, bool):
                raise self.fail(f"{where}.log", f"expected true or false, got {_describe(log)}")
            if value["min"] > value["max"]:
                raise self.fail(where, f"min {value['min']} > max {value['max']}")
            if log and value["min"] <= 0:
                raise self.fail(f"{where}.min", f"a log range needs min > 0, got {value['min']}")
            if method == "grid":
                raise self.fail(where, 'a {min, max} range needs sampling.method = "random" or "lhs"; '
                                       "a grid takes a list of values")
            return (), Range(value["min"], value["max"], log)
        if isinstance(value, list):
            if not value:
                raise self.fail(where, "expected at least one value, got an empty list")
            return tuple(value), None
        return (value,), None

    def dims(self, raw: dict, method: str, systems: tuple[str, ...]) -> tuple[Dim, ...]:
        out = []
        if "qps" not in raw:
            raise self.fail("qps", "required key is missing (offered request rates in req/s)")
        out.append(self.dim("qps", "qps", raw["qps"], method, self.check_qps))
        for table, check in (("engine", self.check_engine), ("scheduler", self.check_scheduler),
                             ("kv", self.check_kv), ("params", lambda v, w, key: self.check_param(v, w, key, systems))):
            t = raw.get(table, {})
            if not isinstance(t, dict):
                raise self.fail(table, f"expected a table, got {_describe(t)}")
            for key, value in t.items():
                where = f"{table}.{quoted(key)}"
                out.append(self.dim(f"{table}.{key}", where, value, method,
                                    lambda v, w, key=key, check=check: check(v, w, key)))
        return tuple(out)

    def dim(self, name: str, where: str, value, method: str, check) -> Dim:
        values, rng = self.value_domain(value, where, method)
        if rng is not None:
            check(rng.min, f"{where}.min")
            check(rng.max, f"{where}.max")
        multi = isinstance(value, list)
        for i, v in enumerate(values):
            check(v, f"{where}[{i}]" if multi else where)
        norm = tuple(float(v) if name == "qps" else v for v in values)
        return Dim(name, norm, rng)

    def check_qps(self, v, where: str) -> None:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (math.isfinite(v) and v > 0):
            raise self.fail(where, f"expected a rate > 0 req/s, got {_describe(v)}")

    def check_fields(self, cls, fixed: dict, v, where: str, key: str) -> None:
        """`cls` built from one key (and `fixed` required ones): any refusal is about that key."""
        try:
            build(cls, {**fixed, key: v})
        except InputError as exc:
            raise self.fail(where, exc.message) from None

    def check_engine(self, v, where: str, key: str) -> None:
        from tokenstack_sim.sim.step_cost import EngineOptions

        self.check_fields(EngineOptions, {}, v, where, key)

    def check_scheduler(self, v, where: str, key: str) -> None:
        from tokenstack_sim.runtime.params import SchedulerParams

        if key == "num_kv_blocks":
            raise self.fail(where, "set the KV pool with the top-level kv_blocks, not num_kv_blocks")
        self.check_fields(SchedulerParams, {"num_kv_blocks": 1}, v, where, key)

    def check_kv(self, v, where: str, key: str) -> None:
        from tokenstack_sim.kv.policy import KvPolicy

        self.check_fields(KvPolicy, {}, v, where, key)

    def check_param(self, v, where: str, key: str, systems: tuple[str, ...]) -> None:
        from tokenstack_sim.sweep.overrides import system_overrides

        if not key or any(not part for part in key.split(".")):
            raise self.fail(where, "expected a config path such as gpu_stack.layout.pim_dies")
        if not _plain(v):
            raise self.fail(where, f"expected a string, number, boolean or a list of them, got {_describe(v)}")
        for system in systems:
            try:
                load_config(resolve_name(system, self.path), system_overrides(resolve_name(system, self.path),
                                                                              {key: v}), kind="system")
            except InputError as exc:
                raise self.fail(where, f"on system {system!r}: {exc}") from None

    def sampling(self, raw: dict) -> tuple[str, int | None, int, tuple]:
        s = raw.get("sampling", {})
        if not isinstance(s, dict):
            raise self.fail("sampling", f"expected a table, got {_describe(s)}")
        unknown = sorted(set(s) - set(SAMPLING_KEYS))
        if unknown:
            raise self.fail(f"sampling.{unknown[0]}", f"unknown key; valid keys here: {', '.join(SAMPLING_KEYS)}")
        method = s.get("method", "grid")
        if method not in METHODS:
            raise self.fail("sampling.method", f"expected one of {', '.join(map(repr, METHODS))}, got {_describe(method)}")
        points = s.get("points")
        seed = s.get("seed", 0)
        cross = s.get("cross", [])
        if method == "grid":
            for k in ("points", "seed", "cross"):
                if k in s:
                    raise self.fail(f"sampling.{k}", 'applies to method = "random" or "lhs" only')
        else:
            if points is None:
                raise self.fail("sampling.points", f"required key is missing (design points drawn by {method})")
            if not isinstance(points, int) or isinstance(points, bool) or points < 1:
                raise self.fail("sampling.points", f"expected an integer >= 1, got {_describe(points)}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise self.fail("sampling.seed", f"expected an integer >= 0, got {_describe(seed)}")
        if not isinstance(cross, list) or not all(isinstance(c, str) for c in cross):
            raise self.fail("sampling.cross", f"expected a list of dimension names, got {_describe(cross)}")
        return method, points, seed, tuple(cross)


def load_sweep_spec(path: str | Path, *, extra_keys: tuple[str, ...] = ()) -> SweepSpec:
    """Read and check a sweep spec (module docstring); raises `InputError` naming the file and key.
    `extra_keys`: top-level tables another reader checks (`robustness`, robust/sweep.py), left alone."""
    path = Path(path)
    raw = read_toml(path)
    r = _Reader(path)
    unknown = [k for k in raw if k not in TOP_KEYS and k not in extra_keys]
    if unknown:
        raise r.fail(unknown[0], f"unknown key; valid keys here: {', '.join(TOP_KEYS + tuple(extra_keys))}")
    version = raw.get("schema_version")
    if version is None:
        raise r.fail("schema_version", f"required key is missing (this program reads schema_version = {SCHEMA_VERSION})")
    if version != SCHEMA_VERSION:
        raise r.fail("schema_version", f"unsupported schema version {_describe(version)}; this program reads {SCHEMA_VERSION}")
    for k in ("name", "description"):
        if not isinstance(raw.get(k, ""), str):
            raise r.fail(k, f"expected a string, got {_describe(raw[k])}")
    method, points, sampling_seed, cross = r.sampling(raw)
    systems = r.configs(raw, "systems", "system")
    models = r.configs(raw, "models", "model")
    workloads = r.workloads(raw)
    seeds = r.seeds(raw)
    run = r.run_fields(raw)
    dims = r.dims(raw, method, systems)
    names = [d.name for d in dims]
    for i, c in enumerate(cross):
        if c not in names:
            raise r.fail(f"sampling.cross[{i}]", f"unknown dimension {c!r}; dimensions: {', '.join(names)}")
        if next(d for d in dims if d.name == c).range is not None:
            raise r.fail(f"sampling.cross[{i}]", f"{c} is a range; a crossed dimension needs a list of values")
    return SweepSpec(source=path, name=raw.get("name") or path.stem, description=raw.get("description", ""),
                     systems=systems, models=models, workloads=workloads, seeds=seeds, run=run, dims=dims,
                     method=method, points=points, sampling_seed=sampling_seed, cross=cross)
