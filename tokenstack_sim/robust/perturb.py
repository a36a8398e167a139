"""A perturbed run: the injectors of `RunSpec.perturb` applied to one serving run (issue 12).

`Perturbation(injectors, prep, seed)` is built by the engine (sim/engine.py `run_prepared`) only when a
run has injectors; without them nothing here runs and the nominal path is untouched.

What each injector type changes (robust/injectors.py has the keys):
- **arrival_burst / rate_shift**: the request table's arrival times (and an agent workload's app
  arrivals) are time-warped so that the rate is x (1 + m) inside the window: the requests that would
  have arrived in [start, start + (end - start)(1 + m)) arrive in [start, end), later ones (end - start) m
  earlier. The same requests, sooner (or later for m < 0): nothing is added or dropped.
- **output_length_misprediction**: the workload-aware eviction oracle of kv/tiered.py (which ranks
  blocks by when their holders finish, from the output length) sees exp(m z) x the true length per
  request (z ~ N(0, 1), seeded) for requests arriving in the window (and of app `agent`). The requests
  still generate their true lengths. LRU / LFU eviction ignores it (no effect: expected). On an agent
  workload the same factor also scales each LLM call's predicted time in the DAG's critical paths
  (`replan`: remaining_s and slack_s, which TokenCake's criticality and priorities read; the agent
  scheduler itself uses output lengths only for the histories' block hashes, the true content). The
  tool-time misprediction changes the predicted tool times the temporal scheduler plans by, but not
  these critical-path features (built once with the DAG; left out).
- **tool_time_misprediction**: the DAG's predicted tool durations (what TokenCake's temporal scheduler
  plans offloads and uploads by) x exp(m z), for tool calls of apps arriving in the window. The tools
  still take their drawn durations; runtimes that do not predict (vllm, vllm-offload) are unaffected.
- **dma_slowdown**: the characterized base-die DMA op times (KV demotion and promotion) x (1 + m) while
  the window is open (rebinding the step model's tables). TokenCake's offload path to the capacity
  layers (runtime/kv_transfer.py `capacity_path`) reads the bound tables at each copy, so it slows too;
  the host link's path is not DMA and is unaffected.
- **gpu_slowdown**: the GPU's peak FLOP/s / (1 + m) in the window (thermal or power throttling): GEMMs
  and the GPU's attention slow where compute-bound; launch overhead and memory time are unchanged.
  Under tensor parallelism the GPUs run in lockstep, so one slow GPU slows every step alike: the
  injector has no per-GPU scope.
- **refresh_storm**: the stacks' tREFI and tREFIpb / (1 + m) in the window. The op costs are
  re-characterized on the cycle kernel with that DRAM config (the op-cost cache keys them by the changed
  timing, so each storm level is simulated once) and swapped in while the storm lasts; `tier` limits
  the swap to the ops on that tier (stream-pim and attention for `pim`, stream-capacity for `capacity`;
  DMA touches both and is swapped for either).
- **pim_layer_failure**: at start_s the PIM layers of the scoped stacks fail for good: every KV block
  with data on a PIM unit that contains one of them is lost (a unit is `stacks_per_unit` stacks in
  lockstep, each holding a slice of every block; with the `interleaved` placement every block is on
  every stack, so one failed layer loses all PIM KV). The requests holding lost blocks lose their KV
  and are resumed by recompute (vLLM's preemption: their blocks elsewhere stay cached and are hit again
  on resume); cached prefix blocks there leave the prefix cache; the unit's slots are gone for the
  rest of the run (as many logical blocks are taken out of the pool). On AttAcc the PIM layers are the
  PIM device's stacks; a system without PIM is unaffected.
- **stack_failure**: at start_s the scoped stacks of every GPU fail and come back empty: their KV is
  lost (a TokenStack or uniform-PIM stack: the blocks of its PIM unit, and every capacity-tier block,
  since capacity addresses interleave over all stacks; a GPU-only stack: every block, for the same
  reason; AttAcc's GPU stacks hold no KV) and their weights (the shard's weights are striped evenly
  over the GPU's stacks) are reloaded from the host at the host link's rate while the engine stalls:
  one step of that length with nothing scheduled, its time in the step's `other` part and the bits
  written counted as GPU writes to the stacks (the host link's energy is not charged, as in every
  serving run). The requests that lost KV resume by recompute after the reload.

Failures during agent runs (runtime/agent_loop.py; `attach` makes them the loop's timed calls): the same,
and the runtime's held KV with a block on a lost location (a stall's pinned KV, an upload or load in
flight) is let go whole, so the calls after it recompute; a capacity-tier offload store is lost with the
tier (counted: perturb_held_kv_lost, perturb_store_blocks_lost). The reload stalls the engine, not the
tools, which keep running.

Left out: restoring lost KV from surviving copies (a replica on a live unit, TokenCake's offloaded
copies in a host store are not used to restore a lost stall before its calls return: they load it as
for any dropped stall); per-unit DMA slow-down; slow-downs of the links.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.robust.injectors import FAILURE_TYPES, HARDWARE_TYPES, TYPES, Injector, WorkLost

STALL_PART = 5  # results.result.STEP_PARTS index of "other": where a weight reload's stall is booked


def warp_arrivals(t: np.ndarray, start_s: float, end_s: float, factor: float) -> np.ndarray:
    """Arrival times with the rate x `factor` in [start_s, end_s) of the warped timeline (module docstring)."""
    t = np.asarray(t, np.float64)
    out = t.copy()
    a = start_s
    if math.isinf(end_s):
        sel = t >= a
        out[sel] = a + (t[sel] - a) / factor
        return out
    span = (end_s - a) * factor  # original time compressed into the window
    inside = (t >= a) & (t < a + span)
    out[inside] = a + (t[inside] - a) / factor
    after = t >= a + span
    out[after] = t[after] - (end_s - a) * (factor - 1.0)
    return out


def _log_error(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    return np.exp(sigma * rng.standard_normal(n))


class Perturbation:
    """The injectors of one run, bound to its prepared pair (module docstring). The serve loop calls
    `fire(now_s, sched)` whenever `now_s >= next_s`; the engine calls `perturb_table`, `bind` and,
    at the end, `finish`."""

    def __init__(self, injectors: list[Injector], prep, seed: int):
        self.injectors = [i for i in injectors if not i.is_nominal]
        self.prep = prep
        self.seed = int(seed)
        self.sm = prep.step_model
        self.lost = WorkLost()
        self.kv = None
        self.out_pred = None
        events = []
        for k, inj in enumerate(self.injectors):
            if inj.type in HARDWARE_TYPES:
                events.append((inj.start_s, k, "on"))
                if math.isfinite(inj.end_s):
                    events.append((inj.end_s, k, "off"))
            elif inj.type in FAILURE_TYPES:
                self._check_stack(inj, k)
                events.append((inj.start_s, k, "fail"))
        events.sort(key=lambda e: (e[0], e[2] != "off", e[1]))
        self.events = events
        self._ev = 0
        self.active: set[int] = set()
        self._nominal = None  # (tables, peak_w, peak_a) of the step model, taken at the first change
        self._storm_cache: dict = {}

    # ---- shared -------------------------------------------------------------------------------------
    @property
    def next_s(self) -> float:
        return self.events[self._ev][0] if self._ev < len(self.events) else math.inf

    @property
    def has_failures(self) -> bool:
        return any(i.type in FAILURE_TYPES for i in self.injectors)

    def rng(self, inj: Injector) -> np.random.Generator:
        s = self.seed if inj.seed is None else inj.seed
        return np.random.default_rng([s, TYPES.index(inj.type), inj.salt])

    def _where(self, inj: Injector) -> str:
        return f"perturb[{self.injectors.index(inj)}]"

    def _stack_count(self, inj: Injector) -> int:
        sys_ = self.prep.system
        if inj.type == "pim_layer_failure" and sys_.pim_stack is not None:
            return sys_.pim_stacks_per_gpu
        return sys_.gpu_stacks_per_gpu

    def _check_stack(self, inj: Injector, k: int) -> None:
        n = self._stack_count(inj)
        if inj.stack is not None and inj.stack >= n:
            raise InputError(f"stack {inj.stack} does not exist: {self.prep.system.name} has {n} "
                             f"{'PIM device' if n != self.prep.system.gpu_stacks_per_gpu else 'GPU'} stacks per GPU",
                             where=f"perturb[{k}].stack")

    def failed_stacks(self, inj: Injector) -> list[int]:
        n = self._stack_count(inj)
        if inj.stack is not None:
            return [inj.stack]
        return list(range(min(n, math.ceil(inj.magnitude * n - 1e-9))))

    # ---- workload side (before the run) -------------------------------------------------------------
    def perturb_table(self, table):
        """The request table with arrivals warped and predictions drawn (a copy; `table` is kept)."""
        rows = table.rows
        dag = getattr(table, "dag", None)
        changed = False
        arr = rows["arrival_s"]
        app_arr = dag.app_arrival_s if dag is not None else None
        orig_arr, orig_app = arr, app_arr
        for inj in self.injectors:
            if inj.type in ("arrival_burst", "rate_shift"):
                arr = warp_arrivals(arr, inj.start_s, inj.end_s, 1.0 + inj.magnitude)
                if app_arr is not None:
                    app_arr = warp_arrivals(app_arr, inj.start_s, inj.end_s, 1.0 + inj.magnitude)
                changed = True
        pred_tool = None
        for inj in self.injectors:
            if inj.type == "output_length_misprediction":
                out = rows["output_tokens"].astype(np.float64)
                if self.out_pred is None:
                    self._out_true = rows["output_tokens"].astype(np.int64)
                    self.out_pred = self._out_true.copy()
                sel = (orig_arr >= inj.start_s) & (orig_arr < inj.end_s)
                if inj.agent is not None:
                    if dag is None:
                        raise InputError("agent scope needs an agent workload", where=f"{self._where(inj)}.agent")
                    self._check_agent(inj, dag)
                    sel &= dag.app[dag.request_node] == inj.agent
                err = _log_error(self.rng(inj), len(out), inj.magnitude)
                self.out_pred[sel] = np.maximum(1, np.rint(out[sel] * err[sel])).astype(np.int64)
            elif inj.type == "tool_time_misprediction":
                if dag is None:
                    raise InputError("tool_time_misprediction needs an agent workload (codewriter-like, "
                                     "deep-research-like, random-dag or a DAG CSV)", where=f"{self._where(inj)}.type")
                if pred_tool is None:
                    pred_tool = dag.predicted_s.copy()
                sel = (dag.kind == 1) & (orig_app[dag.app] >= inj.start_s) & (orig_app[dag.app] < inj.end_s)
                if inj.agent is not None:
                    self._check_agent(inj, dag)
                    sel &= dag.app == inj.agent
                err = _log_error(self.rng(inj), len(pred_tool), inj.magnitude)
                pred_tool[sel] = dag.predicted_s[sel] * err[sel]
        plan = None
        if dag is not None and self.out_pred is not None:  # the runtimes' critical paths, from the predictions
            factor = np.ones(dag.n_nodes)
            llm = dag.kind == 0
            r = dag.request[llm]
            factor[llm] = self.out_pred[r] / np.maximum(self._out_true[r], 1)
            if (factor != 1.0).any():
                plan = replan(dag, factor)
        if not changed and pred_tool is None and plan is None:
            return table
        new_rows = rows.copy()
        new_rows["arrival_s"] = arr
        kw = {"rows": new_rows}
        if dag is not None:
            extra = {"remaining_s": plan[0], "slack_s": plan[1]} if plan is not None else {}
            kw["dag"] = dataclasses.replace(dag, app_arrival_s=app_arr,
                                            predicted_s=pred_tool if pred_tool is not None else dag.predicted_s,
                                            _hash_cache={}, **extra)
        return dataclasses.replace(table, **kw)

    @staticmethod
    def _check_agent(inj: Injector, dag) -> None:
        if inj.agent >= dag.n_apps:
            raise InputError(f"app {inj.agent} does not exist: the workload has {dag.n_apps} apps", where="agent")

    def bind(self, kv) -> None:
        """The run's TieredKv: the eviction oracle's predicted lengths, and where failures take KV from."""
        self.kv = kv
        if self.out_pred is not None and kv is not None:
            kv.out_pred = self.out_pred

    # ---- hardware side (in the run) -----------------------------------------------------------------
    def _snapshot(self) -> None:
        if self._nominal is None:
            sm = self.sm
            self._nominal = ({k: lk.table for k, lk in sm._lookups.items()}, sm._peak_w, sm._peak_a)

    def _storm_tables(self, m: float) -> dict:
        """key -> OpTable of every op the step model reads, characterized with tREFI / (1 + m)."""
        if m in self._storm_cache:
            return self._storm_cache[m]
        from tokenstack_sim.hw.opcost import OpCosts
        from tokenstack_sim.sim.engine import serving_grid

        sm = self.sm
        out, costs = {}, {}
        for stack, op in sm.required_ops():
            st = costs.get(id(stack))
            if st is None:
                st = costs[id(stack)] = OpCosts(storm_stack(self.prep.system, stack, m), on_missing="characterize")
            out[sm.key(stack, op)] = st.table(op, serving_grid(op))
        self._storm_cache[m] = out
        return out

    def _rebind(self) -> None:
        """Bind the step model's tables and GPU peaks for the injectors active now."""
        self._snapshot()
        sm = self.sm
        tables, peak_w, peak_a = self._nominal
        tables = dict(tables)
        ops = {sm.key(stack, op): op for stack, op in sm.required_ops()}
        gpu = dma = 1.0
        storms: dict[str, float] = {}
        for k in sorted(self.active):
            inj = self.injectors[k]
            if inj.type == "gpu_slowdown":
                gpu *= 1.0 + inj.magnitude
            elif inj.type == "dma_slowdown":
                dma *= 1.0 + inj.magnitude
            elif inj.type == "refresh_storm":
                for tier in ([inj.tier] if inj.tier else ["pim", "capacity"]):
                    storms[tier] = max(storms.get(tier, 0.0), inj.magnitude)
        for tier, m in sorted(storms.items()):
            st = self._storm_tables(m)
            for key, op in ops.items():
                if tier in op_tiers(op):
                    tables[key] = st[key]
        if dma != 1.0:
            for key, op in ops.items():
                if op.kind == "dma":
                    t = tables[key]
                    tables[key] = dataclasses.replace(t, time_ns=[x * dma for x in t.time_ns])
        sm.bind(tables)  # resets the memoized parts, the compiled path's constants and the DMA lookups
        sm._peak_w, sm._peak_a = peak_w / gpu, peak_a / gpu
        sm._fixed.clear()

    def prime(self) -> None:
        """Characterize, now, the storm tables the run will need (so the run itself never stops for it)."""
        for inj in self.injectors:
            if inj.type == "refresh_storm":
                self._storm_tables(inj.magnitude)

    def fire(self, now_s: float, sched) -> tuple[float, list]:
        """Apply every event due at or before `now_s`. Returns (the time after any stall, step rows the
        loop appends: a stall's (start, end, 0, ...) row)."""
        rows = []
        hw = False
        while self._ev < len(self.events) and self.events[self._ev][0] <= now_s:
            t, k, what = self.events[self._ev]
            self._ev += 1
            inj = self.injectors[k]
            if what == "on":
                self.active.add(k)
                hw = True
            elif what == "off":
                self.active.discard(k)
                hw = True
            else:
                now_s = self._fail(inj, now_s, sched, rows)
        if hw:
            self._rebind()
        return now_s, rows

    def _fail(self, inj: Injector, now_s: float, sched, rows: list, loop=None) -> float:
        kv, sm, system = self.kv, self.sm, self.prep.system
        stacks = self.failed_stacks(inj)
        if not stacks:
            return now_s
        units: set[int] = set()
        capacity = False
        pim_units = kv.U if kv is not None else 0
        if inj.type == "pim_layer_failure":
            if pim_units:
                units = {0} if pim_units == 1 else {s // sm.stacks_per_unit for s in stacks}
        elif system.pim_stack is None:  # the GPU stacks hold KV
            if pim_units:
                units = {0} if pim_units == 1 else {s // sm.stacks_per_unit for s in stacks}
            capacity = kv is not None and kv.C > 0
        units = {u for u in units if u < pim_units}
        if loop is not None and kv is not None and (units or capacity):
            self._lose_held(loop, units, capacity)
        if kv is not None and (units or capacity):
            reqs = kv.holders_on(sorted(units), capacity)
            self.lost.kv_tokens_lost += int(sched.computed[reqs].sum()) if reqs else 0
            self.lost.requests_interrupted += len(reqs)
            sched.drop_kv(reqs)
            self.lost.blocks_lost += kv.drop_lost(sorted(units), capacity)
            if inj.type == "pim_layer_failure":
                for u in sorted(units):
                    self.lost.pim_slots_lost += kv.disable_unit(u)
        self.lost.events.append((now_s, f"{inj.type} stacks {stacks}: {len(units)} PIM units"
                                        f"{' + capacity tier' if capacity else ''} lost"))
        if inj.type == "stack_failure":
            from tokenstack_sim.hw.link import transfer_time_s
            from tokenstack_sim.hw.stack.energy import path_vector
            from tokenstack_sim.model.shapes import weight_bytes_total
            from tokenstack_sim.sim.step_cost import N_ACTIONS, N_PARTS, OFFSET

            n = system.gpu_stacks_per_gpu
            nbytes = float(weight_bytes_total(self.prep.model.config)) / system.tp * len(stacks) / n
            dt = float(transfer_time_s(system.host_link, nbytes))
            self.lost.reload_s += dt
            self.lost.reload_bytes += nbytes * system.gpus
            parts = [0.0] * N_PARTS
            parts[STALL_PART] = dt
            vec = np.zeros(N_ACTIONS)
            o = OFFSET["gpu_stacks"]
            wr = path_vector("gpu_write")
            vec[o:o + len(wr)] += nbytes * 8 * system.gpus * wr
            krow = None
            if kv is not None:
                krow = (0, 0, 0, 0, sum(kv.pim_used[:kv.U].tolist()) - kv.replica_slots, kv.cap_used,
                        kv.replica_slots)
            sm.records.add(tuple(parts), vec, 0.0, 0.0, 0, krow)
            rows.append((now_s, now_s + dt, 0, 0, 0, sched.pool.num_in_use, sched.num_waiting, 0, 0))
            now_s += dt
        return now_s

    def attach(self, loop) -> None:
        """For the agent loop (runtime/agent_loop.py): the window events and failures as its timed calls."""
        for t, k, what in self.events:
            loop.call_at(t, lambda now, k=k, what=what: self._agent_event(k, what, loop))
        self._ev = len(self.events)

    def _agent_event(self, k: int, what: str, loop) -> None:
        if what == "fail":
            self._agent_fail(self.injectors[k], loop)
            return
        (self.active.add if what == "on" else self.active.discard)(k)
        self._rebind()

    def _agent_fail(self, inj: Injector, loop) -> None:
        """A failure in an agent run, at the loop's present time: as `_fail` (running calls on the lost
        locations resume by recompute, a stack's weights reload while the engine stalls), after the runtime's
        held KV there is let go (`_lose_held`). The stall is a step of the loop's, so the calls and tools
        of the agents go on around it (a tool's clock does not stop)."""
        rows: list = []
        sched = loop.sched
        now = self._fail(inj, loop.now, sched, rows, loop=loop)
        # the calls preempted here are re-admitted like the scheduler's own preemptions (the loop's
        # bookkeeping of admissions: prefix hits, the runtime's `admitted`)
        loop._waiting_ids.update(int(r) for r in sched.waiting)
        loop.steps.extend(rows)
        loop.now = now

    def _lose_held(self, loop, units: set, capacity: bool) -> None:
        """The agent runtime's held KV with data on the lost locations: each finished call's pinned set
        (a stall's KV, an upload or a load in flight; runtime/agent_scheduler.py Pins) that has a block there
        is let go whole (its surviving blocks stay in the prefix cache, as a dropped stall's do), so the
        calls after it recompute what was lost; the runtimes release pins idempotently, so a stall whose
        pins are gone is treated as dropped. A lost capacity tier also loses an offload store kept there
        (runtime/kv_transfer.py `capacity_path`); a host store survives."""
        kv, pins = self.kv, loop.pins
        lost = kv._lost_mask(sorted(units), capacity)
        hit = [o for o, bl in pins.sets.items() if bl and lost[kv.loc[np.asarray(bl, np.int64)] + 1].any()]
        for owner in hit:
            pins.release(owner)
        self.lost.held_kv_lost += len(hit)
        rt = loop.rt
        store, path = getattr(rt, "store", None), getattr(rt, "path", None)
        if capacity and store is not None and path is not None and path.name == "capacity":
            self.lost.store_blocks_lost += store.clear()

    def finish(self) -> dict:
        """Restore the step model's nominal tables and peaks; the run's summary keys of work lost."""
        if self._nominal is not None:
            tables, peak_w, peak_a = self._nominal
            self.sm.bind(tables)
            self.sm._peak_w, self.sm._peak_a = peak_w, peak_a
            self.sm._fixed.clear()
        lo = self.lost
        out = {"perturb_kv_tokens_lost": lo.kv_tokens_lost, "perturb_requests_interrupted": lo.requests_interrupted,
               "perturb_blocks_lost": lo.blocks_lost, "perturb_reload_s": lo.reload_s,
               "perturb_reload_bytes": lo.reload_bytes, "perturb_pim_slots_lost": lo.pim_slots_lost}
        if self.has_failures:
            out |= {"perturb_held_kv_lost": lo.held_kv_lost, "perturb_store_blocks_lost": lo.store_blocks_lost}
        if self.out_pred is not None:
            true = self._out_true
            out["perturb_output_pred_mape"] = float(np.mean(np.abs(self.out_pred - true) / np.maximum(true, 1)))
        return out


def replan(dag, factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(remaining_s, slack_s) of an AgentDag (workload/agent_apps.py: agents.critical_path's static priority
    features) with every node's predicted time x `factor` (per node). The node weights are recovered from
    the DAG's own remaining_s (remaining = weight + the largest successor's remaining), so whatever predictor
    built the DAG is kept; only the scaled nodes change."""
    n = dag.n_nodes
    rem = dag.remaining_s
    indeg = np.diff(dag.pred_offsets).astype(np.int64)
    order, left = [], indeg.copy()  # Kahn: a topological order of all apps' nodes
    stack = np.flatnonzero(left == 0).tolist()
    while stack:
        i = stack.pop()
        order.append(i)
        for s in dag.succs(i).tolist():
            left[s] -= 1
            if left[s] == 0:
                stack.append(s)
    if len(order) != n:
        raise InputError("the agent DAG has a cycle", where="dag")
    w = np.empty(n)
    for i in range(n):
        s = dag.succs(i)
        w[i] = rem[i] - (rem[s].max() if len(s) else 0.0)
    w = np.maximum(w, 0.0) * factor
    new_rem = np.zeros(n)
    for i in reversed(order):
        s = dag.succs(i)
        new_rem[i] = w[i] + (new_rem[s].max() if len(s) else 0.0)
    earliest = np.zeros(n)
    for i in order:
        p = dag.preds(i)
        earliest[i] = (earliest[p] + w[p]).max() if len(p) else 0.0
    total = np.zeros(dag.n_apps)
    roots = indeg == 0
    np.maximum.at(total, dag.app[roots], new_rem[roots])
    slack = np.maximum(total[dag.app] - earliest - new_rem, 0.0)
    return new_rem, slack


def op_tiers(op) -> set[str]:
    """The stack tiers an op reads or writes (refresh_storm's tier scope)."""
    if op.kind == "stream":
        return {op.tier}
    if op.kind == "attention":
        return {"pim"}
    if op.kind == "dma":
        return {op.src, op.dst}
    return {"pim", "capacity"}


def storm_stack(system, stack, m: float):
    """`stack` of `system` (its GPU stack or its PIM device's) reloaded with tREFI and tREFIpb / (1 + m),
    with every override the system gives it kept."""
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.sweep.overrides import toml_literal

    cfg = system.config
    if stack is system.gpu_stack:
        name, sets = cfg.gpu_stack, list(cfg.stack_set)
    else:
        name, sets = cfg.pim_device.stack, list(cfg.pim_device.stack_set)
    n = stack.dram.n
    f = 1.0 + m
    dram_set = list(stack.config.dram_set) + [f"timing.nREFI={max(1, int(n['nREFI'] / f))}",
                                              f"timing.nREFIpb={max(1, int(n['nREFIpb'] / f))}"]
    return load_config(name, sets + [f"dram_set={toml_literal(dram_set)}"], kind="stack")
