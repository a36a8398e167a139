"""Benchmark of the serving loop with the vLLM-like scheduler (prints figures; no pass/fail).

Steps/s and requests/s of `tokenstack_sim.runtime.serve` on synthetic requests from a workload preset,
with a trivial step-cost model (a fixed time per step plus a time per token), so the figures measure the
scheduler, the block pool and the loop, not a hardware model. Arrivals are rescaled so that the offered
concurrency (Little's law: rate x mean output tokens x step time) is ``--target-running`` requests,
which gives batches of about that many running requests (target >= 2,000 steps/s at ~256).

Usage: python scripts/bench_scheduler.py [--preset azure-conv-like] [--requests 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from tokenstack_sim.kv.kernels import warmup
from tokenstack_sim.runtime import SchedulerParams, serve, summarize
from tokenstack_sim.workload.spec import load_spec
from tokenstack_sim.workload.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]


class TrivialCost:
    """A fixed time per step plus a time per computed token (arbitrary [E] figures for timing only)."""

    def __init__(self, step_s: float, token_s: float):
        self.step_s, self.token_s = step_s, token_s

    def step_time_s(self, batch) -> float:
        return self.step_s + self.token_s * int(batch.new_tokens.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="azure-conv-like")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--target-running", type=float, default=256.0)
    parser.add_argument("--kv-blocks", type=int, default=200_000)
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    table = synthesize(load_spec(ROOT / "workloads" / f"{args.preset}.toml"), args.requests, args.seed)
    cost = TrivialCost(step_s=0.02, token_s=1e-6)
    rows = table.rows
    rate_qps = args.target_running / (rows["output_tokens"].mean() * cost.step_s)
    span_s = rows["arrival_s"][-1] - rows["arrival_s"][0]
    rows["arrival_s"] = (rows["arrival_s"] - rows["arrival_s"][0]) * ((len(rows) / rate_qps) / span_s)
    params = SchedulerParams(num_kv_blocks=args.kv_blocks, enable_prefix_caching=not args.no_prefix_caching)
    warmup()

    times_s, result = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = serve(table, params, cost)
        times_s.append(time.perf_counter() - start)
    best, median = min(times_s), statistics.median(times_s)
    steps = result.steps
    print(f"preset {args.preset}: {args.requests} requests, prefix caching {params.enable_prefix_caching}, "
          f"{params.num_kv_blocks} KV blocks, offered rate {rate_qps:.1f} req/s (simulated)")
    print(f"  steps {len(steps)}; batch size mean {steps['batch_size'].mean():.0f}, "
          f"p50 {np.median(steps['batch_size']):.0f}, max {steps['batch_size'].max()}; "
          f"tokens/step mean {steps['new_tokens'].mean():.0f}; max KV blocks in use "
          f"{result.counters['max_kv_blocks_in_use']}; preemptions {result.counters['preemptions']}; "
          f"prefix-hit tokens {result.counters['prefix_hit_tokens']}")
    print(f"  wall time best {best:.2f} s, median {median:.2f} s over {args.repeats} runs")
    print(f"  {len(steps) / best:,.0f} steps/s, {args.requests / best:,.0f} requests/s (best run)")
    m = summarize(result.requests)
    print(f"  simulated: TTFT p50 {m.ttft_s.p50 * 1e3:.1f} ms, TPOT p50 {m.tpot_s.p50 * 1e3:.1f} ms, "
          f"output {m.output_tokens_per_s:,.0f} tok/s")


if __name__ == "__main__":
    main()
