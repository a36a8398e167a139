"""TokenCake (arXiv 2510.18586; serving.md §3.1, claims.md): agent-aware KV scheduling, as a runtime of
the agent serving loop.

Temporal scheduler (``temporal``). When a tool call starts, the call before it (its *owner*) has just
finished; the calls after the tool extend the owner's sequence. The owner's KV (its full computed
blocks, still cached) is held (pinned) instead of being left to the LRU prefix cache. It is offloaded when
    predicted duration x memory pressure >= offload_gain x (offload time + upload time)
and the prediction leaves time for the round trip (pressure = blocks in use / pool, 1 when the first
waiting call does not fit). Offload copies the blocks the store lacks over the offload path (to host
over the host link; on TokenStack to the capacity layers through the base-die DMA, quantized,
`kv_transfer.py`), then lets go of the GPU blocks (their GPU copies stay cached until evicted). The
predictive upload starts so as to land ``upload_margin_s`` before the predicted return: blocks still
cached are pinned again, the rest are copied back, if memory allows it then (the blocks fit beside the
next decode step and, for a non-critical stall, beside the first waiting call); otherwise the KV stays
in the store and the call loads it when it nears the head of the queue (`agent_runtime.StoreLoads`, as
vLLM's KV connector does). On the return:
- uploaded (or never offloaded): the calls are admitted at once; an upload that sat more than
  ``mispredict_tolerance_s`` past its planned landing before the return held memory early (counted,
  with its block-seconds);
- the KV still away: the calls wait for it. Late (a misprediction's cost, counted once per stall): the
  tool returned before the upload landed or started, the wait for an upload in flight is summed in
  ``upload_wait_s``; away (``kv_away_at_return``): the predictive upload found no memory. A call whose
  KV is not uploaded loads it near the head of the queue (its wait in ``load_wait_s``).
A stall not returned by its safety deadline (``deadline_factor`` x prediction, bounded to
[``deadline_min_s``, ``deadline_max_s``], TokenCake docs) lets its KV go. Under memory pressure (the
first waiting call does not fit, or fewer free blocks than running calls) held KV is freed: KV whose
calls are not released yet first, non-critical before critical, furthest predicted return first;
offloaded when the round trip still fits before the predicted return, else dropped to the prefix cache
(a stored copy stays loadable). Mispredictions: returns more than the tolerance off the prediction.
``prediction_error`` > 0 multiplies each tool's predicted duration by a lognormal error (seeded by the
workload's seed) for the temporal scheduler; the spatial scheduler's slack stays the DAG's.

Spatial scheduler (``spatial``). A call is *critical* when its slack to its app's critical path
(predicted times, `agents.critical_path`) is below ``critical_slack_s``. Waiting calls are ordered by a
hybrid priority, recomputed every ``priority_interval_s`` and when the waiting set changes: graph
features (criticality within the app, progress = depth, fan-out, the template's importance mark) and
runtime state (share of the prompt's KV already resident, time waited, the app's age), weights in
`AgentRuntimeParams` ([E]: the paper gives the inputs, not the formula). A reserved pool of up to
``reserve_share`` of the blocks serves critical agents: held KV of critical stalls is freed only beyond
it, and it is reserved progressively for critical stalls' returning KV (ramping in over
``reserve_ramp_s`` before the predicted return; an idle reservation is lent out). Non-critical waiting
calls that would eat into the reservation are held back, but only while their wait stays within their
slack (then holding them back does not delay their app). A call whose KV was just loaded goes first.
The host-side block buffer of TokenCake (sub-ms offload set-up) is what lets an offload cost only its
transfer time here.
Leaves out: the paper's exact priority formula, fine-grained stages inside a function node, duration
histories learned at run time (predictions are the DAG's), partial offload of a stall, and reordering of
running calls for preemption (vLLM's newest-first is kept).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from tokenstack_sim.runtime.agent_runtime import AgentRuntime, StoreLoads
from tokenstack_sim.runtime.agent_scheduler import cached_prefix
from tokenstack_sim.runtime.kv_transfer import Channels, KvStore, store_blocks

HELD, OFFLOADING, OFFLOADED, UPLOADING, READY, DROPPED = "held", "offloading", "offloaded", "uploading", "ready", "dropped"


@dataclass
class Stall:
    owner: int  # the finished call whose KV the waiters extend
    tool: int  # the tool node
    start_s: float
    predicted_end_s: float
    deadline_s: float
    hashes: list  # the owner's full computed blocks
    waiters: set  # calls after the tool that extend the owner's sequence
    critical: bool
    state: str = HELD
    returned_s: float = math.nan
    upload_end_s: float = math.nan
    uploaded: int = 0  # blocks held for the calls after the upload (re-pinned + copied back)
    pending: list = field(default_factory=list)  # (call, ready time) admitted when the upload lands
    late: bool = False  # a call found the KV away at its return (counted once)
    skipped: bool = False  # the predictive upload found no memory (the calls load the KV on demand)
    early: bool = False  # the upload landed well before a call could use it (counted once)
    released: bool = False  # a call after the tool was released (its KV is about to be used)


class TokenCake(AgentRuntime):
    name = "tokencake"

    def __init__(self, loop, params, path=None):
        super().__init__(loop, params, path)
        p = params
        self.ch = Channels(path) if path is not None else None
        self.store = KvStore(store_blocks(path, p.store_gib)) if path is not None else None
        rows = self.sched.table.rows
        self.loads = StoreLoads(self, self.store, self.ch, lambda r: self._owner_of(r, rows)) \
            if path is not None else None
        self.stalls: dict[int, Stall] = {}
        self.waiting_on: dict[int, Stall] = {}  # call -> the stall whose KV it extends
        self.deferred: list[int] = []
        self._next_priority_s = -math.inf
        self._preempts = 0
        self._waiting_seen = 0
        self._resident: dict[int, float] = {}
        self._need: dict[int, int] = {}
        d = self.dag
        self._crit = d.slack_s <= p.critical_slack_s  # critical calls (module docstring)
        self._app_len = np.maximum(np.bincount(d.app, minlength=d.n_apps) * 0.0, 1e-9)
        np.maximum.at(self._app_len, d.app, d.remaining_s)
        self._app_depth = np.ones(d.n_apps)
        np.maximum.at(self._app_depth, d.app, d.depth.astype(float))
        self._fan_norm = max(float(d.fanout.max()), 1.0)
        self._pred = self._predictions(p.prediction_error)
        self.c.update(stalls=0, offloads=0, uploads=0, mispredictions=0, late_uploads=0, early_uploads=0,
                      upload_wait_s=0.0, early_held_block_s=0.0, deadline_expired=0, dropped_under_pressure=0,
                      offloaded_under_pressure=0, deferred_calls=0, reserved_blocks_peak=0, uploads_skipped=0,
                      kv_away_at_return=0,
                      loads=0, load_wait_s=0.0, loaded_blocks=0)
        self._deferred_once: set[int] = set()

    # ---- graph helpers ---------------------------------------------------------------------------------
    def _predictions(self, sigma: float) -> np.ndarray:
        """Tool durations the temporal scheduler expects: the DAG's predictions, times exp(sigma x N(0, 1))
        per node when ``prediction_error`` > 0 (drawn from the workload's seed, so every runtime option
        of one seed sees the same errors)."""
        d = self.dag
        if sigma <= 0:
            return d.predicted_s
        seed = int(self.sched.table.meta.get("seed", 0))
        z = np.random.default_rng([seed, 0x70CA4E]).standard_normal(d.n_nodes)
        return d.predicted_s * np.exp(sigma * z)

    def _llm_after(self, node: int) -> set[int]:
        """Requests of the LLM nodes after `node`, looking through tool nodes."""
        d, out, stack = self.dag, set(), list(self.dag.succs(node).tolist())
        while stack:
            s = stack.pop()
            if d.kind[s] == 0:
                out.add(int(d.request[s]))
            else:
                stack.extend(d.succs(s).tolist())
        return out

    def _critical(self, r: int) -> bool:
        return bool(self._crit[self.dag.request_node[r]])

    def _score(self, r: int, now: float) -> float:
        """Hybrid priority of call r (module docstring; weights in AgentRuntimeParams)."""
        p, d = self.p, self.dag
        i = d.request_node[r]
        a = d.app[i]
        s = (p.w_critical_path * (1.0 - min(1.0, d.slack_s[i] / self._app_len[a]))
             + p.w_depth * d.depth[i] / self._app_depth[a] + p.w_fanout * d.fanout[i] / self._fan_norm
             + p.w_importance * d.importance[i] + p.w_resident * self._resident.get(r, 0.0)
             + p.w_age * (now - d.app_arrival_s[a]) / p.wait_norm_s)
        rel = self.loop.release_s[r]
        if math.isfinite(rel):
            s += p.w_wait * (now - rel) / p.wait_norm_s
        return float(s)

    def _pressure(self) -> float:
        pool = self.pool
        rho = pool.num_in_use / pool.num_blocks
        if self.sched.waiting and pool.num_free < self._head_need():
            rho = 1.0
        return rho

    def _need_of(self, r: int) -> int:
        """Blocks call r needs on admission (its prompt beyond the resident prefix), memoized."""
        n = self._need.get(r)
        if n is None:
            hashes = self.prompt_hashes(r)
            hit = len(cached_prefix(self.pool, hashes))
            n = self._need[r] = max(1, -(-int(self.sched.num_tokens[r]) // self.bs) - hit)
            self._resident[r] = hit / max(1, len(hashes))
        return n

    def _head_need(self) -> int:
        return self._need_of(int(self.sched.waiting[0])) if self.sched.waiting else 0

    # ---- temporal scheduler ----------------------------------------------------------------------------
    def _owner_of(self, r: int, rows) -> int:
        """Whose pin set a load for call r joins: its stall's owner, else its parent call."""
        st = self.waiting_on.get(r)
        return st.owner if st is not None else int(rows["parent_id"][r])

    def release(self, r: int, t: float) -> None:
        self._need.pop(r, None)
        self._need_of(r)
        st = self.waiting_on.get(r)
        if st is not None:
            st.released = True
            if st.state == READY and not st.early:
                # held early: from the landing (or the planned landing, whichever is later) to the return
                early = t - max(st.upload_end_s, st.predicted_end_s - self.p.upload_margin_s)
                if early > self.p.mispredict_tolerance_s:
                    st.early = True  # counted once per stall
                    self.c["early_uploads"] += 1
                    self.c["early_held_block_s"] += early * st.uploaded
            elif st.state in (OFFLOADED, UPLOADING) and not st.late:
                st.late = True  # the KV is away: the call waits for it (counted once per stall)
                if st.skipped:
                    self.c["kv_away_at_return"] += 1  # no memory for the predictive upload: loaded on demand
                else:
                    self.c["late_uploads"] += 1  # returned before the upload landed (or started)
            if st.state == UPLOADING:
                st.pending.append((r, t))  # admitted when the upload lands
                return
        # OFFLOADED: the call queues; the store loads reach it near the head of the queue
        self.loop.admit(r, t)

    def tool_started(self, node: int, t: float) -> None:
        if not self.p.temporal:
            return
        d = self.dag
        waiters = self._llm_after(node)
        if not waiters:
            return
        for pnode in d.preds(node).tolist():
            if d.kind[pnode] != 0:
                continue
            owner = int(d.request[pnode])
            st = self.stalls.get(owner)
            if st is not None:  # a second tool after the same call: one stall, more waiters
                st.waiters |= waiters
                for w in waiters:
                    self.waiting_on[w] = st
                continue
            pred = float(self._pred[node])
            hashes = self.sequence_hashes(owner)
            held = self.pins.pin_cached(owner, hashes)
            deadline = min(self.p.deadline_max_s, max(self.p.deadline_min_s, self.p.deadline_factor * pred))
            st = Stall(owner, node, t, t + pred, t + deadline, hashes[:held], set(waiters),
                       any(self._critical(w) for w in waiters))
            self.stalls[owner] = st
            for w in waiters:
                self.waiting_on[w] = st
            self.c["stalls"] += 1
            self.loop.call_at(st.deadline_s, lambda now, s=st: self._expire(s, now))
            if self.ch is not None and held and self._worth_offloading(st, t, self._pressure()):
                self._offload(st, t)

    def _round_trip_s(self, st: Stall) -> float:
        n = len(st.hashes)
        return self.ch.time_s("down", len(self.store.missing(st.hashes))) + self.ch.time_s("up", n)

    def _worth_offloading(self, st: Stall, now: float, pressure: float) -> bool:
        if len(st.hashes) > self.store.capacity:
            return False  # the store cannot hold it (a capacity tier with little room beside the pool)
        left = st.predicted_end_s - now
        rt = self._round_trip_s(st)
        return left > rt + self.p.upload_margin_s and left * pressure >= self.p.offload_gain * rt

    def _offload(self, st: Stall, now: float) -> None:
        missing = self.store.missing(st.hashes)
        _, end = self.ch.schedule("down", len(missing), now)
        self.store.add(missing, end)
        self.c["offload_bytes"] += len(missing) * self.path.moved_bytes_per_block * self.path.gpus
        self.c["offloads"] += 1
        st.state = OFFLOADING
        self.loop.call_at(end, lambda t, s=st: self._offloaded(s, t))

    def _offloaded(self, st: Stall, now: float) -> None:
        if st.state != OFFLOADING:
            return
        self.pins.release(st.owner)  # the GPU copies stay cached until evicted
        st.state = OFFLOADED
        up = self.ch.time_s("up", len(st.hashes))
        start = max(now, st.predicted_end_s - up - self.p.upload_margin_s)
        self.loop.call_at(start, lambda t, s=st: self._start_upload(s, t))

    def _start_upload(self, st: Stall, now: float) -> None:
        """The predictive upload, if memory allows it now: the blocks fit beside the next decode step and,
        for a non-critical stall, beside the first waiting call. Otherwise the KV stays in the store and
        the call loads it when it nears the head of the queue."""
        if st.state != OFFLOADED:
            return
        g = self.pins.pin_cached(st.owner, st.hashes)  # what survived in GPU memory
        k = self.store.prefix(st.hashes, g, now)
        avail = self.pool.num_free - self.running_need()
        if self.sched.waiting and not st.critical:
            avail -= self._head_need()
        if k > avail:
            self.pins.release(st.owner)
            self.c["uploads_skipped"] += 1
            st.skipped = True
            return
        todo = list(st.hashes[g:g + k])
        if todo:
            self.pins.allocate(st.owner, todo)
            _, end = self.ch.schedule("up", len(todo), now)
            self.c["upload_bytes"] += len(todo) * self.path.moved_bytes_per_block * self.path.gpus
        else:
            end = now
        st.uploaded = g + len(todo)  # blocks held for the calls once it lands
        st.state = UPLOADING
        self.c["uploads"] += 1
        self.loop.call_at(end, lambda t, s=st: self._landed(s, t))

    def _landed(self, st: Stall, now: float) -> None:
        if st.state != UPLOADING:
            return
        landed = self.pins.land(st.owner)
        self.loop.tracker.fresh(landed, now)
        st.state = READY
        st.upload_end_s = now
        for r, t in st.pending:
            self.c["upload_wait_s"] += now - t
            self.loop.admit(r, t)
        st.pending.clear()

    def tool_done(self, node: int, t: float) -> None:
        for pnode in self.dag.preds(node).tolist():
            st = self.stalls.get(int(self.dag.request[pnode])) if self.dag.kind[pnode] == 0 else None
            if st is None or st.tool != node:
                continue
            st.returned_s = t
            if abs(t - st.predicted_end_s) > self.p.mispredict_tolerance_s:
                self.c["mispredictions"] += 1

    def _expire(self, st: Stall, now: float) -> None:
        if self.stalls.get(st.owner) is not st or math.isfinite(st.returned_s) or st.pending:
            return
        self.c["deadline_expired"] += 1
        self._drop(st)

    def _drop(self, st: Stall) -> None:
        """Let the stall's KV go (to the prefix cache; a copy in the store stays loadable)."""
        self.pins.release(st.owner)
        st.state = DROPPED

    def admitted(self, rs, t):
        for r in rs:
            self._need.pop(r, None)
            if self.loads is not None:
                self.loads.admitted(r)
            st = self.waiting_on.pop(r, None)
            if st is None:
                continue
            st.waiters.discard(r)
            if not st.waiters:
                self.pins.release(st.owner)
                st.state = DROPPED
                del self.stalls[st.owner]

    # ---- memory pressure -------------------------------------------------------------------------------
    def _held(self) -> list[Stall]:
        """Stalls holding GPU blocks for calls not yet admitted (their tool runs, a join still waits, or
        the calls wait in the queue), none of them waiting for an upload."""
        return [s for s in self.stalls.values() if s.state in (HELD, READY) and not s.pending and s.owner in self.pins]

    def _relieve(self, now: float, need: int, everything: bool = False) -> bool:
        """Free held KV for `need` blocks (module docstring): KV whose calls are not released yet before
        KV about to be used, non-critical before critical, furthest predicted return first; critical KV
        within the reserved pool stays unless ``everything`` (the engine is idle and stuck)."""
        held = self._held()
        if not held:
            return False
        reserve = int(self.p.reserve_share * self.pool.num_blocks) if self.p.spatial else 0
        crit_blocks = sum(len(self.pins.blocks(s.owner)) for s in held if s.critical)
        held.sort(key=lambda s: (s.released, s.critical, -s.predicted_end_s))
        freed = 0
        for st in held:
            if freed >= need and not everything:
                break
            n = len(self.pins.blocks(st.owner))
            if st.critical and not everything:
                if crit_blocks <= reserve:
                    continue  # critical KV within the reserved pool stays
                crit_blocks -= n
            if self.ch is not None and st.state == HELD and not everything and self._worth_offloading(st, now, 1.0):
                self._offload(st, now)
                self.c["offloaded_under_pressure"] += 1
                freed += n  # freed when the copy lands
            else:
                self._drop(st)
                self.c["dropped_under_pressure"] += 1
                freed += n
        return freed > 0

    def relieve(self, now, need_idle=False):
        flushed = bool(self.deferred)
        self.flush(now)
        loads = self.loads.relieve() if self.loads is not None else False
        return self._relieve(now, self._head_need() or 1, everything=True) or flushed or loads

    # ---- spatial scheduler and per-step work -----------------------------------------------------------
    def before_step(self, now: float) -> None:
        sched = self.sched
        if self.p.temporal and self.stalls:
            short = self._head_need() - self.pool.num_free if sched.waiting else 0
            low = self.running_need() - self.pool.num_free
            need = max(short, low)
            preempted = sched.total_preemptions != self._preempts
            self._preempts = sched.total_preemptions
            if need > 0:
                # a running call was preempted for lack of blocks while KV is held: held KV goes first,
                # critical KV too (else a long prefill could lose its work to held KV again and again)
                self._relieve(now, need, everything=preempted and low > 0)
        if self.p.spatial:
            self._spatial(now)
        if self.loads is not None:
            self.loads.scan(now)

    def _spatial(self, now: float) -> None:
        sched = self.sched
        if not sched.waiting and not self.deferred:
            return  # nothing to order or hold back (and the fast path's steps stay exact)
        n_wait = len(sched.waiting) + len(self.deferred)
        if now >= self._next_priority_s or n_wait != self._waiting_seen:
            self._prioritize(now)
            self._next_priority_s = now + self.p.priority_interval_s
        self._gate(now)
        self._waiting_seen = len(sched.waiting) + len(self.deferred)

    def _prioritize(self, now: float) -> None:
        sched = self.sched
        ids = list(sched.waiting) + self.deferred
        self.deferred = []
        for r in ids:
            self._need_of(r)
        first = self.loads.landed if self.loads is not None else ()
        ids.sort(key=lambda r: (r not in first, -self._score(r, now)))  # a call whose KV just loaded goes first
        sched.waiting = deque(ids)

    def _reservation(self, now: float) -> int:
        cap = int(self.p.reserve_share * self.pool.num_blocks)
        if cap <= 0:
            return 0
        demand = 0
        ramp = self.p.reserve_ramp_s
        for st in self.stalls.values():
            if st.critical and st.state == OFFLOADED and not st.released:
                left = st.predicted_end_s - now
                f = 1.0 if ramp <= 0 or left <= 0 else max(0.0, 1.0 - left / ramp)
                demand += int(f * len(st.hashes))
        r = min(cap, demand)
        if r > self.c["reserved_blocks_peak"]:
            self.c["reserved_blocks_peak"] = r
        return r

    def _gate(self, now: float) -> None:
        """Hold back non-critical waiting calls that would eat into the reservation."""
        sched = self.sched
        if self.deferred:
            sched.waiting.extend(self.deferred)
            self.deferred = []
        if not sched.waiting:
            return
        budget = self.pool.num_free - self._reservation(now)
        kept, held = [], []
        first = self.loads.landed if self.loads is not None else ()
        for r in sched.waiting:
            # a call is held back only while its wait stays within its slack (then the app is not delayed)
            slack_left = self.dag.slack_s[self.dag.request_node[r]] - (now - self.loop.release_s[r])
            if slack_left <= self.p.critical_slack_s or r in first:
                kept.append(r)
                budget -= self._need_of(r)
                continue
            need = self._need_of(r)
            if need <= budget:
                kept.append(r)
                budget -= need
            else:
                held.append(r)
        if not kept and sched.num_running == 0:
            kept.append(held.pop(0))  # never leave the engine idle
        for r in held:
            if r not in self._deferred_once:
                self._deferred_once.add(r)
                self.c["deferred_calls"] += 1
        sched.waiting = deque(kept)
        self.deferred = held

    def quiet(self) -> bool:
        return not self.deferred

    def quiet_steps(self, k: int) -> int:
        """Decode steps before held KV could have to be freed (free blocks below `running_need`, which in a
        pure-decode run is at most one block per call + calls / block_size + 1): each running call takes
        a block every block_size steps at most."""
        if not (self.p.temporal and self.stalls):
            return k
        run = max(self.sched.num_running, 1)
        worst = run + run // self.bs + 1
        return max(0, (self.pool.num_free - worst) // run) * self.bs

    def pending_work(self) -> bool:
        return bool(self.deferred)

    def flush(self, now: float) -> None:
        self.sched.waiting.extend(self.deferred)
        self.deferred = []
