"""Agent runtimes registered by name, their parameters, and the two agent-agnostic baselines.

A runtime sits between the application graph and the vLLM-like scheduler (`agent_loop.AgentLoop`): it
decides when a ready call enters the scheduler and what happens to an agent's KV between its calls.
- ``vllm`` (`AgentRuntime`): agent-agnostic. A call that ends frees its KV with its request; full blocks
  stay in the prefix cache (LRU), so the next call of the agent hits them if nothing evicted them in
  between, and recomputes the rest. Ready calls enter the scheduler at once (FCFS).
  With ``hold_stalled`` the agent's KV stays instead while its tool runs (pinned from the tool's start to
  its end), as a request paused on a function call keeps its blocks; it is let go when the engine is
  stuck (nothing runs and the first waiting call does not fit: the oldest stall first) or when a running
  call was preempted for blocks (the newest stall first, vLLM's preemption order).
- ``vllm-offload`` (`VllmOffload`): vLLM + an LMCache-like host store (serving.md §2.4): every finished
  call's KV is written to the store in 256-token chunks (full chunks only) over the offload path; a
  waiting call near the head of the queue whose prompt continues past its GPU prefix hit into stored
  chunks leaves the queue while they load (vLLM's WAITING_FOR_REMOTE_KVS) and returns to its head, then
  hits them. Store ``store_gib`` (TokenCake's example server offloads 100 GiB, serving.md §3.1), LRU.
  Loads are held for the call's parent (`agent_scheduler.Pins`); a root call has no parent and loads
  nothing (only cross-app prefixes could be stored for it; the presets share none). Left out: the GPU
  copy a store write reads may be evicted before the write completes (writes take milliseconds).
- ``tokencake`` (`tokencake.TokenCake`): the temporal and spatial schedulers.
- ``pic``, ``tokendance`` (`collective.py`): KV reuse across All-Gather rounds, per request or collective.
Build parameters with `config.schema.build(AgentRuntimeParams, raw)` (`--runtime-opt KEY=VALUE`).
"""

from __future__ import annotations

from dataclasses import dataclass


import numpy as np

from tokenstack_sim.config.schema import spec
from tokenstack_sim.errors import InputError
from tokenstack_sim.runtime.agent_scheduler import cached_prefix
from tokenstack_sim.runtime.kv_transfer import TARGETS, Channels, KvStore, store_blocks

GIB = 2 ** 30


PLACEMENT_ROLES = ("eager", "lazy", "off")  # tokendance on a tiered KV (runtime/collective.py)


@dataclass(frozen=True)
class AgentRuntimeParams:
    # kv_transfer.py: auto = the capacity tier on TokenStack (base-die DMA, quantized), else the host link
    offload_target: str = spec("auto", doc="where offloaded KV goes: " + " | ".join(TARGETS))
    # serving.md §3.1: TokenCake's example server, --kv-offloading-size 100 (GiB); per GPU shard
    store_gib: float = spec(100.0, min=0.0, doc="offload store size per GPU, GiB")
    # serving.md §2.4: LMCache keys 256-token chunks
    chunk_tokens: int = spec(256, min=1, doc="LMCache chunk (vllm-offload), tokens")
    # [E] effective KV utilization counts an idle block read again within this window (TokenCake does not
    # publish its window; 5 s is longer than most tool calls of workloads.md's mixture, shorter than its tail)
    util_window_s: float = spec(5.0, min=0.0, doc="window of 'read again' for effective KV utilization, s")
    # issue 9's vLLM baseline "a stalled agent's KV stays, or is evicted by LRU": false = LRU (a call that
    # ends frees its KV to the prefix cache); true = it stays, as a request paused on a function call in
    # TokenCake's vLLM keeps its blocks (serving.md §3.1: "up to 18.5% of GPU KV is held by idle agents")
    hold_stalled: bool = spec(False, doc="vllm: a stalled agent's KV stays in GPU memory during its tool call")
    # the app SLO of `tokenstack capacity --slo-makespan` (no source: a user's choice); 0 = none
    slo_makespan_s: float = spec(0.0, min=0.0, doc="app makespan SLO for app_slo_attainment, s (0: none)")
    # --- tokencake: temporal scheduler ---
    temporal: bool = spec(True, doc="tokencake: offload stalled agents' KV and upload it ahead of the return")
    # [E] offload when predicted idle time x memory pressure >= this x the round trip (offload + upload)
    offload_gain: float = spec(1.0, min=0.0, doc="tokencake: benefit / transfer-cost threshold")
    # [E] the upload aims to land this long before the predicted return
    upload_margin_s: float = spec(0.05, min=0.0, doc="tokencake: upload lands this early, s")
    # TokenCake docs/features/tokencake.md: safety deadline 4x the prediction, bounded to 60 s .. 1 h
    deadline_factor: float = spec(4.0, min=1.0, doc="tokencake: stall deadline / prediction")
    deadline_min_s: float = spec(60.0, min=0.0, doc="tokencake: shortest stall deadline, s")
    deadline_max_s: float = spec(3600.0, min=0.0, doc="tokencake: longest stall deadline, s")
    # [E] a return more than this off the prediction counts as a misprediction (and when uploaded early, as
    # memory held)
    mispredict_tolerance_s: float = spec(0.1, min=0.0, doc="tokencake: misprediction tolerance, s")
    # [E] 0: the DAG's predictions as given. > 0: the temporal scheduler sees each tool call's predicted
    # duration times exp(sigma x N(0, 1)), drawn per tool node from the workload's seed (claims.md: "inject
    # ... tool-time misprediction"; no source gives a predictor's error distribution)
    prediction_error: float = spec(0.0, min=0.0, max=5.0,
                                   doc="tokencake: sigma of the log error of each tool-time prediction")
    # --- tokencake: spatial scheduler ---
    spatial: bool = spec(True, doc="tokencake: priorities, reserved pool, critical agents protected")
    # [E] share of the pool reserved for critical agents (TokenCake sizes it dynamically; not published)
    reserve_share: float = spec(0.2, min=0.0, max=0.9, doc="tokencake: reserved pool, share of the blocks")
    # [E] a call within this much predicted slack of its app's critical path is critical
    critical_slack_s: float = spec(0.5, min=0.0, doc="tokencake: slack below which a call is critical, s")
    # [E] how often priorities are recomputed (TokenCake: "periodically")
    priority_interval_s: float = spec(0.5, min=0.001, doc="tokencake: priority recompute period, s")
    # [E] the reservation for an upcoming critical call grows linearly over this long before its return
    reserve_ramp_s: float = spec(2.0, min=0.0, doc="tokencake: progressive reservation ramp, s")
    # [E] hybrid priority weights (TokenCake publishes the inputs, not the formula): graph features
    # (criticality within the app = 1 - slack / app critical path, progress = depth / app depth, fan-out,
    # the template's importance mark) and runtime state (share of the prompt's KV resident, time waited,
    # age of the app: across apps the oldest first, which keeps apps finishing under load)
    w_critical_path: float = spec(1.0, min=0.0, doc="tokencake: weight of criticality within the app")
    w_fanout: float = spec(0.25, min=0.0, doc="tokencake: weight of fan-out")
    w_depth: float = spec(0.5, min=0.0, doc="tokencake: weight of progress (depth) within the app")
    w_importance: float = spec(0.25, min=0.0, doc="tokencake: weight of the template's importance mark")
    w_resident: float = spec(0.5, min=0.0, doc="tokencake: weight of the prompt share already in GPU KV")
    w_wait: float = spec(0.5, min=0.0, doc="tokencake: weight of waiting time (per wait_norm_s)")
    w_age: float = spec(1.0, min=0.0, doc="tokencake: weight of the app's age (per wait_norm_s)")
    wait_norm_s: float = spec(10.0, min=0.001, doc="tokencake: waiting time that adds w_wait, s")
    # --- pic / tokendance (runtime/collective.py) ---
    # serving.md §2.4: CacheBlend-15 recomputes ~15% of the reused tokens
    recompute_ratio: float = spec(0.15, min=0.0, max=1.0, doc="pic/tokendance: share of a reused output recomputed")
    # issue 10 item 5: on a tiered KV (kv/tiered.py) the master copy, read by every sibling at every decode step,
    # is written into the PIM units; diffs (one reader) into the capacity tier ("eager") or only marked as the
    # first to leave a full PIM unit ("lazy"), as are histories idle between an agent's calls in both;
    # "off": the KV policy alone decides (runtime/collective.py). Default lazy: with PIM room to spare a diff
    # is attended faster in PIM (measured: 10 generative-agents-like agents on tokenstack-hbm4-1gpu's own pool,
    # round span 0.540 s eager vs 0.514 s lazy and off); with PIM full, lazy and eager placed alike
    # (results/tokendance.md, placement roles)
    placement_roles: str = spec("lazy", doc="tokendance: " + " | ".join(PLACEMENT_ROLES))

    def __post_init__(self):
        if self.placement_roles not in PLACEMENT_ROLES:
            raise InputError(f"expected one of {', '.join(PLACEMENT_ROLES)}, got {self.placement_roles!r}",
                             where="placement_roles")
        if self.offload_target not in TARGETS:
            raise InputError(f"expected one of {', '.join(TARGETS)}, got {self.offload_target!r}",
                             where="offload_target")
        if self.deadline_max_s < self.deadline_min_s:
            raise InputError(f"deadline_max_s {self.deadline_max_s} < deadline_min_s {self.deadline_min_s}",
                             where="deadline_max_s")


class AgentRuntime:
    """``vllm``: agent-agnostic (module docstring). The hooks every runtime has."""
    name = "vllm"

    def __init__(self, loop, params: AgentRuntimeParams, path=None):
        self.loop = loop
        self.p = params
        self.path = path
        self.sched = loop.sched
        self.pool = loop.sched.pool
        self.pins = loop.pins
        self.dag = loop.dag
        self.bs = loop.params.block_size
        self.c = {"offload_bytes": 0.0, "upload_bytes": 0.0}
        self._hold = bool(params.hold_stalled) and type(self) is AgentRuntime  # vllm only
        self._hold_owners: dict[int, int] = {}  # owner -> tools running after it (insertion order = stall order)
        self._preempts = 0
        if self._hold:
            self.c.update(stalls_held=0, stalls_let_go=0)

    # what a ready call, a tool and a finished call do
    def release(self, r: int, t: float) -> None:
        self.loop.admit(r, t)

    def _llm_preds(self, node: int) -> list[int]:
        d = self.dag
        return [int(d.request[x]) for x in d.preds(node).tolist() if d.kind[x] == 0]

    def tool_started(self, node: int, t: float) -> None:
        if not self._hold:
            return
        for owner in self._llm_preds(node):
            if owner not in self._hold_owners:
                self.pins.pin_cached(owner, self.sequence_hashes(owner))
                self.c["stalls_held"] += 1
            self._hold_owners[owner] = self._hold_owners.get(owner, 0) + 1

    def tool_done(self, node: int, t: float) -> None:
        if not self._hold:
            return
        for owner in self._llm_preds(node):
            n = self._hold_owners.get(owner)
            if n is None:
                continue  # let go under pressure already
            if n > 1:
                self._hold_owners[owner] = n - 1
            else:
                del self._hold_owners[owner]
                self.pins.release(owner)  # the calls after it are released now and hit what stayed

    def _let_go(self, newest: bool) -> bool:
        if not self._hold_owners:
            return False
        owner = next(reversed(self._hold_owners)) if newest else next(iter(self._hold_owners))
        del self._hold_owners[owner]
        self.c["stalls_let_go"] += 1
        return self.pins.release(owner) > 0

    def finished(self, r: int, t: float) -> None:
        pass

    def admitted(self, rs: list[int], t: float) -> None:
        pass

    def before_step(self, now: float) -> None:
        if self._hold and self._hold_owners:
            preempted = self.sched.total_preemptions != self._preempts
            self._preempts = self.sched.total_preemptions
            if preempted:  # a running call lost its blocks while stalls hold theirs: vLLM preempts the newest
                while self.pool.num_free < self.running_need() and self._let_go(newest=True):
                    pass

    def relieve(self, now: float, need_idle: bool = False) -> bool:
        """Free held memory because admission is stuck; True if anything was freed."""
        return self._let_go(newest=False) if self._hold else False

    def quiet(self) -> bool:
        """Nothing to do per step (the loop may take its fast path)."""
        return True

    def quiet_steps(self, k: int) -> int:
        """How many of the next k pure-decode steps leave `before_step` nothing to do."""
        return k

    def pending_work(self) -> bool:
        return False

    def charged_prompt_tokens(self) -> int:
        """Prompt tokens computed by work this runtime charged to steps itself, outside the scheduler's."""
        return 0

    def pinned_only(self) -> int:
        """Blocks this runtime holds that no running call holds (idle memory in the KV use figures)."""
        return self.pins.pinned_only()

    def flush(self, now: float) -> None:
        pass

    def counters(self) -> dict:
        return self._with_transfer_energy(dict(self.c))

    def take_transfer_actions(self):
        """Step actions of the KV moved since the last call, or None (kv_transfer.Channels.take)."""
        ch = getattr(self, "ch", None)
        return None if ch is None else ch.take()

    def _with_transfer_energy(self, out: dict) -> dict:
        """Counters plus the energy of every transfer (J, whole system; in the run's energy breakdown too)."""
        ch = getattr(self, "ch", None)
        store = getattr(self, "store", None)
        if store is not None:
            out["store_blocks"] = store.capacity
        if ch is not None:
            e = ch.energy_j()
            out["transfer_energy_j"] = float(sum(e.values()))
            for c, j in e.items():
                if j:
                    out[f"transfer_energy_j_{c}"] = float(j)
        return out

    # helpers
    def running_need(self) -> int:
        """Blocks the running calls still need for the tokens they know (unfinished prefills) plus the
        next decode step's: memory a runtime must not take for itself, or a running call preempts."""
        sched = self.sched
        run = sched.running
        if len(run) == 0:
            return 0
        known = -(-sched.num_tokens[run] // self.bs)
        return int(np.maximum(known - sched.num_blocks[run], 0).sum()) + len(run) // self.bs + 1

    def prompt_hashes(self, r: int) -> list[int]:
        """Hashes of request r's full prompt blocks that a lookup may hit (capped at num_tokens - 1)."""
        h = self.sched.hashes
        if h is None:
            return []
        return h.first(r, (int(self.sched.num_tokens[r]) - 1) // self.bs)

    def sequence_hashes(self, r: int) -> list[int]:
        """Hashes of the full blocks request r computed."""
        h = self.sched.hashes
        if h is None:
            return []
        return h.first(r, int(self.sched.computed[r]) // self.bs)


class StoreLoads:
    """Loads from an offload store for the first waiting calls (vLLM's KV connector, LMCache-like): a call
    near the head of the queue whose prompt continues past its GPU prefix hit into stored blocks leaves
    the queue while they load (WAITING_FOR_REMOTE_KVS) and returns to its head when they land. Only
    calls that would then be admitted (their whole need fits the free blocks) load. The loaded blocks are
    held (`Pins`) for an owner (``owner_of(call)``: a finished call) until the call is admitted."""
    SCAN = 8  # [E] waiting calls (from the head) looked up in the store before each step

    def __init__(self, rt: "AgentRuntime", store: KvStore, ch: Channels, owner_of):
        self.rt, self.store, self.ch, self.owner_of = rt, store, ch, owner_of
        self.waiters: dict[int, set] = {}  # owner -> calls whose loaded blocks it holds until admitted
        self.loading: set[int] = set()
        self.landed: set[int] = set()  # calls back at the head of the queue with their KV loaded

    def scan(self, now: float) -> None:
        rt = self.rt
        sched, pool, bs = rt.sched, rt.pool, rt.bs
        waiting = sched.waiting
        if not waiting:
            return
        budget = pool.num_free - rt.running_need()  # never take what running calls still need
        for r in list(waiting)[: self.SCAN]:
            owner = self.owner_of(r)
            hashes = rt.prompt_hashes(r)
            need = -(-int(sched.num_tokens[r]) // bs)
            if owner < 0 or not hashes:
                budget -= need
                if budget < 0:
                    break  # the budget only falls: no later call would load either
                continue
            g = len(cached_prefix(pool, hashes))
            budget -= need - g  # blocks it takes on admission (the GPU part it hits is there already)
            if budget < 0:
                break  # it (and every later call) would not be admitted once loaded: hold no memory for it
            k = self.store.prefix(hashes, g, now)
            if k == 0:
                continue
            rt.pins.pin_cached(owner, hashes, g)  # keep the GPU part while the rest loads
            k = min(k, pool.num_free - rt.running_need())
            if k <= 0:
                if owner not in self.waiters:
                    rt.pins.release(owner)
                break
            self.waiters.setdefault(owner, set()).add(r)
            load = hashes[g:g + k]
            for h in load:
                self.store.touch(h)
            rt.pins.allocate(owner, load)
            _, end = self.ch.schedule("up", k, now)
            rt.c["upload_bytes"] += k * rt.path.moved_bytes_per_block * rt.path.gpus
            rt.c["loads"] += 1
            rt.c["loaded_blocks"] += k
            rt.c["load_wait_s"] += end - now
            waiting.remove(r)
            self.loading.add(r)
            rt.loop.call_at(end, lambda t, o=owner, r=r, s=frozenset(load): self._landed(o, r, t, s))

    def _landed(self, owner: int, r: int, now: float, only) -> None:
        landed = self.rt.pins.land(owner, only)
        self.rt.loop.tracker.fresh(landed, now)
        self.loading.discard(r)
        self.landed.add(r)
        self.rt.sched.waiting.appendleft(r)

    def admitted(self, r: int) -> None:
        self.landed.discard(r)
        owner = self.owner_of(r)
        w = self.waiters.get(owner)
        if w and r in w:
            w.discard(r)
            if not w:
                del self.waiters[owner]
                self.rt.pins.release(owner)

    def relieve(self) -> bool:
        freed = False
        for owner in list(self.waiters):
            if not any(r in self.loading for r in self.waiters[owner]):
                del self.waiters[owner]
                freed |= self.rt.pins.release(owner) > 0
        return freed


class VllmOffload(AgentRuntime):
    """``vllm-offload``: vLLM + an LMCache-like store (module docstring)."""
    name = "vllm-offload"

    def __init__(self, loop, params, path=None):
        super().__init__(loop, params, path)
        if path is None:
            raise InputError("vllm-offload needs an offload path (the system's host link)", where="--runtime")
        self.ch = Channels(path)
        self.store = KvStore(store_blocks(path, params.store_gib))
        self.cb = max(1, params.chunk_tokens // self.bs)  # blocks per chunk
        rows = self.sched.table.rows
        self.loads = StoreLoads(self, self.store, self.ch, lambda r: int(rows["parent_id"][r]))
        self.c.update(loads=0, load_wait_s=0.0, loaded_blocks=0, stored_blocks=0)

    def finished(self, r: int, t: float) -> None:
        seq = self.sequence_hashes(r)
        seq = seq[: len(seq) // self.cb * self.cb]  # full chunks only
        new = self.store.missing(seq)
        if new:
            _, end = self.ch.schedule("down", len(new), t)
            self.store.add(new, end)
            self.c["offload_bytes"] += len(new) * self.path.moved_bytes_per_block * self.path.gpus
            self.c["stored_blocks"] += len(new)

    def before_step(self, now: float) -> None:
        self.loads.scan(now)

    def admitted(self, rs, t):
        for r in rs:
            self.loads.admitted(r)

    def relieve(self, now, need_idle=False):
        return self.loads.relieve()

    def counters(self):
        out = self._with_transfer_energy(dict(self.c))
        out["store_evictions"] = self.store.evictions
        return out


def _tokencake():
    from tokenstack_sim.runtime.tokencake import TokenCake

    return TokenCake


def _collective(name):
    def get():
        from tokenstack_sim.runtime import collective

        return {"pic": collective.Pic, "tokendance": collective.TokenDance}[name]
    return get


RUNTIMES = {"vllm": lambda: AgentRuntime, "vllm-offload": lambda: VllmOffload, "tokencake": _tokencake,
            "pic": _collective("pic"), "tokendance": _collective("tokendance")}


def make_runtime(name: str, loop, params: AgentRuntimeParams, path=None) -> AgentRuntime:
    """The runtime registered as `name`; an unknown name lists the known ones."""
    try:
        cls = RUNTIMES[name]()
    except KeyError:
        raise InputError(f"unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}", where="--runtime") from None
    return cls(loop, params, path)
