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
engines serve reads and writes of different layers). Transfers run beside the engine's steps, on the
GPU's copy engines or the base die's DMA engines (an assumption: a separate engine that overlaps with
compute, as vLLM's KV connectors and LMCache use CUDA copy streams), so their time delays only the calls
that wait for them, not the steps. Their energy is charged (`TransferPath.actions`): ``host`` moves the
bytes over the host link (`host_link` component, the link's pJ/bit) and reads them from (offload) or
writes them into (upload) the GPU's stacks (`gpu_stacks`, the step model's streaming cost: characterized
or roofline, as the steps); ``capacity`` is the characterized DMA op's own actions (source and
destination dies, TSVs, the base die's quantizer), per stack, times the stacks that move at once. The
actions join the action vector of the step during or after which the transfer was queued
(`Channels.take`), so they appear in the run's per-component energy. Left out: the bandwidth these
copies take from the step's own memory traffic (no contention), the host DRAM's energy, the host link's
idle power.

Capacity-tier store (``capacity``): the offload store holds only what the capacity tier has free: its KV
bytes on that system (memory utilization x capacity - weights - activations there, `hw.system`) in
stored-format slots, less the slots `kv/tiered.py`'s pool owns there (its demotions use only those), so
the store and the demotions never count the same bytes (`capacity_store_blocks`).

The store (`KvStore`) is keyed by block hash (prefix-chained, so a block's hash names its whole prefix),
holds at most ``capacity_blocks``, evicts least recently used first, and knows when each block's copy
completes (a block is readable from the store only after its write landed).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.link import transfer_time_s
from tokenstack_sim.hw.stack.energy import ACTIONS as STACK_ACTIONS
from tokenstack_sim.hw.stack.energy import path_vector

TARGETS = ("auto", "host", "capacity")


@dataclass
class TransferPath:
    name: str  # "host" | "capacity"
    time_s: Callable[[int], float]  # seconds to move n blocks of one shard one way
    stored_bytes_per_block: float  # bytes one block takes in the store (per shard)
    moved_bytes_per_block: float  # bytes one block moves over the path (per shard)
    gpus: int  # shards moving at once (bytes counters are for the whole system)
    # actions(direction, n, vec): adds the whole system's actions of moving n blocks of every shard one way
    # ("down" = to the store, "up" = back) to a step action vector (sim/step_cost.py COMPONENTS / OFFSET)
    actions: Callable[[str, int, np.ndarray], None] | None = None
    max_store_blocks: int | None = None  # blocks the medium has room for (None: the store size decides)
    system: object = None  # the ResolvedSystem (energy tables of the charged actions)


def _offsets():
    from tokenstack_sim.sim.step_cost import OFFSET, action_slot

    return OFFSET["gpu_stacks"], action_slot("host_link", "link_bytes")


def host_path(system, block_bytes: float, step_model=None) -> TransferPath:
    """The host link. Actions: the bytes over the link, and their read from (offload) or write into
    (upload) the GPU's stacks as the step model streams them (path vectors without a step model)."""
    link = system.host_link
    o, slot = _offsets()
    g = system.gpus
    sm = step_model
    tier = None
    if sm is not None:
        tier = "pim" if "stream-pim" in sm._lookups else sm.weight_tier  # where most KV lives

    def t(n: int) -> float:
        return float(transfer_time_s(link, n * block_bytes)) if n > 0 else 0.0

    def actions(direction: str, n: int, vec: np.ndarray) -> None:
        if n <= 0:
            return
        b = n * block_bytes
        vec[slot] += b * g
        if sm is not None:
            sm._stream1(b, tier, vec, 1.0, write=direction == "up")
        else:
            vec[o:o + len(STACK_ACTIONS)] += (b * 8 * g) * path_vector("gpu_write" if direction == "up" else "gpu_read")

    return TransferPath("host", t, block_bytes, block_bytes, g, actions, None, system)


def capacity_store_blocks(prep, pool_capacity_slots: int) -> int:
    """Stored-format blocks the capacity tier has free beside the pool (module docstring): the tier's KV
    bytes per GPU shard / a stored block, less the pool's `pool_capacity_slots` there."""
    from tokenstack_sim.runtime.params import SchedulerParams
    from tokenstack_sim.sim.engine import kv_tiers

    sm = prep.step_model
    probe = SchedulerParams(num_kv_blocks=1, **prep.scheduler)
    tiers, _ = kv_tiers(prep.system, prep.model.config, sm.im, probe, None)  # the tiers without an override
    cap_fp16_blocks = sum(t.blocks for t in tiers if t.name == "gpu_capacity")
    return max(0, int(cap_fp16_blocks / sm.capacity_ratio) - int(pool_capacity_slots))


def capacity_path(step_model, max_store_blocks: int | None = None) -> TransferPath:
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
    o, _ = _offsets()
    scale = float(sm.n_stacks * sm.system.gpus)  # every stack of every GPU moves its share at once
    # the lookups the step model binds now, read at each transfer: a rebinding (robust/perturb.py's DMA
    # slow-down and refresh storms) reaches the offload path as it reaches the steps' own migrations
    down_id, up_id = sm.dma_op(promote=False).op_id, sm.dma_op(promote=True).op_id

    def t(n: int, op_id: str = down_id) -> float:
        return sm._lookups[op_id].scalar(n * per_stack)[0] * 1e-9 if n > 0 else 0.0

    def actions(direction: str, n: int, vec: np.ndarray) -> None:
        if n <= 0:
            return
        _, a = sm._lookups[up_id if direction == "up" else down_id].scalar(n * per_stack)
        vec[o:o + len(STACK_ACTIONS)] += a * scale

    path = TransferPath("capacity", t, sm.block_bytes * sm.capacity_ratio, sm.block_bytes * sm.capacity_ratio,
                        sm.system.gpus, actions, max_store_blocks, sm.system)
    path.time_up_s = lambda n: t(n, up_id)
    return path


def choose_path(target: str, system, step_model, block_bytes: float, capacity_free_blocks: int | None = None
                ) -> TransferPath:
    """``auto``: the capacity tier where the stacks have one beside PIM (TokenStack) and it has room beside
    the pool (`capacity_free_blocks`, None: not known, taken as room), else the host. ``capacity`` with no
    room is refused."""
    if target not in TARGETS:
        raise InputError(f"expected one of {', '.join(TARGETS)}, got {target!r}", where="offload_target")
    room = capacity_free_blocks is None or capacity_free_blocks > 0
    if target == "capacity" and not room:
        raise InputError("the capacity tier has no room beside the KV pool (the pool owns all of it); shrink the "
                         "pool (--kv-blocks) or offload to the host (offload_target=host)", where="offload_target")
    if target == "capacity" or (target == "auto" and step_model is not None and step_model.migrates and room):
        return capacity_path(step_model, capacity_free_blocks)
    return host_path(system, block_bytes, step_model)


def store_blocks(path: TransferPath, store_gib: float) -> int:
    """The store's size in blocks: ``store_gib`` per shard, bounded by the medium's room."""
    n = int(store_gib * 2 ** 30 / path.stored_bytes_per_block)
    return n if path.max_store_blocks is None else min(n, int(path.max_store_blocks))


def actions_energy_j(system, vec: np.ndarray) -> dict:
    """Component -> J of an action vector (no static power: a span of 0): what the charged transfers cost."""
    from tokenstack_sim.repro.static_batch import _energy  # one summed action vector -> J per component

    return _energy(system, vec, 0.0)


class Channels:
    """Two FIFO channels (down = to the store, up = back) over a path; the actions of what they moved
    wait in `pending` until the serving loop adds them to a step (`take`)."""

    def __init__(self, path: TransferPath):
        from tokenstack_sim.sim.step_cost import N_ACTIONS

        self.path = path
        self.free_at = {"down": 0.0, "up": 0.0}
        self.busy_s = {"down": 0.0, "up": 0.0}
        self.pending = np.zeros(N_ACTIONS)
        self.total = np.zeros(N_ACTIONS)
        self._any = False

    def take(self) -> np.ndarray | None:
        """The actions charged since the last call (None if nothing moved)."""
        if not self._any:
            return None
        out = self.pending.copy()
        self.pending[:] = 0.0
        self._any = False
        return out

    def energy_j(self) -> dict:
        """Component -> J of everything moved so far."""
        if self.path.system is None or not self.total.any():
            return {}
        return actions_energy_j(self.path.system, self.total)

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
        if n > 0 and self.path.actions is not None:
            v = np.zeros_like(self.pending)
            self.path.actions(direction, n, v)
            self.pending += v
            self.total += v
            self._any = True
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

    def clear(self) -> int:
        """Every copy is gone (the medium failed: robust/perturb.py); returns how many there were."""
        n = len(self._ready)
        self._ready.clear()
        return n

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
        get = self._ready.get
        k, n = start, len(hashes)
        while k < n:
            t = get(hashes[k])
            if t is None or t > now:
                break
            k += 1
        return k - start
