"""Where offloaded KV goes and how long moving it takes: transfer paths, FIFO channels, the offload store.

Paths (one GPU shard's blocks; every GPU of the tensor-parallel group moves its own shard over its own
path at the same time, so one shard's time is the transfer's time):
- ``host``: the system's host link (config/system.py ``host_link``: PCIe 5 x16 or NVLink-C2C), time =
  latency + bytes / bandwidth (hw/link.py); KV as written (FP16/BF16).
- ``capacity`` (TokenStack): the stack's capacity layers through the base-die DMA, quantized inline to the
  KV policy's ``demote_format`` on the way down and dequantized on the way up (hardware.md §5), timed by
  the characterized DMA op the step model binds (`StepModel.dma_op`), the shard's blocks spread evenly
  over its stacks, which work in parallel. Taken as an upper bound: every block is charged a full
  PIM-to-capacity move, also one that already sat in a capacity slot of the pool.
A path has two FIFO channels, one per direction (PCIe and NVLink are full duplex; the base die's DMA
engines serve reads and writes of different layers). Transfers run beside the engine's steps (copy
engines / the base die), so they delay only what waits for them; they are not charged in step time or
energy (left out: contention of these copies with the step's own memory traffic, and their energy).

The store (`KvStore`) is keyed by block hash (prefix-chained, so a block's hash names its whole prefix),
holds at most ``capacity_blocks``, evicts least recently used first, and knows when each block's copy
completes (a block is readable from the store only after its write landed).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.link import transfer_time_s

TARGETS = ("auto", "host", "capacity")


@dataclass
class TransferPath:
    name: str  # "host" | "capacity"
    time_s: Callable[[int], float]  # seconds to move n blocks of one shard one way
    stored_bytes_per_block: float  # bytes one block takes in the store (per shard)
    moved_bytes_per_block: float  # bytes one block moves over the path (per shard)
    gpus: int  # shards moving at once (bytes counters are for the whole system)


def host_path(system, block_bytes: float) -> TransferPath:
    link = system.host_link

    def t(n: int) -> float:
        return float(transfer_time_s(link, n * block_bytes)) if n > 0 else 0.0

    return TransferPath("host", t, block_bytes, block_bytes, system.gpus)


def capacity_path(step_model) -> TransferPath:
    """The base-die DMA of a TokenStack system (needs the step model's bound DMA costs)."""
    sm = step_model
    if not sm.migrates:
        raise InputError("offload to the capacity tier needs a system with PIM and capacity tiers in its stacks "
                         "and KV migration on (kv eviction other than none)", where="offload_target")
    down = sm._lookups.get(sm.dma_op(promote=False).op_id)
    up = sm._lookups.get(sm.dma_op(promote=True).op_id)
    if down is None or up is None:
        raise InputError("the base-die DMA costs are not bound; prepare the system with its op costs",
                         where="offload_target")
    per_stack = sm.block_bytes / max(sm.n_stacks, 1)

    def t(n: int, lk=down) -> float:
        return lk.scalar(n * per_stack)[0] * 1e-9 if n > 0 else 0.0

    path = TransferPath("capacity", t, sm.block_bytes * sm.capacity_ratio, sm.block_bytes * sm.capacity_ratio,
                        sm.system.gpus)
    path.time_up_s = lambda n, lk=up: lk.scalar(n * per_stack)[0] * 1e-9 if n > 0 else 0.0
    return path


def choose_path(target: str, system, step_model, block_bytes: float) -> TransferPath:
    """``auto``: the capacity tier where the stacks have one beside PIM (TokenStack), else the host."""
    if target not in TARGETS:
        raise InputError(f"expected one of {', '.join(TARGETS)}, got {target!r}", where="offload_target")
    if target == "capacity" or (target == "auto" and step_model is not None and step_model.migrates):
        return capacity_path(step_model)
    return host_path(system, block_bytes)


class Channels:
    """Two FIFO channels (down = to the store, up = back) over a path."""

    def __init__(self, path: TransferPath):
        self.path = path
        self.free_at = {"down": 0.0, "up": 0.0}
        self.busy_s = {"down": 0.0, "up": 0.0}

    def time_s(self, direction: str, n: int) -> float:
        if direction == "up" and hasattr(self.path, "time_up_s"):
            return self.path.time_up_s(n)
        return self.path.time_s(n)

    def schedule(self, direction: str, n: int, now: float) -> tuple[float, float]:
        """Queue n blocks on a direction at `now`: (start, end)."""
        start = max(now, self.free_at[direction])
        dt = self.time_s(direction, n)
        end = start + dt
        self.free_at[direction] = end
        self.busy_s[direction] += dt
        return start, end


class KvStore:
    """Offloaded blocks by hash, LRU, bounded (module docstring)."""

    def __init__(self, capacity_blocks: int):
        if capacity_blocks < 0:
            raise InputError(f"store capacity must be >= 0 blocks, got {capacity_blocks}", where="store_gib")
        self.capacity = int(capacity_blocks)
        self._ready: OrderedDict[int, float] = OrderedDict()  # hash -> time its copy lands
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._ready)

    def has(self, h: int, now: float = math.inf) -> bool:
        t = self._ready.get(h)
        return t is not None and t <= now

    def touch(self, h: int) -> None:
        if h in self._ready:
            self._ready.move_to_end(h)

    def missing(self, hashes) -> list[int]:
        """The hashes not stored (or on their way)."""
        return [h for h in hashes if h not in self._ready]

    def add(self, hashes, ready_s: float) -> None:
        for h in hashes:
            if h in self._ready:
                self._ready.move_to_end(h)
                continue
            if self.capacity == 0:
                return
            while len(self._ready) >= self.capacity:
                self._ready.popitem(last=False)
                self.evictions += 1
            self._ready[h] = ready_s

    def prefix(self, hashes, start: int, now: float) -> int:
        """How many of ``hashes[start:]`` in a row are readable from the store at `now`."""
        k = start
        while k < len(hashes) and self.has(hashes[k], now):
            k += 1
        return k - start
