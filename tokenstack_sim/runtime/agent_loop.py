"""The serving loop for agent applications: calls are released when their predecessors are done.

Same engine as `serve_loop.serve` (vLLM-like scheduler, a step-cost model, time from step end to step
end, the fast path for runs of pure-decode steps), plus the application graph (`AgentTable.dag`):
- An app's root nodes are ready at its arrival. A tool node starts when all its predecessors are done and
  ends its drawn duration later; an LLM node is ready when all its predecessors (LLM calls finished,
  tool calls ended) are, and is then *released* through the runtime, which adds it to the scheduler now
  or later (after an upload it waits for). A request's ``arrival_s`` in the result is the moment it was
  ready, so TTFT includes any wait the runtime imposed; readiness that falls inside a step takes effect
  at the step's end, as arrivals do in `serve`.
- The runtime (`agent_runtime.py`: ``vllm``, ``vllm-offload``; `tokencake.py`) hears of finished calls,
  tool starts and ends, admissions, and acts before each step (pins, offloads, uploads, priorities).
- App metrics: makespan (arrival to its last node's end); effective KV utilization: block-seconds of KV
  that is read (held by a running request) or read again within ``util_window_s`` (an idle block's
  interval until a prefix hit counts up to the window; one that is evicted or never hit counts nothing),
  over pool blocks x the run's span; block-seconds pinned by idle agents; prompt tokens computed.
The fast path is taken only while no event falls due and the runtime is quiet; `serve_loop.serve` is
untouched (plain traces keep their path).
Leaves out: API-server and tool-dispatch latency, the apps' own client-side think time.
"""

from __future__ import annotations

import heapq
import math
from typing import Callable

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.runtime.agent_scheduler import AgentScheduler, Pins
from tokenstack_sim.runtime.params import SchedulerParams
from tokenstack_sim.runtime.serve_loop import PROGRESS_EVERY_STEPS, ServeResult, serve_result
from tokenstack_sim.workload.table import validate

_READY, _TOOL_DONE, _CALL = 0, 1, 2


class KvUseTracker:
    """Effective KV utilization (module docstring), by block hash."""

    def __init__(self, window_s: float):
        self.window_s = float(window_s)
        self.idle_since: dict[int, float] = {}
        self.active_block_s = 0.0
        self.reuse_block_s = 0.0
        self.pinned_idle_block_s = 0.0

    def step(self, dt: float, in_use: int, pinned_only: int) -> None:
        self.active_block_s += (in_use - pinned_only) * dt
        self.pinned_idle_block_s += pinned_only * dt

    def idle(self, hashes, t: float) -> None:
        s = self.idle_since
        for h in hashes:
            if h not in s:
                s[h] = t

    def fresh(self, hashes, t: float) -> None:
        """Blocks whose data just arrived (an upload landed): idle from t, whatever came before."""
        s = self.idle_since
        for h in hashes:
            s[h] = t

    def hit(self, hashes, t: float, stale=()) -> None:
        s, w = self.idle_since, self.window_s
        for h in hashes:
            t0 = s.pop(h, None)
            if t0 is not None:
                self.reuse_block_s += min(w, max(0.0, t - t0))
        for h in stale:
            s.pop(h, None)


class AgentLoop:
    """One run; see the module docstring. The runtime reaches the loop through `admit`, `call_at`,
    `now`, `sched`, `pins`, `dag`, `tracker`."""

    def __init__(self, table, params: SchedulerParams, cost, *, runtime: str = "vllm", runtime_params=None,
                 path=None, kv=None, progress: Callable[[int, int], None] | None = None,
                 fast_forward: bool = True, perturb=None):
        from tokenstack_sim.runtime.agent_runtime import AgentRuntimeParams, make_runtime

        validate(table)
        if getattr(table, "dag", None) is None:
            raise InputError("the agent serving loop needs an agent workload (codewriter-like, deep-research-like, "
                             "random-dag or a DAG CSV)", where="--workload")
        self.table, self.dag, self.params, self.cost = table, table.dag, params, cost
        self.sched = AgentScheduler(table, params)
        self.kv = kv
        if kv is not None:
            kv.bind(self.sched)
        self.pins = Pins(self.sched, kv)
        self.progress = progress
        self.fast_forward = fast_forward
        rp = runtime_params if runtime_params is not None else AgentRuntimeParams()
        self.tracker = KvUseTracker(rp.util_window_s)
        d = self.dag
        n, m = len(table), d.n_nodes
        self.n = n
        self.pending = np.diff(d.pred_offsets).astype(np.int64)
        self.node_done_s = np.full(m, np.nan)
        self.release_s = np.full(n, np.nan)
        self.app_left = np.bincount(d.app, minlength=d.n_apps).astype(np.int64)
        self.app_done_s = np.full(d.n_apps, np.nan)
        self.events: list = []
        self._seq = 0
        self.now = float(d.app_arrival_s.min())
        self.finished = 0
        self.steps: list[tuple] = []
        self._uncharged = None  # transfer actions queued before the first step was recorded
        self._waiting_ids: set[int] = set()
        self.rt = make_runtime(runtime, self, rp, path)
        for i in np.flatnonzero(self.pending == 0).tolist():
            self.push(float(d.app_arrival_s[d.app[i]]), _READY, i)
        if perturb is not None:  # robust/perturb.py: slow-down windows as timed calls
            perturb.attach(self)

    # ---- events -------------------------------------------------------------------------------------
    def push(self, t: float, kind: int, payload) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, self._seq, kind, payload))

    def call_at(self, t: float, fn: Callable[[float], None]) -> None:
        """Run `fn(t)` when the loop reaches time t (at the first step end at or after it)."""
        self.push(t, _CALL, fn)

    def next_event_s(self) -> float:
        return self.events[0][0] if self.events else math.inf

    def _process(self, upto: float, calls: bool = True) -> None:
        while self.events and self.events[0][0] <= upto:
            t, _, kind, p = heapq.heappop(self.events)
            if kind == _READY:
                self._ready(p, t)
            elif kind == _TOOL_DONE:
                self.rt.tool_done(p, t)
                self._node_done(p, t)
            elif calls:
                p(t)

    def _ready(self, i: int, t: float) -> None:
        d = self.dag
        if d.kind[i] == 1:
            self.rt.tool_started(i, t)
            self.push(t + float(d.duration_s[i]), _TOOL_DONE, i)
        else:
            self.rt.release(int(d.request[i]), t)

    def _node_done(self, i: int, t: float) -> None:
        d = self.dag
        self.node_done_s[i] = t
        a = d.app[i]
        self.app_left[a] -= 1
        if self.app_left[a] == 0:
            self.app_done_s[a] = t
        for s in d.succs(i).tolist():
            self.pending[s] -= 1
            if self.pending[s] == 0:
                self._ready(s, t)

    def admit(self, r: int, t: float) -> None:
        """Add request r to the scheduler; it was ready at t."""
        self.release_s[r] = t
        self.sched.add_request(r)
        self._waiting_ids.add(r)

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> ServeResult:
        sched, cost, rt = self.sched, self.cost, self.rt
        n = self.n
        bs = self.params.block_size
        pinned_only = 0
        relieved_at = math.nan
        while self.finished < n:
            self._process(self.now)
            rt.before_step(self.now)
            if sched.num_running == 0 and sched.num_waiting == 0:
                t = self.next_event_s()
                if not math.isfinite(t):
                    if rt.pending_work():
                        rt.flush(self.now)
                        continue
                    raise RuntimeError(f"{n - self.finished} calls were never released (a DAG node waits forever)")
                self.now = max(self.now, t)
                continue
            if self.fast_forward and sched.num_waiting == 0 and rt.quiet():
                k = sched.decode_run_length()
                pinned_only = rt.pinned_only() if k else 0  # decode steps do not change it
                if k:
                    k = min(k, rt.quiet_steps(k))
                taken = 0
                nxt = self.next_event_s()
                while taken < k:
                    if taken and nxt <= self.now:
                        break  # it happens at this step's end: the normal path takes it
                    batch = sched.decode_step(taken)
                    if batch is None:
                        break
                    dt = float(cost.step_time_s(batch))
                    if not (math.isfinite(dt) and dt > 0):
                        raise ValueError(f"step cost must be finite and > 0 s, got {dt!r}")
                    start = self.now
                    self.now += dt
                    taken += 1
                    self.tracker.step(dt, batch.kv_blocks_in_use, pinned_only)
                    if self.progress is not None and len(self.steps) % PROGRESS_EVERY_STEPS == 0:
                        self.progress(self.finished, n)
                    b = batch.size
                    self.steps.append((start, self.now, b, b, b, batch.kv_blocks_in_use, 0, 0, 0))
                if k:
                    sched.decode_finish(taken)
                if taken:
                    self._charge_transfers()
                if taken:
                    continue
            waiting_before = self._waiting_ids if sched.num_waiting else ()
            batch = sched.schedule()
            if batch.preemptions:
                self._waiting_ids.update(int(r) for r in sched.waiting)
            if batch.size == 0:
                if batch.preemptions:
                    continue
                if sched.num_running == 0:
                    if relieved_at != self.now and rt.relieve(self.now, need_idle=True):
                        relieved_at = self.now  # once per instant: the runtime may take memory back
                        continue
                    if self.events:  # something the runtime waits for (a load, an upload) frees it later
                        self.now = max(self.now, self.next_event_s())
                        continue
                    r = int(sched.waiting[0])
                    need = -(-int(sched.num_tokens[r]) // bs)
                    raise InputError(f"request {r} needs {need} KV blocks for its {int(sched.num_tokens[r])} tokens, "
                                     f"the pool has {self.params.num_kv_blocks}", where="num_kv_blocks")
                raise RuntimeError("scheduler produced an empty batch with running requests")
            admitted = []
            if waiting_before:
                ids = batch.request_ids.tolist()
                ctx = batch.context_tokens.tolist()
                for j in range(len(ids) - 1, -1, -1):  # admitted requests come last in the batch
                    r = ids[j]
                    if r not in waiting_before:
                        break
                    admitted.append((r, ctx[j]))
                for r, _ in admitted:
                    waiting_before.discard(r)
            dt = float(cost.step_time_s(batch))
            if not (math.isfinite(dt) and dt > 0):
                raise ValueError(f"step cost must be finite and > 0 s, got {dt!r}")
            start = self.now
            self.now += dt
            if admitted:
                self._account_hits(admitted, start)
                rt.admitted([r for r, _ in admitted], start)
            self.tracker.step(dt, batch.kv_blocks_in_use, rt.pinned_only())
            done = sched.finish_step(batch, self.now)
            self.steps.append((start, self.now, batch.size, int(batch.new_tokens.sum()), int(batch.emits.sum()),
                               batch.kv_blocks_in_use, batch.num_waiting, batch.preemptions, batch.prefix_hit_tokens))
            self._charge_transfers()
            if len(done):
                self.finished += len(done)
                for r in done.tolist():
                    self._finished_call(r, self.now)
            if self.progress is not None and len(self.steps) % PROGRESS_EVERY_STEPS == 0:
                self.progress(self.finished, n)
        # the tool calls after the last LLM call (and zero-time collect nodes) still end their apps
        self._process(math.inf, calls=False)
        self._charge_transfers()
        if self.progress is not None:
            self.progress(self.finished, n)
        return self._result()

    def _charge_transfers(self) -> None:
        """Add the actions of the KV the runtime moved since the last step to the last recorded step (the
        step model's `records`; kv_transfer.py: copies overlap with the steps, their energy is charged)."""
        vec = self.rt.take_transfer_actions()
        if vec is None:
            return
        recs = getattr(self.cost, "records", None)
        if recs is None or len(recs) == 0:
            self._uncharged = vec if self._uncharged is None else self._uncharged + vec
            return
        if self._uncharged is not None:
            vec = vec + self._uncharged
            self._uncharged = None
        recs.actions[len(recs) - 1] += vec

    def _account_hits(self, admitted, t: float) -> None:
        sched, bs = self.sched, self.params.block_size
        h = sched.hashes
        if h is None:
            return
        for r, ctx in admitted:
            hit = ctx // bs
            full = (int(sched.num_tokens[r]) - 1) // bs
            seq = h.first(r, full)
            self.tracker.hit(seq[:hit], t, seq[hit:])

    def _finished_call(self, r: int, t: float) -> None:
        sched = self.sched
        if sched.hashes is not None:
            full = int(sched.computed[r]) // self.params.block_size
            seq = sched.hashes.first(r, full)
            cached = sched.pool._cached
            ref = sched.pool.ref_cnt
            pins = self.pins.count
            idle = [x for x in seq if (b := cached.get(x)) is not None and ref[b] == pins.get(b, 0)]
            self.tracker.idle(idle, t)
        self.rt.finished(r, t)
        self._node_done(int(self.dag.request_node[r]), t)

    # ---- results ------------------------------------------------------------------------------------
    def _result(self) -> ServeResult:
        res = serve_result(self.sched, self.release_s, self.table.rows["input_tokens"], self.steps)
        res.counters["agent"] = self.app_metrics(res.steps)
        return res

    def app_metrics(self, steps: np.ndarray) -> dict:
        d = self.dag
        mk = self.app_done_s - d.app_arrival_s
        start = float(d.app_arrival_s.min())
        span = float(steps["end_s"][-1]) - start if len(steps) else 0.0
        total = self.params.num_kv_blocks
        tr = self.tracker
        out = self.sched.output_tokens
        prompt_computed = float(steps["new_tokens"].sum()) - float(np.maximum(self.sched.generated - 1, 0).sum()) \
            + float(self.rt.charged_prompt_tokens())  # tokens a runtime's own work computed (reuse recompute)
        res = {
            "apps": int(d.n_apps),
            "app_makespan_mean_s": float(np.nanmean(mk)),
            "app_makespan_p50_s": float(np.nanpercentile(mk, 50)),
            "app_makespan_p99_s": float(np.nanpercentile(mk, 99)),
            "app_makespan_max_s": float(np.nanmax(mk)),
            "kv_effective_utilization": (tr.active_block_s + tr.reuse_block_s) / (total * span) if span > 0 else 0.0,
            "kv_busy_share": tr.active_block_s / (total * span) if span > 0 else 0.0,
            "kv_idle_pinned_share": tr.pinned_idle_block_s / (total * span) if span > 0 else 0.0,
            "prompt_tokens_computed": prompt_computed,
            "prompt_tokens": float(self.table.rows["input_tokens"].sum()),
            "output_tokens_requested": float(out.sum()),
        }
        slo = self.rt.p.slo_makespan_s
        if slo > 0:  # share of apps whose makespan meets the SLO (an app that never ended fails it)
            res["app_slo_attainment"] = float(np.mean(np.nan_to_num(mk, nan=np.inf) <= slo))
        res.update(self.rt.counters())
        return res


def serve_agents(table, params: SchedulerParams, cost, *, runtime: str = "vllm", runtime_params=None, path=None,
                 kv=None, progress: Callable[[int, int], None] | None = None, fast_forward: bool = True,
                 perturb=None) -> ServeResult:
    """Serve an `AgentTable` with the named runtime; see the module docstring. ``path``: the offload path
    (`kv_transfer.TransferPath`) for runtimes that move KV out of the pool."""
    loop = AgentLoop(table, params, cost, runtime=runtime, runtime_params=runtime_params, path=path, kv=kv,
                     progress=progress, fast_forward=fast_forward, perturb=perturb)
    return loop.run()


def serve_prepared(prep, table, params: SchedulerParams, runtime: str, runtime_options: dict, *, kv=None,
                   progress=None, fast_forward: bool = True, perturb=None) -> ServeResult:
    """`serve_agents` on a prepared (system, model) pair (sim/engine.py): the runtime's parameters from
    `runtime_options` (AgentRuntimeParams fields) and its offload path from the system (``vllm-offload``:
    the host link, as LMCache's CPU backend; ``tokencake``: ``offload_target``)."""
    from tokenstack_sim.config.schema import build
    from tokenstack_sim.runtime.agent_runtime import AgentRuntimeParams
    from tokenstack_sim.runtime.kv_transfer import capacity_store_blocks, choose_path

    rp = build(AgentRuntimeParams, dict(runtime_options or {}), where="runtime_options")
    sm = prep.step_model
    path = None
    if runtime == "vllm-offload":
        path = choose_path("host", prep.system, sm, sm.block_bytes)
    elif runtime == "tokencake":
        free = None
        if sm.migrates and rp.offload_target != "host":  # the capacity tier's room beside the pool
            pool_cap = kv.C if kv is not None else sum(t.blocks for t in prep.tiers if not t.pim)
            free = capacity_store_blocks(prep, pool_cap)
        path = choose_path(rp.offload_target, prep.system, sm, sm.block_bytes, free)
    return serve_agents(table, params, sm, runtime=runtime, runtime_params=rp, path=path, kv=kv,
                        progress=progress, fast_forward=fast_forward, perturb=perturb)
