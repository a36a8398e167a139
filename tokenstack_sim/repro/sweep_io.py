"""Sweep specs written from Python values, and a sweep folder's point records read back.

`spec_text(...)` writes the TOML that `sweep/spec.py` reads (schema 1); `write_spec(path, ...)` writes it
atomically and returns the checked `SweepSpec`, so a reproduction's sweeps are ordinary sweep folders:
`tokenstack sweep DIR/spec.toml` reruns one and `tokenstack report DIR` plots it. `records(folder)` gives
the index's records (params, status, summary, energy per component; sweep/index.py) without opening the
HDF5 files. Leaves out: random and Latin-hypercube sampling (reproductions use grids).
"""

from __future__ import annotations

from pathlib import Path

from tokenstack_sim.sweep.overrides import toml_literal
from tokenstack_sim.sweep.spec import quoted


def spec_text(*, name: str, description: str, systems, models, workloads, qps, seeds, run: dict,
              engine: dict | None = None, scheduler: dict | None = None, kv: dict | None = None,
              params: dict | None = None) -> str:
    """A grid sweep spec. `run`: top-level RunSpec keys (max_requests, duration_s, slo_ttft_s, ...);
    engine / scheduler / kv / params: key -> a value or a list of values (a design dimension)."""
    lines = ["# Written by tokenstack_sim/repro (a reproduction's sweep); rerun with `tokenstack sweep`.",
             "schema_version = 1",
             f"name = {toml_literal(name)}",
             f"description = {toml_literal(description)}",
             f"systems = {toml_literal(list(systems))}",
             f"models = {toml_literal(list(models))}",
             f"workloads = {toml_literal(list(workloads))}",
             f"qps = {toml_literal([float(q) for q in qps])}",
             f"seeds = {toml_literal(list(seeds))}"]
    lines += [f"{k} = {toml_literal(v)}" for k, v in run.items()]
    for table, body in (("engine", engine), ("scheduler", scheduler), ("kv", kv), ("params", params)):
        if body:
            lines += ["", f"[{table}]"] + [f"{quoted(k)} = {toml_literal(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def write_spec(path: str | Path, **fields):
    """Write `spec_text(**fields)` to `path` (atomically, only when it changed) and load it back checked."""
    from tokenstack_sim.atomic_io import atomic_write
    from tokenstack_sim.sweep.spec import load_sweep_spec

    path = Path(path)
    text = spec_text(**fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        with atomic_write(path, "w", suffix=".toml.tmp", encoding="utf-8") as fh:
            fh.write(text)
    return load_sweep_spec(path)


def records(folder: str | Path) -> list[dict]:
    """The point records of a sweep folder's index (sweep/index.py); [] when it has none yet."""
    from tokenstack_sim.errors import InputError
    from tokenstack_sim.sweep.index import read_index

    try:
        return read_index(folder)["points"]
    except InputError:
        return []
