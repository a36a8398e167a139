"""The serving loop: requests arrive, the scheduler forms a batch, a step-cost model times it, repeat.

Discrete-event in the sense that matters for one engine: time jumps from step end to step end, and to
the next arrival when the engine is idle. Requests that arrive during a step join the waiting queue at
the step's end (vLLM's engine core adds requests between steps). The step's duration comes from a
pluggable `StepCost` (the hardware model); nothing here is random, so the same inputs give the same
result.
Leaves out: detokenization / API-server overheads, network, multiple engines (DP), pipelined or
asynchronous scheduling (the next step is scheduled only after the previous one ends).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.runtime.params import SchedulerParams
from tokenstack_sim.runtime.scheduler import Batch, make_scheduler
from tokenstack_sim.workload.table import RequestTable, validate


class StepCost(Protocol):
    """Duration of one engine step (forward pass + sampling) for a batch."""

    def step_time_s(self, batch: Batch) -> float: ...


REQUEST_RESULT_DTYPE = np.dtype([
    ("request_id", np.int64),
    ("arrival_s", np.float64),
    ("first_token_s", np.float64),  # end of the step that emitted the first token; NaN if none
    ("finish_s", np.float64),  # end of the step that emitted the last token
    ("input_tokens", np.int64),
    ("output_tokens", np.int64),
    ("preemptions", np.int64),
    ("prefix_hit_tokens", np.int64),  # summed over admissions (a resumed request looks up again)
])

STEP_DTYPE = np.dtype([
    ("start_s", np.float64),
    ("end_s", np.float64),
    ("batch_size", np.int64),
    ("new_tokens", np.int64),  # tokens computed (prefill, recompute and decode)
    ("output_tokens", np.int64),  # tokens sampled
    ("kv_blocks_in_use", np.int64),
    ("num_waiting", np.int64),
    ("preemptions", np.int64),
    ("prefix_hit_tokens", np.int64),
])


@dataclass
class ServeResult:
    requests: np.ndarray  # REQUEST_RESULT_DTYPE, one row per request in table order
    steps: np.ndarray  # STEP_DTYPE, one row per executed step
    counters: dict = field(default_factory=dict)


PROGRESS_EVERY_STEPS = 256


def serve(table: RequestTable, params: SchedulerParams, cost: StepCost, *,
          scheduler: str = "vllm", progress: Callable[[int, int], None] | None = None,
          fast_forward: bool = True, kv=None, perturb=None) -> ServeResult:
    """Run every request of ``table`` to completion; see the module docstring. ``progress(finished,
    total)`` is called every PROGRESS_EVERY_STEPS steps and at the end. ``fast_forward``: take runs of
    pure-decode steps of an unchanged running set through the scheduler's `decode_run_length` /
    `decode_step` (where it has them), which schedule such a step without re-deriving the batch; the
    steps, their times and every record are the same as step by step (tests/test_fast_forward.py).
    ``kv``: a `kv.tiered.TieredKv` to bind to the scheduler (where blocks live across tiers); None for
    one undivided pool. ``perturb``: a `robust.perturb.Perturbation` whose events (slow-downs starting or
    ending, failures) fire at the first step boundary at or after their time (None: the nominal loop)."""
    validate(table)  # sorted arrivals, lengths >= 1 prompt token, hash counts: the loop relies on them
    sched = make_scheduler(scheduler, table, params)
    if kv is not None:
        kv.bind(sched)
    arrival_s = table.rows["arrival_s"]
    n = len(table)
    steps: list[tuple] = []
    now_s = float(arrival_s[0])
    nxt = 0  # next request to arrive
    finished = 0
    fast_forward = fast_forward and hasattr(sched, "decode_run_length")
    while finished < n:
        while nxt < n and arrival_s[nxt] <= now_s:
            sched.add_request(nxt)
            nxt += 1
        if perturb is not None and now_s >= perturb.next_s:
            now_s, stall = perturb.fire(now_s, sched)
            steps.extend(stall)
            continue  # arrivals during a stall join now
        if sched.num_running == 0 and sched.num_waiting == 0:
            now_s = float(arrival_s[nxt]) if perturb is None else max(now_s, min(float(arrival_s[nxt]), perturb.next_s))
            continue
        if fast_forward and sched.num_waiting == 0:
            k = sched.decode_run_length()
            taken = 0
            while taken < k:
                if taken and nxt < n and arrival_s[nxt] <= now_s:
                    break  # it joins at this step's end: the normal path admits it
                if taken and perturb is not None and now_s >= perturb.next_s:
                    break  # an injector's event is due
                batch = sched.decode_step(taken)
                if batch is None:
                    break  # out of blocks: the normal path preempts
                dt_s = float(cost.step_time_s(batch))
                if not (math.isfinite(dt_s) and dt_s > 0):
                    raise ValueError(f"step cost must be finite and > 0 s, got {dt_s!r}")
                start_s = now_s
                now_s += dt_s
                taken += 1
                if progress is not None and len(steps) % PROGRESS_EVERY_STEPS == 0:
                    progress(finished, n)
                b = batch.size
                steps.append((start_s, now_s, b, b, b, batch.kv_blocks_in_use, 0, 0, 0))
            if k:
                sched.decode_finish(taken)
            if taken:
                continue
        batch = sched.schedule()
        if batch.size == 0:
            if batch.preemptions:
                continue  # a request preempted itself; vLLM schedules again (admission next time)
            if sched.num_running == 0:
                raise InputError(f"{_stuck(sched)}, the pool has {params.num_kv_blocks}", where="num_kv_blocks")
            raise RuntimeError("scheduler produced an empty batch with running requests")
        dt_s = float(cost.step_time_s(batch))
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise ValueError(f"step cost must be finite and > 0 s, got {dt_s!r}")
        start_s = now_s
        now_s += dt_s
        done = sched.finish_step(batch, now_s)
        finished += len(done)
        if progress is not None and len(steps) % PROGRESS_EVERY_STEPS == 0:
            progress(finished, n)
        steps.append((start_s, now_s, batch.size, int(batch.new_tokens.sum()), int(batch.emits.sum()),
                      batch.kv_blocks_in_use, batch.num_waiting, batch.preemptions, batch.prefix_hit_tokens))
    if progress is not None:
        progress(finished, n)
    return serve_result(sched, arrival_s, table.rows["input_tokens"], steps)


def serve_result(sched, arrival_s, input_tokens, steps) -> ServeResult:
    """A finished run's per-request results, step records and counters, from the scheduler's state (the
    plain serving loop and the agent loop, runtime/agent_loop.py, build theirs here)."""
    req = np.zeros(len(arrival_s), dtype=REQUEST_RESULT_DTYPE)
    req["request_id"] = np.arange(len(arrival_s))
    req["arrival_s"] = arrival_s
    req["first_token_s"] = sched.first_token_s
    req["finish_s"] = sched.finish_s
    req["input_tokens"] = input_tokens
    req["output_tokens"] = sched.generated
    req["preemptions"] = sched.preemptions
    req["prefix_hit_tokens"] = sched.prefix_hit_tokens
    step_arr = np.array(steps, dtype=STEP_DTYPE) if steps else np.zeros(0, dtype=STEP_DTYPE)
    pool = sched.pool
    counters = {
        "steps": len(step_arr),
        "preemptions": sched.total_preemptions,
        "prefix_hit_tokens": sched.total_prefix_hit_tokens,
        # vLLM's PrefixCacheStats: every lookup counts, including the waiting head's retries after a
        # failed admission; "prefix_hit_tokens" counts each successful admission once.
        "pool_query_tokens": pool.query_tokens,
        "pool_hit_tokens": pool.hit_tokens,
        "pool_evictions": pool.evictions,
        "max_kv_blocks_in_use": int(step_arr["kv_blocks_in_use"].max()) if len(step_arr) else 0,
    }
    return ServeResult(req, step_arr, counters)


def _stuck(sched) -> str:
    """Why an idle engine cannot admit its first waiting request (details where the scheduler has them)."""
    waiting, num_tokens = getattr(sched, "waiting", None), getattr(sched, "num_tokens", None)
    if not waiting or num_tokens is None:
        return "the first waiting request cannot be admitted into an idle engine"
    r = int(waiting[0])
    need = -(-int(num_tokens[r]) // sched.params.block_size)
    return f"request {r} needs {need} KV blocks for its {int(num_tokens[r])} tokens"
