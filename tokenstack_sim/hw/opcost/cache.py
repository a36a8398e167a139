"""On-disk cache of characterized ops, one JSON file per op, shared safely by sweep workers.

The key of an op is a hash of the config fields that op reads (the DRAM device and controller, and of
the stack only the sections that can change its timing or its counted actions), the source of the
kernel and stack-model files, and the numba version. A file is found by name under its key, so a stale
entry is never read: it is simply a different key. Writes go through `atomic_write`; a per-op lock file
(`fcntl.flock`) makes a second worker wait for the first instead of characterizing the same op twice.

Location: `$TOKENSTACK_CACHE` if set, else `~/.cache/tokenstack_sim/opcost`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.config.schema import to_dict

_PKG = Path(__file__).resolve().parents[2]
# Files whose code decides a characterized cost.
MODEL_SOURCES = ("hw/dram/kernels.py", "hw/dram/run.py", "hw/stack/pim.py", "hw/stack/dma.py",
                 "hw/stack/run.py", "hw/stack/layout.py", "hw/stack/quantize.py", "hw/stack/translation.py",
                 "hw/stack/energy.py", "hw/opcost/simulate.py", "hw/opcost/table.py", "hw/opcost/characterize.py")

# Stack sections each op kind cannot be affected by (timing or counted actions).
IRRELEVANT = {
    "stream": ("pim", "pim_energy", "basedie.tsv_width_mult", "basedie.tlb_entries", "basedie.tlb_page_bytes",
               "basedie.tlb_hit_cycles", "basedie.tlb_miss_cycles", "basedie.quant_units_per_channel",
               "basedie.quant_lanes", "basedie.quant_clock_ghz", "basedie.quant_pipeline_cycles",
               "basedie.dma_buffer_latency_cycles", "basedie.dma_queue_share", "basedie.pim_first",
               "basedie.dma_GBps"),
    "dma": ("pim", "pim_energy", "basedie.pim_first"),
    "attention": ("basedie.quant_units_per_channel", "basedie.quant_lanes", "basedie.quant_clock_ghz",
                  "basedie.quant_pipeline_cycles", "basedie.dma_buffer_latency_cycles", "basedie.dma_queue_share",
                  "basedie.dma_GBps"),
}
NEVER_RELEVANT = ("name", "description", "source", "base", "area")


def cache_dir() -> Path:
    env = os.environ.get("TOKENSTACK_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tokenstack_sim" / "opcost"


def source_hash(sources: tuple[str, ...] = MODEL_SOURCES) -> str:
    h = hashlib.sha256()
    for rel in sources:
        h.update(rel.encode())
        h.update((_PKG / rel).read_bytes())
    return h.hexdigest()


def relevant_fields(stack, kind: str) -> dict:
    data = to_dict(stack.config)
    for key in NEVER_RELEVANT + IRRELEVANT[kind]:
        head, _, leaf = key.partition(".")
        if leaf:
            data.get(head, {}).pop(leaf, None)
        else:
            data.pop(head, None)
    data.pop("dram", None)  # the resolved device below replaces the preset's name
    dram = to_dict(stack.dram.config)
    for key in ("name", "description", "source", "base"):
        dram.pop(key, None)
    data["device"] = dram
    data["device_constraints"] = [c.__dict__ for c in stack.dram.constraints]
    data["dies"] = [to_dict(d) for d in stack.dies]
    if kind != "attention" and stack.config.power.budget_w <= 0:
        data.pop("pim_energy", None)
    return data


def op_key(stack, op, grid: dict, *, sources_hash: str | None = None) -> str:
    import numba

    payload = {"op": op.__dict__, "fields": relevant_fields(stack, op.kind), "grid": grid,
               "sources": sources_hash or source_hash(), "numba": numba.__version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def entry_path(stack, op, key: str) -> Path:
    return cache_dir() / f"{stack.config.name}--{op.op_id}--{key[:20]}.json"


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_entry(path: Path) -> dict | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: characterized again and replaced atomically


def write_entry(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as fh:
        json.dump(data, fh)
