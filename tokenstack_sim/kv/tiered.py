"""Where each KV block lives across PIM units and the capacity tier, and the migrations that move it.

The scheduler's `BlockPool` stays the logical pool (vLLM's ids, reference counts, prefix hashes, LRU free
queue). `TieredKv` gives every logical block that holds data a physical slot, per GPU shard (all shards
are alike under tensor parallelism):

- **PIM units**: U groups of stacks whose PIM layers hold KV and attend over it in place. A block of one
  GPU shard carries its `hkv` KV heads; a unit is `hkv / pim_heads` stacks, one slice of heads each, in
  lockstep, so a block lives whole in one unit (U = stacks / that; with 1 KV head per shard and 8
  stacks, a unit is one stack: token-sharding). `pim_slots` blocks per unit, FP16/BF16 as written.
- **Capacity tier**: the dense layers, read by the GPU (its addresses interleave over every stack, so
  there is no placement inside it). `capacity_slots` blocks, all in `policy.demote_format`: a block
  written or demoted there is quantized inline by the base die (hardware.md §5), so INT8 blocks have
  their own accounting, (0.5 + 1/G) of an FP16 block (`capacity_ratio`).

The logical pool has exactly PIM + capacity slots, so a block the pool hands out always finds a slot
(replicas, which are not logical blocks, give theirs back first).

Policies (`kv/policy.py`):
- **Room** on a PIM unit is its free slots plus the slots that give themselves up without touching a
  running request's KV: cached free blocks (prefix-cache entries no request holds; demoted to capacity to
  keep them for reuse, or dropped) and replicas. Placement and promotion count both, so stale prefix-cache
  entries never make a unit look full (they did: every unit full of them, every new request was homed on
  unit 0 and the rest spilled to capacity: TokenStack at 40 req/s on azure-conv-like, TPOT p50 36.3 ms and
  74% of attention on PIM, now 20.9 ms and 99.6%). Where making room would drop a cached entry (no
  demotion possible) and another unit has a free slot, a new block goes there instead.
- **Placement** picks the PIM unit of a new block. `topology-aware`: each request gets a home unit (the
  one holding most of its prefix hits if it has no less room than the average unit, else the one with the
  most room) and a stripe width w =
  ceil(tokens / `local_tokens`) (at most U) fixed when it starts: its blocks are dealt over w
  consecutive units from its home. A short request stays in one unit, so its attention runs in one
  base die and its partial results need no cross-stack gather; a long one is spread so that no unit
  carries much more than `local_tokens` of it (the most loaded unit sets the step's PIM time). A unit
  of the stripe without room spills the block to the unit with the most room. `round-robin`: one
  global cursor over the units, block by block (a request's blocks land wherever the cursor is). `capacity-first`: the
  lowest-numbered unit with room (first fit). `interleaved`: every block split evenly over all units at
  token granularity (perfect balance, every sequence gathered from every unit; the step model's
  proportional spread, kept for comparison and for hand checks).
- **Eviction** decides what leaves a full PIM unit. First replicas (a master copy exists), then cached
  free blocks (prefix-cache entries no running request holds; demoted to capacity to keep them for
  reuse, or dropped from the prefix cache when capacity is full), then in-use blocks by a hotness key,
  coldest first, but only when the new block is hotter (else the new block goes to capacity, no
  migration). A unit gives up its oldest cached block first; a request's blocks are cached last block
  first, as the pool frees them, so a prefix loses its tail before its head. Keys: `workload-aware` =
  the step its last holder finishes decoding (from the request's remaining output length, an oracle:
  the request table's lengths; shared prefix blocks take the longest holder, so reuse counts); `lru` =
  step of the last allocation or prefix hit (every running block is read every step, so read recency
  would tie); `lfu` = prefix hits, then recency; `none` =
  never migrate (blocks stay where they were written: the rivals' and the ablation's behaviour; a full
  unit's cached free block gives its slot to a new block, its entry dropped, where no unit has a free
  slot: the pool's free blocks include cached ones, as vLLM's do).
- **Promotion**: while PIM units have room, the hottest in-use capacity blocks move back (DMA with
  dequantization), at most `max_migrations_per_step` moves (demotions + promotions) per step: into the
  request's home unit or the unit with the most free slots; where no unit has a free slot, into a slot
  held by a replica or by a cached free block, which is demoted where the capacity tier has room and the
  budget allows both moves, never dropped (a cached agent history is worth more than a sooner promotion:
  dropping them cost a TokenCake run on 700 blocks 4 points of prefix hits, 0.418 -> 0.380, measured on
  tests/test_robustness.py's agent failure case). A master block may also displace colder in-use blocks
  and drop a cached one, and its demotion is not held to the budget's last move.
- **Replication**: when a request's home unit is not where a block it shares (≥ `replication_min_refs`
  holders) lives, a read-only copy is made on its home (a cross-stack copy through the GPU's PHYs)
  while replicas take at most `replication_budget` of the PIM slots. Holders homed there read the copy.
- **Placement roles** (`prefer`, set by a runtime that knows what a block is for; none by default, and
  then nothing above changes): ``ROLE_MASTER`` (a block many requests read at every decode step, e.g.
  tokendance's master copy, runtime/collective.py) keys above every other block, so it is never demoted
  for a non-master, is moved into a PIM unit when marked (making room as a new block would) and is
  promoted first, making room by demotion when the units are full; replication treats it as any shared
  block. ``ROLE_CAPACITY`` (a block with one reader, or idle, e.g. a diff or a history held between an
  agent's calls) keys below every other block: it is demoted to the capacity tier when marked (if there
  is room and the step's migration budget allows; lazily, it is only the first to leave a full unit) and
  never promoted while marked. Blocks allocated while `new_role` is set are written where their role
  wants them (no migration). Every move is a migration of the kind it is, timed and charged like the
  others. A role ends when the block gets new content or its last holder lets go;
  `prefer(blocks, ROLE_NONE)` ends it earlier.

Every move is queued as a migration of one GPU shard's block (`take_migrations`) that the step model
times with the characterized base-die DMA and charges in energy. Counters: demotions, promotions, drops,
replicas made and dropped, replica hits (a request served by a copy), and cross-unit gathers per step.
Leaves out: swaps of a hot capacity block with a colder in-use PIM block when PIM is full (promotion fills
room only), quantization error, the translation-table update's latency (charged as DMA time only),
host-memory offload (recompute by preemption is the fallback when the pool runs out), predicted rather
than known output lengths.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

import numpy as np

from tokenstack_sim.hw.stack.quantize import BITS
from tokenstack_sim.kv import kernels
from tokenstack_sim.kv.policy import KvPolicy

DEMOTE, PROMOTE, REPLICATE = 0, 1, 2  # migration kinds (rows of the per-step migration counts)
ROLE_NONE, ROLE_MASTER, ROLE_CAPACITY = 0, 1, 2  # placement roles (`TieredKv.prefer`)
_MASTER_KEY = 1e18  # above any step index: a master outranks every other block
_CAPACITY_KEY = -2.0  # below any key of a block in use (>= 0; -1 is a block with no holder)


def capacity_ratio(policy: KvPolicy, kv_bytes: int) -> float:
    """Stored bytes per byte of KV as written (dtype `kv_bytes`) once demoted to `policy.demote_format`:
    BITS/8 bytes per element plus one FP16 scale per group; 1.0 when that would not be smaller."""
    if not policy.quantized:
        return 1.0
    per_elem = BITS[policy.demote_format] / 8 + 2 / policy.group
    return min(1.0, per_elem / kv_bytes)


class TieredKv:
    """See the module docstring. Attach to a scheduler with `bind(scheduler)`; the scheduler calls
    `allocated`, `attached` and `released`; the step model calls `begin_step`, `view` and
    `take_migrations`."""

    def __init__(self, *, pim_units: int, pim_slots: int, capacity_slots: int, policy: KvPolicy,
                 n_requests: int, capacity_ratio: float = 1.0):
        """`pim_slots`: blocks over all PIM units (the first units take one more where they do not divide)."""
        self.U = int(pim_units) if pim_slots > 0 else 0
        U1 = max(self.U, 1)
        self.P = np.zeros(U1, np.int64)  # slots per unit
        if self.U:
            self.P[:] = pim_slots // self.U
            self.P[: pim_slots % self.U] += 1
        self.C = int(capacity_slots)
        self.policy = policy
        self.capacity_ratio = float(capacity_ratio)
        n_blocks = int(self.P[: self.U].sum()) + self.C
        if n_blocks < 1:
            raise ValueError("no KV slots")
        self.num_blocks = n_blocks
        self.CAP = self.U  # location code of the capacity tier
        self.loc = np.full(n_blocks, -1, np.int32)
        self.holders: list[list[int] | None] = [None] * n_blocks
        self.key = np.zeros(n_blocks, np.float64)
        self.ver = np.zeros(n_blocks, np.int64)
        self.hits = np.zeros(n_blocks, np.int64)
        self.pim_used = np.zeros(max(self.U, 1), np.int64)  # blocks + replicas per unit
        # of those, the slots that give themselves up when a block needs room: cached free blocks (their
        # prefix-cache entry is demoted or dropped) and replicas (their readers go back to the master).
        # Placement and promotion see them as room: they hold nothing a running request reads
        self.reclaim = np.zeros(max(self.U, 1), np.int64)
        self._no_reclaim = np.zeros(max(self.U, 1), np.int64)  # `_free_unit`: free slots only
        self.cap_used = 0
        self.pim_cnt = np.zeros((n_requests, max(self.U, 1)), np.int32)
        self.cap_cnt = np.zeros(n_requests, np.int32)
        self.home = np.full(n_requests, -1, np.int32)
        self.width = np.ones(n_requests, np.int32)  # topology-aware stripe width
        self.placed = np.zeros(n_requests, np.int64)  # blocks placed so far (position in the stripe)
        self.last_loc = np.full(n_requests, -1, np.int32)
        self.fin = np.zeros(n_requests, np.float64)
        self._victims = [[] for _ in range(max(self.U, 1))]  # per unit: (key, block, ver) of in-use blocks
        self._promote: list = []  # (-key, block, ver) of in-use capacity blocks
        self._free_pim = [OrderedDict() for _ in range(max(self.U, 1))]  # cached free blocks, oldest first
        self._free_cap: OrderedDict = OrderedDict()
        self.replicas: dict[int, dict[int, list[int]]] = {}  # block -> unit -> holders reading that copy
        self.role = np.zeros(n_blocks, np.int8)  # placement role per block (`prefer`)
        self.roles_used = False  # no role was ever set: every path below is the plain policy
        self.new_role = ROLE_NONE  # the role blocks allocated now get (set around an allocation by a runtime)
        self.replica_slots = 0
        self.replica_cap = int(policy.replication_budget * self.P[: self.U].sum())
        self._cursor = -1
        self.step_index = 0
        self._moves = 0
        self._mig = np.zeros((3, max(self.U, 1)), np.int64)  # kind x unit, since the last take
        self.migrations_pending = False  # anything in _mig (the step model skips the take when not)
        self._dropped = 0
        self.counters = {"demotions": 0, "promotions": 0, "dropped_cached": 0, "replicas_made": 0,
                         "replicas_dropped": 0, "replica_hits": 0, "shared_attaches": 0}
        self.sched = None
        # robust/perturb.py: the output lengths the workload-aware oracle sees instead of the true ones
        # (output-length misprediction); None = the request table's lengths
        self.out_pred = None

    # ---- wiring ---------------------------------------------------------------------------------------
    def bind(self, scheduler) -> None:
        """Take the scheduler's pool (to drop prefix-cache entries) and its request lengths."""
        if scheduler.pool.num_blocks != self.num_blocks:
            raise ValueError(f"pool has {scheduler.pool.num_blocks} blocks, tiers {self.num_blocks}")
        self.sched = scheduler
        self.pool = scheduler.pool
        scheduler.kv = self

    # ---- hotness --------------------------------------------------------------------------------------
    def _request_key(self, r: int) -> float:
        e = self.policy.eviction
        if e == "workload-aware":
            return self.fin[r]
        return float(self.step_index)

    def _block_key(self, b: int) -> float:
        e = self.policy.eviction
        if self.roles_used and self.role[b]:
            return _MASTER_KEY if self.role[b] == ROLE_MASTER else _CAPACITY_KEY
        hs = self.holders[b]
        if e == "workload-aware":
            if not hs:
                return -1.0
            return float(self.fin[hs[0]]) if len(hs) == 1 else float(max(self.fin[h] for h in hs))
        if e == "lfu":
            return float(self.hits[b]) * 1e12 + self.step_index
        return float(self.step_index)  # lru (and none: unused)

    def _push(self, b: int) -> None:
        """(Re)key an in-use block and enter it in the heap of its location."""
        v = int(self.ver[b]) + 1
        self.ver[b] = v
        k = self._block_key(b)
        self.key[b] = k
        u = int(self.loc[b])
        if u == self.CAP:
            if self.policy.promotion:
                heapq.heappush(self._promote, (-k, b, v))
        elif u >= 0:
            heapq.heappush(self._victims[u], (k, b, v))

    def _coldest(self, u: int):
        """The coldest valid in-use block on unit u (left in its heap), or None."""
        h = self._victims[u]
        while h:
            k, b, v = h[0]
            if v == self.ver[b] and self.loc[b] == u and self.holders[b]:
                return b
            heapq.heappop(h)
        return None

    # ---- counters per holder --------------------------------------------------------------------------
    def _count(self, h: int, b: int, delta: int) -> None:
        u = int(self.loc[b])
        if u == self.CAP:
            self.cap_cnt[h] += delta
            return
        reps = self.replicas.get(b)
        if reps:
            for ru, users in reps.items():
                if h in users:
                    u = ru
                    break
        self.pim_cnt[h, u] += delta

    def _move(self, b: int, dst: int) -> None:
        """Relocate b (with its holders' counters) to unit `dst` or the capacity tier."""
        hs = self.holders[b] or []
        if b in self.replicas:
            self._drop_replicas(b)
        for h in hs:
            self._count(h, b, -1)
        src = int(self.loc[b])
        self._leave(b, src)
        self._enter(b, dst)
        for h in hs:
            self._count(h, b, +1)

    def _leave(self, b: int, u: int) -> None:
        if u == self.CAP:
            self.cap_used -= 1
            self._free_cap.pop(b, None)
        elif u >= 0:
            self.pim_used[u] -= 1
            self._uncache_pim(b, u)
        self.loc[b] = -1

    def _enter(self, b: int, u: int) -> None:
        self.loc[b] = u
        if u == self.CAP:
            self.cap_used += 1
        else:
            self.pim_used[u] += 1
        if self.holders[b]:
            self._push(b)
        else:
            self._cache(b, u)

    def _cache(self, b: int, u: int) -> None:
        """Free block b's data stays at u as a prefix-cache entry (oldest first in its tier's order)."""
        if u == self.CAP:
            self._free_cap[b] = None
        elif b not in self._free_pim[u]:
            self._free_pim[u][b] = None
            self.reclaim[u] += 1

    def _uncache_pim(self, b: int, u: int) -> None:
        """b is no longer a cached free block on PIM unit u (in use again, or gone)."""
        free = self._free_pim[u]
        if b in free:
            del free[b]
            self.reclaim[u] -= 1

    # ---- placement -------------------------------------------------------------------------------------
    def _most_free(self) -> int:
        """The unit with the most room: free slots and slots it can reclaim (the first on ties)."""
        return kernels.most_free(self.P, self.pim_used, self.reclaim, self.U)

    def _free_unit(self) -> int:
        """The unit with the most free slots, -1 where none has one (reclaimable slots not counted)."""
        v = kernels.most_free(self.P, self.pim_used, self._no_reclaim, self.U)
        return v if self.pim_used[v] < self.P[v] else -1

    def _rooms(self) -> np.ndarray:
        """Room per unit (U): free slots plus reclaimable ones (module docstring)."""
        return self.P[: self.U] - self.pim_used[: self.U] + self.reclaim[: self.U]

    def _can_demote(self, budget_ok: bool) -> bool:
        """A cached block may be demoted now (kept for reuse) rather than dropped."""
        return self.cap_used < self.C and budget_ok and self.policy.eviction != "none"

    def _keep_cached(self, u: int, budget_ok: bool) -> int:
        """`u`, or a unit with a free slot where making room on u would drop a prefix-cache entry (u is full,
        holds no replica to give up, and a cached block there could not be demoted): a new block goes to
        the emptiest unit of all rather than lose cached KV while free slots exist."""
        if (self.pim_used[u] < self.P[u] or not self._free_pim[u] or self.reclaim[u] > len(self._free_pim[u])
                or self._can_demote(budget_ok)):
            return u
        v = self._free_unit()
        return u if v < 0 else v

    def _has_room(self, u: int) -> bool:
        """Unit u has a free slot or one it can reclaim (`reclaim`)."""
        return self.pim_used[u] - self.reclaim[u] < self.P[u]

    def _width(self, r: int) -> int:
        """Topology-aware stripe width of request r: ceil(its known tokens / local_tokens), at most U."""
        return int(min(self.U, max(1, -(-int(self.sched.num_tokens[r]) // self.policy.local_tokens))))

    def _choose_unit(self, r: int) -> int:
        """The PIM unit a new block of request r should go to (see the module docstring)."""
        p = self.policy.placement
        if p == "topology-aware":  # home (unit with most room) and stripe width (`_width`) on the first block
            return kernels.topology_unit(r, self.home, self.width, self.placed, self.P, self.pim_used, self.reclaim,
                                         self.sched.num_tokens, self.U, self.policy.local_tokens)
        if p == "round-robin":
            for i in range(1, self.U + 1):
                u = (self._cursor + i) % self.U
                if self._has_room(u):
                    self._cursor = u
                    return u
            self._cursor = (self._cursor + 1) % self.U
            return self._cursor
        free = np.flatnonzero(self._rooms() > 0)  # capacity-first: first fit
        return int(free[0]) if len(free) else 0

    def _room_on(self, u: int, key_new: float, budget_ok: bool) -> bool:
        """Free one slot on unit u if the policy allows (replica, cached free block, colder in-use block)."""
        if self.pim_used[u] < self.P[u]:
            return True
        if self._reclaim_slot(u, budget_ok):
            return True
        if self.policy.eviction == "none" or not budget_ok or self.cap_used >= self.C:
            return False
        v = self._coldest(u)
        if v is None or self.key[v] >= key_new:
            return False
        self._move(v, self.CAP)
        self._record(DEMOTE, u)
        return True

    def _reclaim_slot(self, u: int, budget_ok: bool, drop_ok: bool = True) -> bool:
        """Free a slot on full unit u from a replica or a cached free block (demoted to keep it for reuse
        where the capacity tier has room, the step's budget allows and the policy migrates at all, else
        dropped as vLLM reuses a cached free block, where `drop_ok`); never an in-use block."""
        if self.replica_slots and self._drop_one_replica(u):
            return True
        free = self._free_pim[u]
        if not free:
            return False
        b = next(iter(free))
        if self._can_demote(budget_ok):
            self._move(b, self.CAP)
            self._record(DEMOTE, u)
        elif drop_ok:
            self._drop_cached(b)
        else:
            return False
        return True

    def _record(self, kind: int, u: int) -> None:
        self._mig[kind, u] += 1
        self.migrations_pending = True
        if kind != REPLICATE:
            self._moves += 1
        self.counters[("demotions", "promotions", "replicas_made")[kind]] += 1

    def _drop_cached(self, b: int) -> None:
        """Drop a cached free block's data: its prefix-cache entry goes too."""
        self._leave(b, int(self.loc[b]))
        self.pool.uncache(b)
        self.counters["dropped_cached"] += 1

    def _any_slot(self) -> int:
        """Some free slot (capacity first, then PIM), making one from replicas or cached blocks if needed."""
        if self.cap_used < self.C:
            return self.CAP
        for u in range(self.U):
            if self.pim_used[u] < self.P[u]:
                return u
        for u in range(self.U):
            if self.replica_slots and self._drop_one_replica(u):
                return u
        if self._free_cap:
            self._drop_cached(next(iter(self._free_cap)))
            return self.CAP
        for u in range(self.U):
            if self._free_pim[u]:
                self._drop_cached(next(iter(self._free_pim[u])))
                return u
        raise RuntimeError("KV tiers out of slots with a free logical block")  # the sizes forbid it

    # ---- scheduler hooks -------------------------------------------------------------------------------
    def allocated(self, req_ids, blocks, ahead: int = 0) -> None:
        """New blocks `blocks[i]` for request `req_ids[i]` (the pool just handed them out). `ahead`: tokens
        the requests have generated beyond the scheduler's counters (its fast decode path advances them
        at the end of a run of steps)."""
        budget = self.policy.max_migrations_per_step
        out = self.sched.output_tokens if self.out_pred is None else self.out_pred
        blocks = np.asarray(blocks)
        ids = np.asarray(req_ids)
        bl = blocks.tolist()
        loc = self.loc
        for b in blocks[loc[blocks] >= 0].tolist():  # cached free blocks reused by the pool: old content gone
            self._leave(b, int(loc[b]))
        role = self.new_role if self.roles_used else ROLE_NONE
        if self.roles_used:
            self.role[blocks] = role
        # tokens each has left to generate (the counters do not change in here)
        left = (out[ids] - self.sched.generated[ids] - ahead).tolist()
        fin, holders, hits, last_loc = self.fin, self.holders, self.hits, self.last_loc
        U = self.U
        for r, b, n in zip(ids.tolist(), bl, left):
            fin[r] = self.step_index + float(n)
            holders[b] = [r]
            hits[b] = 0
            dst = -1
            if role == ROLE_CAPACITY and self.cap_used < self.C:
                dst = self.CAP  # written where it is wanted: no migration
            elif U:
                u = self._keep_cached(self._choose_unit(r), self._moves < budget)
                if self._room_on(u, _MASTER_KEY if role == ROLE_MASTER else self._request_key(r),
                                 self._moves < budget):
                    dst = u
            if dst < 0:
                dst = self._any_slot()
            self._enter(b, dst)
            self._count(r, b, +1)
            last_loc[r] = dst

    def attached(self, r: int, blocks) -> None:
        """Request r took prefix-cache hits on `blocks` (at admission)."""
        bl = np.asarray(blocks).tolist()
        if not bl:
            return
        out = self.sched.output_tokens if self.out_pred is None else self.out_pred
        gen = self.sched.generated
        self.fin[r] = self.step_index + float(out[r] - gen[r])
        if self.U and self.home[r] < 0 and self.policy.placement == "topology-aware":
            units = self.loc[bl]
            units = units[(units >= 0) & (units < self.U)]
            if len(units):
                # the unit holding most of its prefix, unless that unit has less room than the average (then
                # the roomiest: balance first, and replication, where on, brings the prefix over)
                u = int(np.bincount(units, minlength=self.U).argmax())
                room = self._rooms()
                self.home[r] = u if room[u] >= room.mean() else int(room.argmax())
                self.width[r] = self._width(r)
        for b in bl:
            hs = self.holders[b]
            if hs:
                hs.append(r)
                self.counters["shared_attaches"] += 1
            else:  # a cached free block comes back into use
                u = int(self.loc[b])
                if u == self.CAP:
                    self._free_cap.pop(b, None)
                elif u >= 0:
                    self._uncache_pim(b, u)
                self.holders[b] = hs = [r]
            self.hits[b] += 1
            self._maybe_replicate(b, r)
            self._count(r, b, +1)
            self._push(b)
        self.last_loc[r] = int(self.loc[bl[-1]])

    def released(self, r: int, blocks) -> None:
        """Request r lets go of its block table (finished or preempted), before the pool frees it."""
        has_hash = self.pool.has_hash
        # last block first, as the pool frees them: a unit reclaims its oldest cached block first, so a
        # request's prefix loses its tail before its head (a chain without its first block is no hit)
        for b in reversed(np.asarray(blocks).tolist()):
            hs = self.holders[b]
            reps = self.replicas.get(b)
            if reps:
                for ru, users in list(reps.items()):
                    if r in users:
                        users.remove(r)
            hs.remove(r)
            if hs:
                if self.policy.eviction == "workload-aware":
                    self._push(b)
                continue
            self.holders[b] = None
            if self.roles_used:
                self.role[b] = ROLE_NONE
            if reps:
                self._drop_replicas(b)
            u = int(self.loc[b])
            self.ver[b] += 1
            if has_hash[b]:  # the pool keeps it as a prefix-cache entry
                self._cache(b, u)
            else:
                self._leave(b, u)
        self.pim_cnt[r] = 0
        self.cap_cnt[r] = 0
        self.home[r] = -1
        self.placed[r] = 0
        self.last_loc[r] = -1

    # ---- replication -----------------------------------------------------------------------------------
    def _maybe_replicate(self, b: int, r: int) -> None:
        if self.replica_cap <= 0 or not self.U:
            return
        h = int(self.home[r])
        u = int(self.loc[b])
        if h < 0 or u < 0 or u == self.CAP or (u - h) % self.U < self.width[r]:
            return  # in the capacity tier, or already within the request's stripe
        reps = self.replicas.get(b)
        if reps and h in reps:
            reps[h].append(r)
            self.counters["replica_hits"] += 1
            return
        if len(self.holders[b]) < self.policy.replication_min_refs or self.replica_slots >= self.replica_cap:
            return
        if self.pim_used[h] >= self.P[h]:
            return
        self.replicas.setdefault(b, {})[h] = []
        self.pim_used[h] += 1
        self.reclaim[h] += 1
        self.replica_slots += 1
        self._record(REPLICATE, h)
        # holders homed on h (r among them, counted by the caller) read the copy from now on
        for x in self.holders[b]:
            if x != r and self.home[x] == h:
                self._count(x, b, -1)
                self.replicas[b][h].append(x)
                self._count(x, b, +1)
        self.replicas[b][h].append(r)

    def _drop_replicas(self, b: int) -> None:
        for u in list(self.replicas.get(b, {})):
            self._drop_replica(b, u)

    def _drop_replica(self, b: int, u: int) -> None:
        users = self.replicas[b][u]
        for x in users:
            self.pim_cnt[x, u] -= 1
        del self.replicas[b][u]
        if not self.replicas[b]:
            del self.replicas[b]
        for x in users:
            self._count(x, b, +1)
        self.pim_used[u] -= 1
        self.reclaim[u] -= 1
        self.replica_slots -= 1
        self.counters["replicas_dropped"] += 1

    def _drop_one_replica(self, u: int) -> bool:
        for b, reps in self.replicas.items():
            if u in reps:
                self._drop_replica(b, u)
                return True
        return False

    # ---- step model hooks ------------------------------------------------------------------------------
    def begin_step(self) -> None:
        """Called once per step before it is timed: promotions into PIM room (module docstring)."""
        self.step_index += 1
        budget = self.policy.max_migrations_per_step
        if not (self.U and self.policy.promotion and self.policy.eviction != "none"):
            self._moves = 0
            return
        heap = self._promote
        while heap and self._moves < budget:
            nk, b, v = heap[0]
            if v != self.ver[b] or self.loc[b] != self.CAP or not self.holders[b]:
                heapq.heappop(heap)
                continue
            if self.roles_used and self.role[b] == ROLE_CAPACITY:
                heapq.heappop(heap)  # stays in capacity while marked
                continue
            h = int(self.home[self.holders[b][0]])
            u = h if h >= 0 and self.pim_used[h] < self.P[h] else self._free_unit()
            if u < 0:  # no free slot anywhere: the unit with the most room gives one up
                u = h if h >= 0 and self._has_room(h) else self._most_free()
                # a slot held by a replica, or by a cached free block that can be demoted (not dropped), is
                # given up for it (a stale prefix-cache entry must not keep a running request's block out
                # of PIM); a master also displaces colder in-use blocks (and may drop a cached one)
                if not (self._reclaim_slot(u, self._moves + 1 < budget, drop_ok=False)
                        or (self.roles_used and self.role[b] == ROLE_MASTER and self._room_on(u, _MASTER_KEY, True))):
                    break
            heapq.heappop(heap)
            self._move(b, u)
            self._record(PROMOTE, u)
        self._moves = 0

    def prefer(self, blocks, role: int, move: bool = True) -> int:
        """Mark `blocks` with a placement role (module docstring) and, with `move`, move them now where the
        role wants them, within this step's migration budget (without: a ROLE_CAPACITY block is the first
        to leave a full PIM unit, a ROLE_MASTER one the first promoted); returns the blocks moved. Blocks
        allocated while `new_role` is set get that role and are written where it wants them."""
        if role not in (ROLE_NONE, ROLE_MASTER, ROLE_CAPACITY):
            raise ValueError(f"unknown placement role {role!r}")
        self.roles_used = True
        budget = self.policy.max_migrations_per_step
        moves_on = move and bool(self.U) and self.policy.eviction != "none"
        moved = 0
        for b in np.asarray(blocks, np.int64).tolist():
            self.role[b] = role
            u = int(self.loc[b])
            if u < 0:
                continue
            if moves_on and role == ROLE_MASTER and u == self.CAP:
                dst = self._most_free()
                if self._room_on(dst, _MASTER_KEY, self._moves < budget) and self.pim_used[dst] < self.P[dst]:
                    self._move(b, dst)
                    self._record(PROMOTE, dst)
                    moved += 1
                    continue
            elif (moves_on and role == ROLE_CAPACITY and u < self.U and self.cap_used < self.C
                  and self._moves < budget and not self.replicas.get(b)):
                self._move(b, self.CAP)
                self._record(DEMOTE, u)
                moved += 1
                continue
            if self.holders[b]:
                self._push(b)
        return moved

    def view(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the batch's requests: blocks per PIM unit (B x U), blocks in the capacity tier (B), and
        whether the newest block is in a PIM unit (B, where its next K/V is written)."""
        return self.pim_cnt[ids, : max(self.U, 1)], self.cap_cnt[ids], (self.last_loc[ids] >= 0) & (self.last_loc[ids] < self.U)

    def take_migrations(self) -> np.ndarray:
        """Blocks moved since the last call: kind (DEMOTE, PROMOTE, REPLICATE) x unit; resets."""
        m = self._mig.copy()
        self._mig[:] = 0
        self.migrations_pending = False
        return m

    # ---- faults (robust/perturb.py) -------------------------------------------------------------------
    def _lost_mask(self, units, capacity: bool) -> np.ndarray:
        lost = np.zeros(self.U + 2, bool)  # indexed by location + 1 (-1: no slot)
        lost[np.asarray(list(units), np.int64) + 1] = True
        lost[self.CAP + 1] = capacity
        return lost

    def holders_on(self, units, capacity: bool) -> list[int]:
        """Requests holding a block with data on PIM units `units` (or reading a replica there), or in the
        capacity tier when `capacity`."""
        lost = self._lost_mask(units, capacity)
        out: set[int] = set()
        for b in np.flatnonzero(lost[self.loc + 1]).tolist():
            if self.holders[b]:
                out.update(self.holders[b])
        for reps in self.replicas.values():
            for u, users in reps.items():
                if lost[u + 1]:
                    out.update(users)
        return sorted(out)

    def drop_lost(self, units, capacity: bool) -> int:
        """The data on PIM units `units` (and the capacity tier when `capacity`) is gone, once its holders
        let go (`holders_on`, preempted first): replicas there are dropped, cached blocks leave their slot
        and the prefix cache. Returns the blocks dropped."""
        lost = self._lost_mask(units, capacity)
        for u in units:
            while self.replica_slots and self._drop_one_replica(u):
                pass
        blocks = np.flatnonzero(lost[self.loc + 1]).tolist()
        for b in blocks:
            if self.holders[b]:
                raise RuntimeError(f"block {b} on a lost location still has holders {self.holders[b]}")
            self._drop_cached(b)
        return len(blocks)

    def disable_unit(self, u: int) -> int:
        """PIM unit u's slots are gone for good (its PIM layer failed; empty by `drop_lost` first): as many
        logical blocks are taken out of the pool for the rest of the run (allocated, never freed), so
        that every block the pool hands out still finds a slot. Returns the slots removed."""
        n = int(self.P[u])
        if self.pim_used[u]:
            raise RuntimeError(f"PIM unit {u} still holds {int(self.pim_used[u])} blocks")
        if n > self.pool.num_free:
            raise RuntimeError(f"cannot take {n} blocks out of a pool with {self.pool.num_free} free")
        self.P[u] = 0
        for b in self.pool.allocate(n).tolist():
            if self.loc[b] >= 0:  # a cached free block elsewhere: its data goes with its slot
                self._leave(b, int(self.loc[b]))
        self.replica_cap = min(self.replica_cap, int(self.policy.replication_budget * self.P[: self.U].sum()))
        return n

    # ---- checks ----------------------------------------------------------------------------------------
    def check(self) -> None:
        """Conservation: slots used equal blocks placed + replicas, counters equal block tables."""
        pim_blocks = np.bincount(self.loc[(self.loc >= 0) & (self.loc < self.U)], minlength=self.U) if self.U else 0
        reps = np.zeros(max(self.U, 1), np.int64)
        for r in self.replicas.values():
            for u in r:
                reps[u] += 1
        if self.U:
            assert np.array_equal(pim_blocks + reps[: self.U], self.pim_used[: self.U]), "PIM slots"
            assert (self.pim_used[: self.U] <= self.P[: self.U]).all(), "PIM over capacity"
            cached = np.array([len(self._free_pim[u]) for u in range(self.U)], np.int64)
            assert all(self.loc[b] == u and not self.holders[b] for u in range(self.U) for b in self._free_pim[u]), \
                "cached free blocks"
            assert np.array_equal(cached + reps[: self.U], self.reclaim[: self.U]), "reclaimable slots"
        assert int(np.count_nonzero(self.loc == self.CAP)) == self.cap_used <= self.C, "capacity slots"
        assert self.replica_slots == int(reps.sum()) <= max(self.replica_cap, 0), "replica budget"
        n_ref = sum(len(h) for h in self.holders if h)
        assert n_ref == int(self.pim_cnt.sum() + self.cap_cnt.sum()), "holder counters"
