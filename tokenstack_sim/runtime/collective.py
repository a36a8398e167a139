"""KV reuse for All-Gather rounds (workload/allgather.py): per-request position-independent caching
(``pic``, CacheBlend/EPIC-like) and collective sharing (``tokendance``: KV Collector + Diff-Aware
Storage, TokenDance, serving.md §3.2).

In round t >= 1 agent a's prompt is history H | reused region R | template T (allgather.py). Every output
in R already has KV (its agent generated it in round t-1) but computed at another position after other
content. Both runtimes reuse it instead of prefilling it; the plain ``vllm`` runtime prefills it (its
prefix cache misses R: the outputs are not a common prefix).

The mechanism, per reused output c (a *chunk*, ``O_c`` real tokens, padded to whole blocks):
- **Positional correction**: the stored K of every reused token is re-rotated to its new position (a
  memory pass: read + write of the chunk's KV).
- **Selection rule** (which tokens are recomputed): a chunk that lands after content other than the
  content its KV was computed after gets its leading ``n_c = ceil(rho * O_c)`` tokens recomputed.
  ``rho`` = 0.15 is CacheBlend-15's recompute ratio (serving.md §2.4); taking the *leading* tokens is
  EPIC's finding that the deviation sits at the chunk start (LegoLink recomputes the first k tokens of
  each chunk, serving.md §2.4). [E] A token's deviation is set by the chunk's immediate predecessor:
  two placements of c after the same predecessor chunk give the same recomputed KV (locality of the
  junction, EPIC's premise). Those ``n_c`` tokens touch the chunk's first ``ceil(n_c / B)`` blocks
  (chunks start block-aligned, allgather.py), which are therefore context-dependent; its other blocks
  depend only on the chunk.
- ``pic`` (per request): every chunk of R follows other content than where it was generated, so each
  request recomputes ``sum n_c`` tokens and corrects all of R, and holds a private copy of R (all its
  blocks, stored per agent). Paid per request: the recompute enters the step that admits the call.
- ``tokendance``: the **KV Collector** builds one *master* per round: every output of round t-1 in
  agent order (each chunk after its canonical predecessor), corrected and with its leading tokens
  recomputed once. Agent a's R is the master's blocks in a's order except where a chunk follows another
  predecessor in a's prompt than in the master (its own output right after its private history, the
  first output after its own, an output after a gap in its visible set, any shuffled order): those
  chunks' leading blocks are a's **diff blocks**, recomputed for a. The master and every agent's diffs
  are computed in one collective pass per round (one batched pass, charged to the step that runs its
  first call) when the pool has room for them; otherwise in several passes, each over the next calls in
  line that fit, collecting the master chunks they reuse that no earlier pass did (each chunk corrected
  and recomputed once per round either way). **Diff-Aware Storage**: master blocks stored once, diff
  blocks per agent (`DiffStore`: block table = master indices + diffs; equal diffs of two agents are
  one block in the pool, keyed by content). Restore maps the agent's block table onto master and diff blocks (no copy: attention reads
  the master's blocks, the fused sparse restore).
Placement (issue 10 item 5, ``placement_roles``, on a tiered KV, kv/tiered.py): every sibling's attention
reads the master's blocks at every decode step (N readers), a diff or a history block has one reader. The
collector writes the master's blocks into the PIM units as ``ROLE_MASTER`` (attended beside the data,
never demoted for other blocks; replicated over units by the KV policy's bounded replication like any
shared block) and each diff as ``ROLE_CAPACITY``: ``eager`` writes it into the capacity layers (read by
the GPU), ``lazy`` writes it where the policy would and only makes it the first block to leave a full PIM
unit (demoted through the base-die DMA); a finished call's private history and output, idle until the
agent's next call, are marked ``ROLE_CAPACITY`` lazily in both and unmarked when that call is admitted
(the policy may then promote them). ``off``: the KV policy alone.
The moves are migrations the step model times and charges like the policy's own. Counted at each
collective step: master blocks in PIM and distinct diff blocks in capacity (``master_pim_blocks`` of
``master_placed_blocks``, ``diff_capacity_blocks`` of ``diff_placed_blocks``), with the roles or without,
and the master's blocks in PIM when the round's first call finishes (``master_pim_blocks_running``).
Costs are charged by the engine's step model (`ChargingCost`): the recompute tokens as extra prefill
tokens of the step (the step's time with them minus without them, both from `StepModel.step`), the
correction as a stream of KV bytes (`StepModel._stream1`), added to the step's time, parts (``other_s``
for the stream) and actions (energy).
Memory: a finished call's history is held (`Pins`) until the agent's next call is admitted, its output
(the next round's chunk source) until the chunk is read: by the collector (tokendance: the source is
let go once its master chunk is written) or by the last call that reuses it (pic). A round's master
chunks and diffs are held until every call that reuses them has been admitted (with k visible agents
of N, a sliding window). Held KV gives way to calls in line: when the head of the scheduler's queue does
not fit, histories are let go first (the next round's, furthest agent first, then those of calls this
runtime still holds, last first), then chunk sources (a *lost* chunk is recomputed whole where it is
reused: ``lost_chunks``, ``lost_chunk_tokens``). A released block is only evictable; a call whose
history was evicted since recomputes it on admission (``history_recompute_tokens``, charged like the
reuse work; its reused region stays reusable, the chunks being position-independent). Calls are handed
to the scheduler in line order when their reuse, history and template fit (`budget`). When
nothing runs and nothing fits, the masters of rounds still held are let go and their remaining calls are
served without reuse (``fallback_calls``).
Leaves out: the quality of the approximation (outputs are unchanged by reuse here), CacheBlend's
per-layer selection pass (EPIC's position rule needs none), the rotation cost of the fused restore, the
load of chunks or histories from a CPU store (what the GPU's pool lets go is recomputed, never
reloaded), partial-block reuse when outputs are not padded to the engine's block; an evicted history's
blocks are recomputed as one run from its first missing block (the blocks after it that stayed cached
are charged again).
"""

from __future__ import annotations

import math

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.kv.tiered import ROLE_CAPACITY, ROLE_MASTER, ROLE_NONE
from tokenstack_sim.runtime.agent_runtime import AgentRuntime
from tokenstack_sim.runtime.agent_scheduler import DagHashes, Pins, cached_prefix
from tokenstack_sim.workload.agent_apps import sequence_hashes
from tokenstack_sim.workload.hashing import derive

# CacheBlend-15: recompute ~15% of the reused tokens (serving.md §2.4)
RECOMPUTE_RATIO = 0.15
_CHUNK = np.uint64(0xC4C4_0000_0000_0001)
_PRIVATE = np.uint64(0x9817_0000_0000_0001)
_MASTER_START = np.uint64(0x3A57_0000_0000_0001)
_TAIL = np.uint64(0x7A17_0000_0000_0001)


def recompute_tokens(out_tokens, ratio: float = RECOMPUTE_RATIO) -> np.ndarray:
    """The selection rule's count per chunk: ceil(ratio x tokens), at most the chunk."""
    o = np.asarray(out_tokens, np.int64)
    return np.minimum(np.ceil(ratio * o - 1e-9).astype(np.int64), o)


def _h(x) -> int:
    return int(x)


class ChunkKeys:
    """Content keys of reused blocks (module docstring): block k of chunk c after predecessor p."""

    def __init__(self, ag, block_size: int, ratio: float):
        pad = ag.params.pad_tokens
        if pad % block_size:
            raise InputError(f"All-Gather outputs are padded to {pad} tokens; the engine's block of {block_size} "
                             f"tokens must divide it for block-level reuse", where="block_size")
        self.ag, self.B = ag, block_size
        self.n_rec = recompute_tokens(ag.out_tokens, ratio)
        self.blocks = ag.padded(ag.out_tokens) // block_size
        self.lead = np.minimum(-(-self.n_rec // block_size), self.blocks)

    def chunk(self, c: int, pred: int) -> list[int]:
        base = derive(_CHUNK, np.uint64(c))
        ks = derive(base, np.arange(int(self.blocks[c]), dtype=np.uint64))
        lead = int(self.lead[c])
        if lead:
            ks[:lead] = derive(ks[:lead], np.uint64(pred))
        return ks.tolist()

    @staticmethod
    def private(r: int) -> int:
        """The predecessor key of the first chunk of R: request r's own private history."""
        return _h(derive(_PRIVATE, np.uint64(r)))

    @staticmethod
    def chunk_pred(c: int) -> int:
        return _h(derive(_CHUNK, np.uint64(c)))


class RoundPlan:
    """Round t's reuse (t >= 1): the master (chunks in agent order), each call's R as block keys, its
    diff blocks and recompute tokens under both rules."""

    def __init__(self, keys: ChunkKeys, t: int):
        ag = keys.ag
        self.t = t
        self.calls = ag.round_calls[t]
        producers = ag.round_calls[t - 1]
        self.master: list[int] = []
        self.master_pred: dict[int, int] = {}
        self.master_at: dict[int, tuple[int, int]] = {}  # chunk -> its blocks' slice of the master
        pred = _h(_MASTER_START)
        for c in producers.tolist():
            self.master_pred[c] = pred
            j = len(self.master)
            self.master += keys.chunk(c, pred)
            self.master_at[c] = (j, len(self.master))
            pred = ChunkKeys.chunk_pred(c)
        self.master_tokens = int(ag.padded(ag.out_tokens[producers]).sum())
        self.master_recompute = int(keys.n_rec[producers].sum())
        self.region: dict[int, list[int]] = {}
        self.diff_recompute: dict[int, int] = {}
        self.pic_recompute: dict[int, int] = {}
        for r in self.calls.tolist():
            ks, dtok = [], 0
            pred = ChunkKeys.private(r)
            for c in ag.chunks(r).tolist():
                ks += keys.chunk(c, pred)
                if pred != self.master_pred[c]:
                    dtok += int(keys.n_rec[c])
                pred = ChunkKeys.chunk_pred(c)
            self.region[r] = ks
            self.diff_recompute[r] = dtok
            self.pic_recompute[r] = int(keys.n_rec[ag.chunks(r)].sum())
        in_master = set(self.master)
        self.diffs = {r: [k for k in ks if k not in in_master] for r, ks in self.region.items()}


class DiffStore:
    """Diff-Aware Storage of one round: the master's blocks once, each sibling as a block table of master
    indices and its own diff blocks (module docstring). Counts exactly what is stored."""

    def __init__(self, master: list[int]):
        self.master = list(master)
        self._index = {k: i for i, k in enumerate(self.master)}
        self.tables: dict[int, np.ndarray] = {}  # sibling -> per block: master index, or -1 - diff index
        self.diffs: dict[int, list[int]] = {}

    def add(self, sibling: int, keys: list[int]) -> None:
        table = np.empty(len(keys), np.int64)
        diffs = []
        for j, k in enumerate(keys):
            i = self._index.get(k)
            if i is None:
                table[j] = -1 - len(diffs)
                diffs.append(k)
            else:
                table[j] = i
        self.tables[sibling] = table
        self.diffs[sibling] = diffs

    def restore(self, sibling: int) -> list[int]:
        """The sibling's block table (content keys), rebuilt from the master and its diffs."""
        t, d = self.tables[sibling], self.diffs[sibling]
        return [self.master[i] if i >= 0 else d[-1 - i] for i in t.tolist()]

    @property
    def diff_blocks(self) -> int:
        return sum(len(d) for d in self.diffs.values())

    @property
    def distinct_diff_blocks(self) -> int:
        """Diff blocks once per content (equal diffs of two siblings are one block in the pool)."""
        return len({k for d in self.diffs.values() for k in d})

    @property
    def stored_blocks(self) -> int:
        """Master + every sibling's diffs (the exact count; `distinct_diff_blocks` for the pool's)."""
        return len(self.master) + self.diff_blocks

    @property
    def logical_blocks(self) -> int:
        """Blocks the siblings' tables name (what per-agent copies would store)."""
        return sum(len(t) for t in self.tables.values())

    def compression(self) -> float:
        return self.logical_blocks / self.stored_blocks if self.stored_blocks else float("nan")


class LayoutHashes(DagHashes):
    """Per-request block hashes in the tokendance layout: H as it was stored (S + P chained; the agent's
    older outputs under the keys they had in the R that reused them), R as master/diff keys, then T and
    the output unique to the call."""

    def __init__(self, table, keys: ChunkKeys, block_size: int, output_tokens: np.ndarray, fallback):
        ag, dag = table.ag, table.dag
        n = len(table)
        parts, counts = [], np.zeros(n, np.int64)
        hist_keys: dict[int, list[int]] = {}
        for r in range(n):
            a, t = int(ag.agent[r]), int(ag.round[r])
            if t <= 1:  # S + P_a (round 0 and 1 have no older outputs)
                s = dag.seg_offsets[r]
                h = sequence_hashes(dag.seg_ids[s:s + 2] if ag.params.shared_tokens else dag.seg_ids[s:s + 1],
                                    dag.seg_lens[s:s + 2] if ag.params.shared_tokens else dag.seg_lens[s:s + 1],
                                    block_size, partial_last=False).tolist()
            else:  # the previous call's H + its own chunk as it was keyed in that call's R
                p = int(ag.prev[r])
                own = int(ag.chunks(p)[0])
                h = hist_keys[p] + keys.chunk(own, ChunkKeys.private(p))
            hist_keys[r] = h
            if int(ag.hist_tokens[r]) != len(h) * block_size:
                raise AssertionError("history is not block-aligned")  # allgather.py pads S + P and outputs
            region: list[int] = []
            if t >= 1:
                pred = ChunkKeys.private(r)
                for c in ag.chunks(r).tolist():
                    region += keys.chunk(c, pred)
                    pred = ChunkKeys.chunk_pred(c)
            total = -(-int(table.rows["input_tokens"][r] + output_tokens[r]) // block_size)
            tail = derive(derive(_TAIL, np.uint64(r)), np.arange(total - len(h) - len(region), dtype=np.uint64))
            seq = np.asarray(h + region, np.uint64)
            parts.append(np.concatenate([seq, tail]))
            counts[r] = total
        self.offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=self.offsets[1:])
        self.flat = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        self.counts = counts
        self.fallback = fallback
        self.block_size = block_size


class ChargingCost:
    """The loop's step cost with the runtime's reuse work added to the step that runs it (module docstring);
    everything else is the step model's."""

    def __init__(self, inner, rt: "_ReuseRuntime"):
        self.inner, self.rt = inner, rt

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step_time_s(self, batch) -> float:
        t = float(self.inner.step_time_s(batch))
        work = self.rt.take_charge(batch)
        if work is None:
            return t
        new, ctx, nbytes = work
        sm = self.inner
        emits = np.asarray(batch.emits, bool)
        t0, p0, v0, _, _ = sm.step(batch.new_tokens, batch.context_tokens, emits, batch.kv_blocks_in_use)
        t1, p1, v1, _, _ = sm.step(np.concatenate([batch.new_tokens, new]),
                                   np.concatenate([batch.context_tokens, ctx]),
                                   np.concatenate([emits, np.zeros(len(new), bool)]), batch.kv_blocks_in_use)
        extra = max(0.0, float(t1) - float(t0))
        parts = np.maximum(np.asarray(p1, float) - np.asarray(p0, float), 0.0)
        vec = np.maximum(np.asarray(v1) - np.asarray(v0), 0.0)
        mem = 0.0
        if nbytes > 0:  # positional correction: read and write the reused KV once
            tier = self.rt.stream_tier
            mem = sm._stream1(nbytes, tier, vec, 1.0) + sm._stream1(nbytes, tier, vec, 1.0, write=True)
        parts[5] += mem  # STEP_PARTS "other_s"
        recs = getattr(sm, "records", None)
        if recs is not None and len(recs):
            recs.parts[len(recs) - 1] += parts
            recs.actions[len(recs) - 1] += vec
        self.rt.c["reuse_step_s"] += extra + mem
        return t + extra + mem


class _ReuseRuntime(AgentRuntime):
    """What ``pic`` and ``tokendance`` share: held calls, pins across the barrier, charges."""
    collective = False
    lost_chunk_once = False  # a lost chunk is recomputed once (collector) rather than by each reader

    def __init__(self, loop, params, path=None):
        super().__init__(loop, params, path)
        table = loop.table
        ag = getattr(table, "ag", None)
        if ag is None:
            raise InputError(f"runtime {self.name!r} reuses All-Gather rounds: use generative-agents-like or "
                             f"agentsociety-like", where="--runtime")
        self.ag = ag
        self.keys = ChunkKeys(ag, self.bs, params.recompute_ratio)
        self.plans: dict[int, RoundPlan] = {}
        self.stores: dict[int, DiffStore] = {}
        self.held: list[tuple[int, float]] = []  # (request, ready time), agent order
        self.queued: dict[int, int] = {}  # handed to the scheduler, not admitted: request -> blocks it takes
        self.uncharged: dict[int, tuple] = {}  # request -> (new tokens, context, correction bytes)
        self.round_left = {t: len(c) for t, c in enumerate(ag.round_calls)}
        self.owners: dict[int, list[int]] = {}  # round -> previous-round calls whose chunks it reuses
        self.src_pins = Pins(self.sched, loop.kv)  # chunk sources (the generating call's output KV)
        self.master_pins = Pins(self.sched, loop.kv)  # a built master's chunks, per generating call (tokendance)
        self.unsourced: set[int] = set()
        self._readers: dict[int, dict] = {}  # round -> `readers_left`
        self.entered: set[int] = set()  # calls admitted by the scheduler (once, preemptions aside)
        self.lost: set[int] = set()  # calls whose output's KV was let go before its reuse (`make_room`)
        sm = loop.cost
        self.kv_tok_bytes = float(getattr(sm, "block_bytes", 0.0)) / self.bs  # one shard's KV per token
        system = getattr(sm, "system", None)
        self.gpus = int(system.gpus) if system is not None else 1
        self.stream_tier = "pim" if getattr(sm, "pim_tier", None) is not None else getattr(sm, "weight_tier", "")
        loop.cost = ChargingCost(sm, self)
        self.c.update(reuse_step_s=0.0, recompute_tokens=0, reused_tokens=0, correction_bytes=0.0,
                      collective_steps=0, fallback_calls=0, relieved=0, region_blocks=0, stored_region_blocks=0,
                      master_blocks=0, diff_blocks=0, reuse_calls=0, history_recompute_tokens=0,
                      released_histories=0, lost_chunks=0, lost_chunk_tokens=0)

    # --- plan ----------------------------------------------------------------------------------------
    def plan(self, t: int) -> RoundPlan:
        if t not in self.plans:
            self.plans[t] = RoundPlan(self.keys, t)
        return self.plans[t]

    def hist_blocks(self, r: int) -> int:
        return int(self.ag.hist_tokens[r]) // self.bs

    def region_hashes(self, r: int) -> list[int]:
        h0 = self.hist_blocks(r)
        return self.sched.hashes.first(r, h0 + int(self.ag.region_tokens[r]) // self.bs)[h0:]

    def tail_need(self, r: int) -> int:
        """Blocks a call takes on admission besides H and R: its template (+1 for its first tokens out).
        Its output's blocks are taken as it decodes, as vLLM admits a prompt that fits (a full pool
        preempts): reserving the whole output here halved the calls in flight in a pool of a few
        contexts (round 1 of 40 agents in 150 blocks: 19.2 s against vLLM's 11.0 s; 12.0 s without)."""
        return -(-int(self.ag.template_tokens[r]) // self.bs) + 1

    # --- hooks ---------------------------------------------------------------------------------------
    def release(self, r: int, t: float) -> None:
        if self.ag.round[r] == 0:
            self.loop.admit(r, t)
            return
        self.held.append((r, t))

    def finished(self, r: int, t: float) -> None:
        nxt = int(self.ag.next[r])
        if nxt < 0:
            return
        # hold the agent's history (its next call starts with it) until that call is admitted, and this
        # call's output (the next round's chunk source) until it is read (module docstring: Memory)
        self.pins.pin_cached(r, self.sched.hashes.first(r, self.hist_blocks(nxt)))
        seq = self.sequence_hashes(r)
        first = int(self.sched.num_tokens[r] - self.sched.output_tokens[r]) // self.bs
        self.src_pins.pin_cached(r, seq[first:])
        self.owners.setdefault(int(self.ag.round[nxt]), []).append(r)

    def admitted(self, rs, t):
        for r in rs:
            self.queued.pop(r, None)
            p = int(self.ag.prev[r])
            if p >= 0:
                self.pins.release(p)  # the call holds its history and reused blocks itself now
            if r in self.entered:
                continue  # back after a preemption
            self.entered.add(r)
            rd = int(self.ag.round[r])
            self.round_left[rd] -= 1
            if rd >= 1:  # a chunk's KV is let go once every call that reuses it holds it
                left = self.readers_left(rd)
                for c in self.ag.chunks(r).tolist():
                    left[c] -= 1
                    if left[c] == 0:
                        self.src_pins.release(c)
                        self.master_pins.release(c)
            if self.round_left[rd] == 0:
                for o in self.owners.pop(rd, []):
                    self.src_pins.release(o)
                    self.master_pins.release(o)

    def readers_left(self, t: int) -> dict:
        """Per chunk reused in round t (a call of round t - 1): calls of round t not admitted yet that reuse
        it. Its source (pic) or its master blocks and the diffs of its agent's next call (tokendance) are
        held until none is left (with k visible agents of N the held KV is a sliding window, not all)."""
        left = self._readers.get(t)
        if left is None:
            left = {}
            for r in self.ag.round_calls[t].tolist():
                for c in self.ag.chunks(r).tolist():
                    left[c] = left.get(c, 0) + 1
            self._readers[t] = left
        return left

    # --- memory pressure --------------------------------------------------------------------------
    def _history_victims(self, keep: set, granted: bool = False) -> tuple[list[int], list[int]]:
        """Owners of held histories in the order they are let go, as (not in line, in line): those whose
        next call is not in line yet (the next round's), furthest in agent order first; then those of
        calls this runtime holds, last in line first; with `granted`, then those of calls handed to the
        scheduler, last first (otherwise their reuse, granted, stays until they are admitted). Never owners
        in `keep`."""
        held = [int(self.ag.prev[r]) for r, _ in self.held]
        waiting = [int(self.ag.prev[r]) for r in self.sched.waiting]
        in_line = set(held) | set(waiting)
        later = sorted((o for o in self.pins.sets if o not in in_line), key=lambda o: -int(self.ag.next[o]))
        skip = set(keep) | (set() if granted else set(waiting))
        return ([o for o in later if o not in skip],
                [o for o in held[::-1] + (waiting[::-1] if granted else []) if o not in skip])

    def make_room(self, need: int, keep=(), sources: bool = False, granted: bool = False) -> int:
        """Let go of held KV until `need` blocks are free for calls in line (`budget`): first the histories
        of calls not in line yet (`_history_victims`), then the chunk sources no held call reads yet
        (furthest agent first) and the histories of calls in line (last first); with `sources`, last the
        chunk sources the held calls reuse. A lost chunk costs tokendance one recompute
        (`lost_chunk_once`) but pic one per reader (k per chunk), so pic lets go of sources only with
        `sources` (a call in the scheduler's queue does not fit, or nothing runs), after the histories.
        A source let go makes its chunk *lost*: its reuse recomputes it whole (`lost_tokens`). Returns
        blocks freed. A released block is only evictable: it still hits while the pool keeps it; a call
        whose history was evicted recomputes it on admission (`land_history`)."""
        budget = self.budget()
        if budget >= need:
            return 0
        t_held = int(self.ag.round[self.held[0][0]]) if self.held else -1
        later_src, read_src = [], []
        for c in sorted(self.src_pins.sets, key=lambda c: -int(self.ag.agent[c])):
            (later_src if int(self.ag.round[c]) >= t_held else read_src).append(c)
        later_hist, line_hist = self._history_victims(set(keep), granted)
        hist, src = [(0, o) for o in line_hist], [(1, c) for c in later_src]
        if self.lost_chunk_once:
            order = [(0, o) for o in later_hist] + src + hist + ([(1, c) for c in read_src] if sources else [])
        else:
            order = [(0, o) for o in later_hist] + hist + (src + [(1, c) for c in read_src] if sources else [])
        # `budget` walks the scheduler's queue (costly with 1,000 calls in it), so between releases it is
        # bounded from above by the last exact figure plus the pool's newly free blocks (a release can only
        # add evictable hits to what queued calls take) and computed exactly only when that bound reaches
        # `need`: the loop stops at the same release as with an exact budget every time
        free0 = self.pool.num_free
        freed = 0
        for kind, o in order:
            if budget + self.pool.num_free - free0 >= need:
                budget, free0 = self.budget(), self.pool.num_free
                if budget >= need:
                    break
            if kind == 1:
                freed += self.src_pins.release(o)
                self.lost.add(o)
                self.c["lost_chunks"] += 1
                continue
            n = self.pins.release(o)
            if n:
                freed += n
                self.c["released_histories"] += 1
                r = int(self.ag.next[o])
                if r in self.queued:  # handed to the scheduler: its history may now be evicted before it runs
                    self.queued[r] = self.blocks_to_admit(r) + self.tail_need(r)
                    budget, free0 = self.budget(), self.pool.num_free  # queued grew: the bound is resynced
        return freed

    def lost_tokens(self, chunks) -> int:
        """Tokens beyond the selection rule's that reusing `chunks` recomputes: all of a lost chunk's."""
        return sum(int(self.ag.out_tokens[c]) - int(self.keys.n_rec[c]) for c in chunks if c in self.lost)

    def unblock_waiting(self) -> None:
        """The head of the scheduler's queue does not fit while idle histories or chunk sources are held:
        let go of them (`make_room`) before the head waits for running calls to finish. A call in line
        comes before the reuse of a later one (vLLM admits it by evicting cached blocks); without this,
        pins of finished calls fill the pool and the round serializes (1,000 agents)."""
        sched = self.sched
        if not sched.num_waiting or not (self.pins.total or self.src_pins.total):
            return
        head = int(sched.waiting[0])
        need = self.blocks_to_admit(head)
        short = need - (self.pool.num_free - self.running_need())
        if short > 0:  # make_room asks the budget, which counts every call in the queue: ask for the shortfall
            self.make_room(self.budget() + short, keep={int(self.ag.prev[head])}, sources=True)

    def land_history(self, r: int) -> int:
        """Blocks of call r's history evicted since its agent's last call: allocated and cached now, their
        prefill charged to the step that admits r (the reused region after them stays reusable: the
        chunks are position-independent); returns how many."""
        hashes = self.sched.hashes.first(r, self.hist_blocks(r))
        cached = self.pool._cached
        miss = [j for j, h in enumerate(hashes) if h not in cached]
        if not miss:
            return 0
        self.land(int(self.ag.prev[r]), [hashes[j] for j in miss])
        tok = len(miss) * self.bs
        self.charge(r, tok, miss[0] * self.bs, 0.0)
        self.c["history_recompute_tokens"] += tok
        return len(miss)

    def charge(self, r: int, tokens: int, context: int, nbytes: float) -> None:
        """Add reuse work of call r (prefill of `tokens` after `context`, `nbytes` of KV corrected) to
        what the step that runs it is charged (`take_charge`)."""
        w = self.uncharged.get(r, ([], [], 0.0))
        self.uncharged[r] = (w[0] + [int(tokens)], w[1] + [int(context)], w[2] + float(nbytes))

    def missing_history(self, r: int) -> int:
        return self.missing(self.sched.hashes.first(r, self.hist_blocks(r)))

    def relieve(self, now: float, need_idle: bool = False) -> bool:
        """Admission is stuck with nothing running: let go of histories, then chunk sources, until the head
        of the queue fits (`make_room`); if nothing of those is left, of the masters and diffs of rounds
        still held (their calls not yet admitted are served without reuse: `fallback`)."""
        sched = self.sched
        head = int(sched.waiting[0]) if sched.num_waiting else None
        need = -(-int(sched.num_tokens[head]) // self.bs) if head is not None else 0
        keep = {int(self.ag.prev[head])} if head is not None else set()
        short = need - (self.pool.num_free - self.running_need())
        freed = self.make_room(self.budget() + short, keep, sources=True, granted=True) if short > 0 else 0
        if self.pool.num_free - self.running_need() < need:
            for rd in sorted(self.owners):
                for o in self.owners.pop(rd):
                    freed += self.src_pins.release(o) + self.master_pins.release(o)
                self.unsourced.add(rd)
        if freed:
            self.c["relieved"] += 1
        return freed > 0

    def fallback(self) -> None:
        """Held calls of rounds whose chunks were let go enter without reuse."""
        keep = []
        for r, t in self.held:
            if int(self.ag.round[r]) in self.unsourced:
                self.c["fallback_calls"] += 1
                self.queued[r] = self.tail_need(r)
                self.loop.admit(r, t)
            else:
                keep.append((r, t))
        self.held = keep

    def quiet(self) -> bool:
        return not self.held and not self.uncharged

    def pending_work(self) -> bool:
        return bool(self.held)

    def pinned_only(self) -> int:
        return self.pins.pinned_only(self.src_pins, self.master_pins)

    def charged_prompt_tokens(self) -> int:
        return int(self.c["recompute_tokens"] + self.c["history_recompute_tokens"])

    def flush(self, now: float) -> None:
        """Nothing runs and the held calls' reuse does not fit: serve them without reuse (counted)."""
        for r, t in self.held:
            self.c["fallback_calls"] += 1
            self.loop.admit(r, t)
            self.queued[r] = self.tail_need(r)
        self.held = []

    def budget(self) -> int:
        """Blocks the runtime may still hand out: free (or evictable) blocks less what running calls and
        calls in the scheduler's queue will take (those it admitted: `queued`; those back in the queue
        after a preemption: their blocks not cached)."""
        back = 0
        if len(self.queued) < self.sched.num_waiting:
            for r in self.sched.waiting:
                if r not in self.queued:
                    back += self.blocks_to_admit(int(r))
        return self.pool.num_free - self.running_need() - sum(self.queued.values()) - back

    def blocks_to_admit(self, r: int) -> int:
        """Free blocks the scheduler's admission of call r takes (its blocks not hit, and the hit blocks
        it takes off the free queue)."""
        hit = cached_prefix(self.pool, self.prompt_hashes(r))
        return -(-int(self.sched.num_tokens[r]) // self.bs) - len(hit) \
            + self.pool.num_evictable(np.asarray(hit, np.int32))

    def land(self, owner: int, hashes: list[int], pins=None) -> int:
        """Allocate and cache blocks for those of `hashes` not cached yet (their KV is written by the
        reuse step); returns how many were allocated."""
        cached = self.pool._cached
        new, seen = [], set()
        for h in hashes:
            if h not in cached and h not in seen:
                seen.add(h)
                new.append(h)
        if new:
            pins = self.pins if pins is None else pins
            pins.allocate(owner, new)
            pins.land(owner)
        return len(new)

    def missing(self, hashes: list[int]) -> int:
        cached = self.pool._cached
        return len({h for h in hashes if h not in cached})

    def take_charge(self, batch):
        """The reuse work of calls in this batch not charged yet: (new tokens, contexts, bytes) or None."""
        if not self.uncharged:
            return None
        new, ctx, nbytes = [], [], 0.0
        for r in batch.request_ids.tolist():
            w = self.uncharged.pop(r, None)
            if w is not None:
                new += w[0]
                ctx += w[1]
                nbytes += w[2]
        if not new and nbytes <= 0:
            return None
        keep = [i for i, x in enumerate(new) if x > 0]
        return (np.asarray([new[i] for i in keep], np.int64), np.asarray([ctx[i] for i in keep], np.int64), nbytes)

    def counters(self) -> dict:
        out = dict(self.c)
        out["compression"] = (out["region_blocks"] / out["stored_region_blocks"]
                              if out["stored_region_blocks"] else float("nan"))
        return out


class Pic(_ReuseRuntime):
    """``pic``: per-request position-independent caching (module docstring)."""
    name = "pic"

    def before_step(self, now: float) -> None:
        self.unblock_waiting()
        if self.unsourced:
            self.fallback()
        if not self.held:
            return
        keep = []
        for i, (r, t) in enumerate(self.held):
            hashes = self.region_hashes(r)
            owner = int(self.ag.prev[r])
            need = self.missing_history(r) + self.missing(hashes) + self.tail_need(r)
            if need > self.budget():
                self.make_room(need, keep={owner})
            if need > self.budget():
                keep = self.held[i:]
                break
            self.land_history(r)
            self.land(owner, hashes)
            plan = self.plan(int(self.ag.round[r]))
            lost = self.lost_tokens(self.ag.chunks(r).tolist())
            rec = plan.pic_recompute[r] + lost
            self.c["lost_chunk_tokens"] += lost
            region = int(self.ag.region_tokens[r])
            nbytes = region * self.kv_tok_bytes
            ctx = int(self.ag.hist_tokens[r]) + region - rec
            self.charge(r, rec, ctx, nbytes)
            self.c["recompute_tokens"] += rec
            self.c["reused_tokens"] += region
            self.c["correction_bytes"] += nbytes * self.gpus
            nb = len(hashes)
            self.c["region_blocks"] += nb
            self.c["stored_region_blocks"] += nb  # a private copy per agent
            self.c["reuse_calls"] += 1
            self.queued[r] = self.tail_need(r)
            self.loop.admit(r, t)
        self.held = keep


class TokenDance(_ReuseRuntime):
    """``tokendance``: KV Collector + Diff-Aware Storage (module docstring)."""
    name = "tokendance"
    collective = True
    lost_chunk_once = True

    def __init__(self, loop, params, path=None):
        super().__init__(loop, params, path)
        sched = self.sched
        sched.hashes = LayoutHashes(loop.table, self.keys, self.bs, sched.output_tokens, sched.hashes.fallback
                                    if isinstance(sched.hashes, DagHashes) else sched.hashes)
        self.built: set[int] = set()  # rounds whose Diff-Aware Storage is open (`_open_round`)
        self.collected: set[int] = set()  # chunks whose master blocks a pass landed
        self.covered: set[int] = set()  # calls whose master chunks and diffs a pass landed
        kv = loop.kv
        self.kvt = kv if kv is not None and getattr(kv, "U", 0) else None  # a tiered KV with PIM units
        self.tiers = self.kvt if params.placement_roles != "off" else None  # ... where the roles are set
        self.eager = params.placement_roles == "eager"
        self.idle: dict[int, list[int]] = {}  # finished call -> its blocks marked idle (ROLE_CAPACITY)
        self.diff_set: set[int] = set()  # the blocks of the latest collected round's diffs
        self.sampled: set[int] = set()  # rounds whose master placement was sampled (`sample_master`)
        self.c.update(master_pim_blocks=0, master_placed_blocks=0, diff_capacity_blocks=0, diff_placed_blocks=0,
                      master_pim_blocks_running=0)

    def _blocks_of(self, hashes) -> list[int]:
        cached = self.pool._cached
        return [int(cached[h]) for h in dict.fromkeys(hashes) if h in cached]

    def finished(self, r: int, t: float) -> None:
        rd = int(self.ag.round[r])
        if rd not in self.sampled and rd in self.built:  # the round's first call done: decode under way
            self.sampled.add(rd)
            self.sample_master(rd)
        super().finished(r, t)
        kv = self.tiers
        if kv is None or int(self.ag.next[r]) < 0:
            return
        # what only this agent reads (one holder: its history and output; not S, shared by all) idles in capacity
        own = [b for b in self.pins.blocks(r) + self.src_pins.blocks(r) if len(kv.holders[b] or ()) == 1]
        if own:
            kv.prefer(own, ROLE_CAPACITY, move=False)  # lazily: the first to leave a full PIM unit
            self.idle[r] = own

    def admitted(self, rs, t):
        kv = self.tiers
        if kv is not None:
            for r in rs:
                own = self.idle.pop(int(self.ag.prev[r]), None)
                if own:
                    diffs = self.diff_set
                    kv.prefer([b for b in own if b not in diffs and kv.holders[b]], ROLE_NONE)
        super().admitted(rs, t)

    def sample_master(self, rd: int) -> None:
        """Where round rd's master blocks are when its first call finishes (``master_pim_blocks_running`` of
        ``master_placed_blocks``: the moves since the collective step included)."""
        kv = self.kvt
        if kv is None:
            return
        master = self._blocks_of(self.plans[rd].master)
        self.c["master_pim_blocks_running"] += int(((kv.loc[master] >= 0) & (kv.loc[master] < kv.U)).sum())

    def _role(self, role: int) -> None:
        if self.tiers is not None:
            self.tiers.roles_used = True
            self.tiers.new_role = role

    def _place(self, master_keys: list[int], diffs: dict) -> None:
        """Where a collective pass's master and diff blocks are (module docstring): marked first (those
        cached from before are moved now), then counted."""
        kv = self.kvt
        master = self._blocks_of(master_keys)
        dblocks = self._blocks_of(k for d in diffs.values() for k in d)
        if self.tiers is not None:
            kv.prefer(master, ROLE_MASTER)
            kv.prefer(dblocks, ROLE_CAPACITY, move=self.eager)
            self.diff_set.update(dblocks)
        loc = kv.loc
        self.c["master_pim_blocks"] += int(((loc[master] >= 0) & (loc[master] < kv.U)).sum()) if master else 0
        self.c["diff_capacity_blocks"] += int((loc[dblocks] == kv.CAP).sum()) if dblocks else 0
        self.c["master_placed_blocks"] += len(master)
        self.c["diff_placed_blocks"] += len(dblocks)

    def _window_need(self, plan: RoundPlan, r: int, pending: set) -> tuple[int, list[int]]:
        """Blocks that taking call r into a collective pass takes beyond what the pass has already
        (`pending` chunks): its master chunks not collected yet, net of their sources (let go once read),
        its diffs, its own history and tail; and those chunks."""
        new_c = [c for c in self.ag.chunks(r).tolist() if c not in self.collected and c not in pending]
        nb = 0
        for c in new_c:
            a, b = plan.master_at[c]
            nb += self.missing(plan.master[a:b]) - len(self.src_pins.blocks(c))
        return nb + self.missing(plan.diffs[r]) + self.missing_history(r) + self.tail_need(r), new_c

    def collect(self, t: int) -> int:
        """The KV Collector for round t: one collective pass over the held calls of round t not covered
        yet, in line order, as many as the pool has room for (with the pool large enough: all of them,
        one pass per round); a pass corrects and recomputes the master chunks its calls reuse that no
        earlier pass collected, and their diffs. Returns the calls covered."""
        plan = self.plan(t)
        if t not in self.built:
            self._open_round(t, plan)
        calls = [r for r, _ in self.held if int(self.ag.round[r]) == t and r not in self.covered]
        if not calls:
            return 0
        # the master is corrected from the sources chunk by chunk, each source let go once its chunk is
        # written: at most one chunk's blocks beyond the sources at any time
        peak = int(self.keys.blocks.max(initial=0))
        need, first = self._window_need(plan, calls[0], set())
        if need + peak > self.budget():
            self.make_room(need + peak)
            if need + peak > self.budget():
                return 0
        chosen, chunks, total = [calls[0]], list(first), need
        pending = set(first)
        room = self.budget() - peak
        for r in calls[1:]:
            need, new_c = self._window_need(plan, r, pending)
            if total + need > room:
                break
            total += need
            chosen.append(r)
            chunks += new_c
            pending.update(new_c)
        self._pass(t, plan, chosen, sorted(chunks, key=lambda c: plan.master_at[c][0]))
        return len(chosen)

    def _open_round(self, t: int, plan: RoundPlan) -> None:
        """Round t's Diff-Aware Storage (exact block tables of every call; what the pool holds at a time
        follows the passes) and its storage counters."""
        store = DiffStore(plan.master)
        for r in plan.calls.tolist():
            store.add(r, plan.region[r])
        self.stores[t] = store
        self.diff_set = set()
        self.c["region_blocks"] += store.logical_blocks
        self.c["stored_region_blocks"] += store.stored_blocks
        self.c["master_blocks"] += len(store.master)
        self.c["diff_blocks"] += store.diff_blocks
        self.built.add(t)

    def _pass(self, t: int, plan: RoundPlan, calls: list[int], chunks: list[int]) -> None:
        """One collective pass: land `chunks`' master blocks (each source let go once read) and the diffs
        of `calls`; the pass's recompute and correction are charged to the step that runs its first call."""
        self._role(ROLE_MASTER)  # written into the PIM units (module docstring: placement)
        keys = []
        for c in chunks:  # the master's blocks, each chunk held for the call that generated it
            a, b = plan.master_at[c]
            keys += plan.master[a:b]
            self.land(c, plan.master[a:b], self.master_pins)
            self.src_pins.release(c)  # the source is read: its chunk lives on in the master
            self.collected.add(c)
        self._role(ROLE_CAPACITY if self.eager else ROLE_NONE)  # diffs: into the capacity layers (eager)
        for r in calls:  # held with the master (the round's Diff-Aware Storage), not with the history
            self.land(int(self.ag.prev[r]), plan.diffs[r], self.master_pins)
        self._role(ROLE_NONE)
        lost = self.lost_tokens(chunks)  # recomputed whole, once, by the collector
        self.c["lost_chunk_tokens"] += lost
        rec = int(self.keys.n_rec[chunks].sum()) + lost if chunks else 0
        tokens = int(self.ag.padded(self.ag.out_tokens[chunks]).sum()) if chunks else 0
        nbytes = tokens * self.kv_tok_bytes
        self.charge(calls[0], rec, tokens - rec, nbytes)
        diff_tokens = 0
        for r in calls:
            d = plan.diff_recompute[r]
            diff_tokens += d
            self.charge(calls[0], d, int(self.ag.hist_tokens[r] + self.ag.region_tokens[r]) - d, 0.0)
        self.covered.update(calls)
        if self.kvt is not None:
            self._place(keys, {r: plan.diffs[r] for r in calls})
        self.c["collective_steps"] += 1
        self.c["recompute_tokens"] += rec + diff_tokens
        self.c["reused_tokens"] += int(sum(int(self.ag.region_tokens[r]) for r in calls))
        self.c["correction_bytes"] += nbytes * self.gpus
        self.c["reuse_calls"] += len(calls)

    def before_step(self, now: float) -> None:
        self.unblock_waiting()
        if self.unsourced:
            self.fallback()
        if not self.held:
            return
        t = int(self.ag.round[self.held[0][0]])
        if self.held[0][0] not in self.covered and not self.collect(t):
            return
        keep = []
        for i, (r, tr) in enumerate(self.held):
            if r not in self.covered:
                self.collect(t)  # the next pass, if the pool has room for it now
                if r not in self.covered:
                    keep = self.held[i:]
                    break
            owner = int(self.ag.prev[r])
            need = self.missing_history(r) + self.missing(self.region_hashes(r)) + self.tail_need(r)
            if need > self.budget():
                self.make_room(need, keep={owner})
            if need > self.budget():
                keep = self.held[i:]
                break
            self.land_history(r)
            self.queued[r] = self.missing(self.region_hashes(r)) + self.tail_need(r)
            self.loop.admit(r, tr)
        self.held = keep


def round_rows(table, requests) -> list[dict]:
    """One row per round of an All-Gather run from its per-request results: calls, prefill time (the
    round's release to its last call's first token), span (release to its last call's end), p95 TTFT."""
    rows = []
    for t, calls in enumerate(table.ag.round_calls):
        rel = requests["arrival_s"][calls]
        first = requests["first_token_s"][calls]
        fin = requests["finish_s"][calls]
        start = float(np.nanmin(rel))
        ttft = first - rel
        rows.append({"round": t, "calls": len(calls), "prefill_s": float(np.nanmax(first)) - start,
                     "span_s": float(np.nanmax(fin)) - start, "ttft_p95_s": float(np.nanpercentile(ttft, 95)),
                     "ttft": ttft})
    return rows


def round_metrics(table, requests) -> dict:
    """Per-round figures of an All-Gather run from its per-request results: prefill time per round (the
    round's release to its last call's first token; rounds >= 1, where R is reused), the round's span
    (release to its last call's end), the p95 TTFT of rounds >= 1."""
    later = round_rows(table, requests)[1:]
    pre = [x["prefill_s"] for x in later]
    span = [x["span_s"] for x in later]
    ttft = [v for x in later for v in x["ttft"].tolist()]
    return {"round_prefill_s": float(np.mean(pre)) if pre else math.nan,
            "round_span_s": float(np.mean(span)) if span else math.nan,
            "ttft_p95_s": float(np.nanpercentile(ttft, 95)) if ttft else math.nan}


def round_storage(table, block_size: int, layout: str, ratio: float = RECOMPUTE_RATIO) -> list[dict]:
    """Per round: the KV blocks every agent's cache (prompt + output) takes if all are resident at once,
    counted exactly as distinct block contents (equal content is one block, as in the prefix cache):
    ``private`` (vllm, pic: every agent its own copy of R; S and each agent's own history shared by
    hash) or ``tokendance`` (R as master + diffs). Returns dicts with ``blocks`` and ``per_agent_blocks``."""
    if layout not in ("private", "tokendance"):
        raise InputError(f"expected private or tokendance, got {layout!r}", where="layout")
    out_tok = table.rows["output_tokens"].astype(np.int64)
    if layout == "private":
        hashes = DagHashes(table.dag, block_size, out_tok, None)
    else:
        hashes = LayoutHashes(table, ChunkKeys(table.ag, block_size, ratio), block_size, out_tok, None)
    res = []
    for calls in table.ag.round_calls:
        blocks = set()
        for r in calls.tolist():
            blocks.update(hashes.flat[hashes.offsets[r]:hashes.offsets[r + 1]].tolist())
        res.append({"blocks": len(blocks), "per_agent_blocks": len(blocks) / len(calls)})
    return res
