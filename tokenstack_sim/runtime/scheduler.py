"""A vLLM-V1-like continuous-batching scheduler (``vllm/v1/core/sched/scheduler.py``), and the registry.

One step (serving.md §2.2), chunked prefill always on:
1. Running requests in order: each is offered its remaining tokens (prefill chunk, a resumed request's
   recompute, or 1 decode token), capped by ``long_prefill_token_threshold`` and by what is left of the
   token budget. A request that cannot get its KV blocks preempts the newest running request
   (``running.pop()``): its blocks are freed with their hashes kept, ``num_computed_tokens = 0``, and it
   is prepended to the waiting queue; retry until the allocation succeeds or the request preempted
   itself (V1 is recompute-only).
2. Only if nothing was preempted this step: waiting requests in FCFS order while the budget lasts and
   fewer than ``max_num_seqs`` run. Admission = prefix lookup (capped at num_tokens − 1) + allocation of
   the blocks for the first chunk; a failed allocation stops admission and never preempts.
Full blocks get their hash when the step that fills them is scheduled (vLLM ``cache_blocks`` inside
``allocate_slots``), so a request admitted later in the same step can already hit them.
A request emits a token in a step whose chunk reaches all of its known tokens; it finishes in
`finish_step` when it has emitted ``output_tokens`` tokens (a request with 0 output tokens finishes when
its prompt is computed, emitting nothing). Its blocks are then freed (hashes kept for reuse).

``max_num_partial_prefills`` is V0's limit on concurrent partial prefills (V1 accepts only 1): a waiting
request whose first chunk would leave its prefill unfinished is not admitted while that many running
requests have unfinished prefills. With ``long_prefill_token_threshold = 0`` it never binds (only the
request that exhausts the budget can be left partial), which matches V1.
Leaves out: priority scheduling, max_model_len, speculative decoding, KV connectors, structured output,
encoder inputs, stop strings (requests always run to their output length), async scheduling.

Speed: the running part is vectorized over the running set; Python loops run only per admitted or
finished request and per newly allocated or newly full block (a decode step fills ~1 block per
``block_size`` requests). The rare step that runs out of blocks falls back to vLLM's sequential loop.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.kv.block_pool import BlockPool
from tokenstack_sim.kv.request_hashes import RequestHashes
from tokenstack_sim.runtime.params import SchedulerParams
from tokenstack_sim.workload.table import RequestTable

PENDING, WAITING, RUNNING, FINISHED = 0, 1, 2, 3  # request status codes

_EMPTY_I = np.zeros(0, dtype=np.int64)


@dataclass
class Batch:
    """What one step runs. Arrays are aligned, one entry per scheduled request (running ones first, in
    running order, then newly admitted ones); counters describe the scheduling decision."""

    request_ids: np.ndarray  # int64
    new_tokens: np.ndarray  # int64, tokens computed this step (prefill chunk, recompute or 1 decode)
    context_tokens: np.ndarray  # int64, tokens already computed (KV present) before this step
    emits: np.ndarray  # bool, the request samples an output token at the end of this step
    preemptions: int  # requests preempted while scheduling this step
    prefix_hit_tokens: int  # tokens found in the prefix cache by requests admitted this step
    kv_blocks_in_use: int  # blocks with ref_cnt > 0 after scheduling
    num_running: int  # running requests after scheduling (scheduled or not)
    num_waiting: int  # waiting requests after scheduling (arrived, not running)

    @property
    def size(self) -> int:
        return len(self.request_ids)

    @property
    def num_tokens(self) -> int:
        return int(self.new_tokens.sum())


class Scheduler(Protocol):
    """What the serving loop needs from a scheduler."""

    def add_request(self, request_id: int) -> None: ...

    def schedule(self) -> Batch: ...

    def finish_step(self, batch: Batch, end_time_s: float) -> np.ndarray: ...

    @property
    def num_running(self) -> int: ...

    @property
    def num_waiting(self) -> int: ...


class VllmScheduler:
    """See the module docstring. Per-request state is held in arrays indexed by request id."""

    def __init__(self, table: RequestTable, params: SchedulerParams):
        self.params = params
        bs = params.block_size
        self.table = table
        rows = table.rows
        n = len(table)
        self.pool = BlockPool(params.num_kv_blocks, bs)
        self.hashes = RequestHashes(table, bs) if params.enable_prefix_caching else None
        self.input_tokens = rows["input_tokens"].astype(np.int64)
        self.output_tokens = rows["output_tokens"].astype(np.int64)
        self.generated = np.zeros(n, dtype=np.int64)
        self.num_tokens = self.input_tokens.copy()  # prompt + sampled tokens known so far
        self.computed = np.zeros(n, dtype=np.int64)  # num_computed_tokens
        # Prefill (or a resumed request's recompute) not yet finished: set on admission, cleared when the
        # request samples a token or finishes (max_num_partial_prefills counts these).
        self.in_prefill = np.zeros(n, dtype=bool)
        self.num_blocks = np.zeros(n, dtype=np.int64)  # length of the block table
        self.num_hashed = np.zeros(n, dtype=np.int64)  # leading blocks of the table already cached
        self.status = np.zeros(n, dtype=np.int8)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.prefix_hit_tokens = np.zeros(n, dtype=np.int64)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.block_tables: list[list[int] | None] = [None] * n
        self.running = _EMPTY_I
        self.waiting: deque[int] = deque()
        self.total_preemptions = 0
        self.total_prefix_hit_tokens = 0
        self.total_finished = 0
        # Where blocks live across tiers (kv/tiered.py), told of every allocation, hit and release; None
        # when the system has one undivided pool.
        self.kv = None

    # ---- protocol ------------------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def add_request(self, request_id: int) -> None:
        if self.status[request_id] != PENDING:
            raise ValueError(f"request {request_id} was already added")
        self.status[request_id] = WAITING
        self.block_tables[request_id] = []
        self.waiting.append(int(request_id))

    def schedule(self) -> Batch:
        p = self.params
        bs = p.block_size
        pool = self.pool
        budget = p.max_num_batched_tokens
        preempted = 0
        run_ids, run_take = _EMPTY_I, _EMPTY_I
        run = self.running
        if len(run):
            need = self.num_tokens[run] - self.computed[run]
            if p.long_prefill_token_threshold > 0:
                need = np.minimum(need, p.long_prefill_token_threshold)
            start = np.cumsum(need) - need
            take = np.clip(budget - start, 0, need)
            m = int(np.count_nonzero(take))  # need >= 1, so the scheduled ones are a prefix
            run_ids, run_take = run[:m], take[:m]
            want = np.maximum(-(-(self.computed[run_ids] + run_take) // bs) - self.num_blocks[run_ids], 0)
            total = int(want.sum())
            if total <= pool.num_free:
                if total:
                    self._grant(run_ids, want, pool.allocate(total))
            else:
                run_ids, run_take, preempted = self._schedule_running_slow(run_ids, run_take, want)
            budget -= int(run_take.sum())
            self._cache_full(run_ids, run_take)

        adm_ids, adm_take, adm_ctx, hit_total = self._admit(budget, run_ids, run_take) if preempted == 0 \
            else (_EMPTY_I, _EMPTY_I, _EMPTY_I, 0)

        ids = np.concatenate([run_ids, adm_ids]) if len(adm_ids) else run_ids
        take = np.concatenate([run_take, adm_take]) if len(adm_ids) else run_take
        ctx = np.concatenate([self.computed[run_ids], adm_ctx]) if len(adm_ids) else self.computed[run_ids]
        emits = (ctx + take == self.num_tokens[ids]) & (self.output_tokens[ids] > 0)
        self.total_preemptions += preempted
        self.total_prefix_hit_tokens += hit_total
        return Batch(ids, take, ctx, emits, preempted, hit_total, pool.num_in_use,
                     len(self.running), len(self.waiting))

    def finish_step(self, batch: Batch, end_time_s: float) -> np.ndarray:
        """Advance the batch's requests to the end of the step at ``end_time_s``; returns the ids of
        the requests that finished (their blocks are freed, full-block hashes kept)."""
        ids = batch.request_ids
        if len(ids) == 0:
            return _EMPTY_I
        self.computed[ids] += batch.new_tokens
        e = ids[batch.emits]
        self.generated[e] += 1
        self.in_prefill[e] = False
        self.num_tokens[e] += 1
        first = e[np.isnan(self.first_token_s[e])]
        self.first_token_s[first] = end_time_s
        done = e[self.generated[e] >= self.output_tokens[e]]
        silent = ids[(self.output_tokens[ids] == 0) & (self.computed[ids] >= self.input_tokens[ids])]
        if len(silent):
            done = np.concatenate([done, silent])
        if len(done):
            for r in done.tolist():
                if self.kv is not None:
                    self.kv.released(r, self.block_tables[r])
                self.pool.free(np.asarray(self.block_tables[r], dtype=np.int32))
                self.block_tables[r] = None
            self.status[done] = FINISHED
            self.in_prefill[done] = False
            self.finish_s[done] = end_time_s
            self.num_blocks[done] = 0
            self.total_finished += len(done)
            self.running = self.running[self.status[self.running] == RUNNING]
        return done

    # ---- fast path: consecutive pure-decode steps ------------------------------------------------------
    def decode_run_length(self) -> int:
        """How many consecutive steps from now are pure decode steps of the whole running set in which
        nothing but block allocation can change the batch: every running request decodes (one known
        token left to compute, first token out), none finishes, none waits, the token budget does
        not bind. 0 where that does not hold. Block exhaustion is checked step by step in
        `decode_step`; arrivals by the caller."""
        run = self.running
        B = len(run)
        p = self.params
        if B == 0 or self.waiting or B > p.max_num_batched_tokens:
            return 0
        bs = p.block_size
        c = self.computed[run]
        if np.any(self.num_tokens[run] - c != 1) or np.any(self.in_prefill[run]):
            return 0
        gen = self.generated[run]
        if np.any(gen < 1):
            return 0
        nb = self.num_blocks[run]
        if np.any(nb != -(-c // bs)):
            return 0
        if self.hashes is not None and np.any(self.num_hashed[run] != c // bs):
            return 0
        k = int((self.output_tokens[run] - gen).min()) - 1  # the step that finishes one is left out
        if k <= 0:
            return 0
        # request positions (running order) that allocate a block at step j: (c + j) % bs == 0
        res = (-c) % bs
        order = np.argsort(res, kind="stable")
        bounds = np.searchsorted(res[order], np.arange(bs + 1))
        self._ff_groups = [order[bounds[r]:bounds[r + 1]] for r in range(bs)]
        self._ff_run = run
        self._ff_c = c
        self._ff_ones = np.ones(B, dtype=np.int64)
        self._ff_emits = np.ones(B, dtype=bool)
        self._ff_cycle = -1  # block-size cycle whose hashes _ff_hash holds
        return k

    def decode_step(self, j: int) -> Batch | None:
        """Schedule step ``j`` of the run measured by `decode_run_length` as `schedule` would: allocate
        the blocks of the requests crossing a block boundary and hash the blocks this step fills, in
        running order. None (nothing changed) where the allocation would not fit: the normal path takes
        over. Request counters advance in `decode_finish`."""
        bs = self.params.block_size
        run = self._ff_run
        a = self._ff_groups[j % bs]
        pool = self.pool
        if len(a):
            if len(a) > pool.num_free:
                return None
            ids = run[a]
            new = pool.allocate(len(a))
            blk = new.tolist()
            tables = self.block_tables
            for r, b in zip(ids.tolist(), blk):
                tables[r].append(b)
            self.num_blocks[ids] += 1
            if self.kv is not None:
                self.kv.allocated(ids, new, ahead=j)
        if self.hashes is not None:
            h = self._ff_groups[(j + 1) % bs]
            if len(h):
                # within one cycle of block_size steps every running request fills exactly one block: its
                # hash comes from the whole running set's, computed at the cycle's first use
                cycle = (j + 1) // bs
                if cycle != self._ff_cycle:
                    self._ff_cycle = cycle
                    self._ff_hash = self.hashes.at(run, self.num_hashed[run])
                reqs = run[h]
                have = self.num_hashed[reqs]
                tables = self.block_tables
                blocks = [tables[r][i] for r, i in zip(reqs.tolist(), have.tolist())]
                self.pool.cache(np.asarray(blocks, dtype=np.int32), self._ff_hash[h])
                self.num_hashed[reqs] = have + 1
        return Batch(run, self._ff_ones, self._ff_c + j, self._ff_emits, 0, 0, pool.num_in_use, len(run), 0)

    def decode_finish(self, steps: int) -> None:
        """Advance the running requests by ``steps`` decode steps taken with `decode_step`."""
        if steps:
            run = self._ff_run
            self.computed[run] += steps
            self.generated[run] += steps
            self.num_tokens[run] += steps

    # ---- helpers -------------------------------------------------------------------------------------
    def _grant(self, ids: np.ndarray, want: np.ndarray, blocks: np.ndarray) -> None:
        """Append ``blocks`` (in order) to the tables of ``ids``, ``want[i]`` each."""
        tables = self.block_tables
        blk = blocks.tolist()
        pos = 0
        sel = np.flatnonzero(want)
        for r, w in zip(ids[sel].tolist(), want[sel].tolist()):
            tables[r].extend(blk[pos:pos + w])
            pos += w
        self.num_blocks[ids] += want
        if self.kv is not None:
            self.kv.allocated(np.repeat(ids, want), blocks)

    def _cache_full(self, ids: np.ndarray, take: np.ndarray) -> None:
        """Give the blocks that this step fills their hashes (vLLM caches them in allocate_slots)."""
        if self.hashes is None or len(ids) == 0:
            return
        bs = self.params.block_size
        full = np.minimum(self.computed[ids] + take, self.num_tokens[ids]) // bs
        have = self.num_hashed[ids]
        count = full - have
        sel = np.flatnonzero(count > 0)
        if len(sel) == 0:
            return
        reqs = ids[sel]
        cnt = count[sel]
        flat_req = np.repeat(reqs, cnt)
        offsets = np.cumsum(cnt) - cnt
        idx = np.repeat(have[sel] - offsets, cnt) + np.arange(int(cnt.sum()), dtype=np.int64)
        tables = self.block_tables
        blocks: list[int] = []
        for r, a, b in zip(reqs.tolist(), have[sel].tolist(), full[sel].tolist()):
            blocks.extend(tables[r][a:b])
        self.pool.cache(np.asarray(blocks, dtype=np.int32), self.hashes.at(flat_req, idx))
        self.num_hashed[reqs] = full[sel]

    def _preempt(self, r: int) -> None:
        if self.kv is not None:
            self.kv.released(r, self.block_tables[r])
        self.pool.free(np.asarray(self.block_tables[r], dtype=np.int32))
        self.block_tables[r] = []
        self.num_blocks[r] = 0
        self.num_hashed[r] = 0
        self.computed[r] = 0
        self.status[r] = WAITING
        self.preemptions[r] += 1
        self.waiting.appendleft(r)

    def drop_kv(self, requests) -> None:
        """Preempt the running `requests` whose KV was lost to a fault (robust/perturb.py), as vLLM's
        recompute preemption does (`_preempt`); they go back to the head of the waiting queue in their
        running order. Counted as preemptions. Waiting requests hold no KV and are left alone."""
        lost = set(int(r) for r in requests)
        if not lost:
            return
        run = self.running.tolist()
        victims = [r for r in run if r in lost]
        for r in reversed(victims):
            self._preempt(r)
        self.running = np.asarray([r for r in run if r not in lost], dtype=np.int64)
        self.total_preemptions += len(victims)

    def _schedule_running_slow(self, ids, take, want):
        """vLLM's sequential loop for a step that runs out of blocks: preempt the newest running
        request until the allocation fits or the request preempted itself."""
        pool = self.pool
        running = self.running.tolist()
        out_ids, out_take = [], []
        preempted = 0
        ids_l, take_l, want_l = ids.tolist(), take.tolist(), want.tolist()
        i = 0
        while i < min(len(ids_l), len(running)):
            r, w = ids_l[i], want_l[i]
            stopped = False
            while w > pool.num_free:
                victim = running.pop()
                self._preempt(victim)
                preempted += 1
                if victim == r:
                    stopped = True
                    break
            if stopped:
                break
            if w:
                self._grant(np.array([r]), np.array([w]), pool.allocate(w))
            out_ids.append(r)
            out_take.append(take_l[i])
            i += 1
        self.running = np.asarray(running, dtype=np.int64)
        return np.asarray(out_ids, dtype=np.int64), np.asarray(out_take, dtype=np.int64), preempted

    def _admit(self, budget: int, run_ids: np.ndarray, run_take: np.ndarray):
        p = self.params
        bs = p.block_size
        pool = self.pool
        waiting = self.waiting
        if not waiting or budget <= 0 or len(self.running) >= p.max_num_seqs:
            return _EMPTY_I, _EMPTY_I, _EMPTY_I, 0
        # Running requests whose prefill stays unfinished after this step (for max_num_partial_prefills):
        # in prefill and this step's chunk (if any) does not reach all of their known tokens. A decode
        # request is one token short of its known tokens too, hence the flag rather than a token count.
        run = self.running
        after = self.computed[run].copy()
        after[: len(run_take)] += run_take  # scheduled running requests are a prefix of running
        partial = int(np.count_nonzero(self.in_prefill[run] & (after < self.num_tokens[run])))
        n_running = len(self.running)
        ids, takes, ctxs = [], [], []
        hit_total = 0
        while waiting and budget > 0 and n_running < p.max_num_seqs:
            r = waiting[0]
            ntok = int(self.num_tokens[r])
            if self.hashes is not None:
                hit = pool.lookup(self.hashes.first(r, (ntok - 1) // bs), ntok)
            else:
                hit = []
            hit_tokens = len(hit) * bs
            t = ntok - hit_tokens
            if p.long_prefill_token_threshold > 0:
                t = min(t, p.long_prefill_token_threshold)
            t = min(t, budget)
            is_partial = hit_tokens + t < ntok  # it will not emit this step
            if is_partial and partial >= p.max_num_partial_prefills:
                break
            hit_arr = np.asarray(hit, dtype=np.int32)
            w = -(-(hit_tokens + t) // bs) - len(hit)
            if w > pool.num_free - pool.num_evictable(hit_arr):
                break  # a failed admission stops admission and never preempts
            pool.touch(hit_arr)
            new = pool.allocate(w)
            if self.kv is not None:
                self.kv.attached(r, hit_arr)
                self.kv.allocated(np.full(w, r), new)
            table = self.block_tables[r]
            table.extend(hit)
            table.extend(new.tolist())
            self.num_blocks[r] = len(table)
            self.num_hashed[r] = len(hit)
            self.computed[r] = hit_tokens
            self.prefix_hit_tokens[r] += hit_tokens
            self.status[r] = RUNNING
            self.in_prefill[r] = True
            waiting.popleft()
            ids.append(r)
            takes.append(t)
            ctxs.append(hit_tokens)
            budget -= t
            hit_total += hit_tokens
            partial += is_partial
            n_running += 1
        if not ids:
            return _EMPTY_I, _EMPTY_I, _EMPTY_I, 0
        adm = np.asarray(ids, dtype=np.int64)
        take = np.asarray(takes, dtype=np.int64)
        self.running = np.concatenate([self.running, adm])
        self._cache_full(adm, take)
        return adm, take, np.asarray(ctxs, dtype=np.int64), hit_total


SchedulerFactory = Callable[[RequestTable, SchedulerParams], Scheduler]

SCHEDULERS: dict[str, SchedulerFactory] = {"vllm": VllmScheduler}


def make_scheduler(name: str, table: RequestTable, params: SchedulerParams) -> Scheduler:
    """The scheduler registered as ``name``; an unknown name lists the known ones."""
    try:
        factory = SCHEDULERS[name]
    except KeyError:
        raise InputError(f"unknown scheduler {name!r}; known: {', '.join(sorted(SCHEDULERS))}",
                         where="scheduler") from None
    return factory(table, params)
