"""Benchmark of the serving engine: wall time, simulated requests per second and peak memory.

    python scripts/bench_serving.py [--trace ../shared/traces/azure2023/AzureLLMInferenceTrace_conv.csv]
                                    [--system tokenstack-hbm4] [--model llama-3.1-70b] [--rates 1,4]

Serves the Azure LLM 2023 conversation hour (19,366 requests) at its native rate and at 4x that rate
(arrival times compressed), one run per rate in this process, with op costs from the cache (characterized
first if missing, not timed). Without the trace it falls back to 19,366 requests of the azure-conv-like
spec and says so. Prints figures; asserts nothing. Target (issue 7): <= 60 s each on one core, <= 2 GB peak.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

DEFAULT_TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "azure2023" / "AzureLLMInferenceTrace_conv.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=str(DEFAULT_TRACE))
    ap.add_argument("--system", default="tokenstack-hbm4")
    ap.add_argument("--model", default="llama-3.1-70b")
    ap.add_argument("--rates", default="1,4", help="multiples of the trace's native rate")
    args = ap.parse_args()

    from tokenstack_sim.sim.engine import RunSpec, ensure_tables, prepare, required_pairs, run_prepared
    from tokenstack_sim.workload.readers import read_trace
    from tokenstack_sim.workload.shaping import mean_rate_qps
    from tokenstack_sim.workload.source import load_workload

    if Path(args.trace).is_file():
        table, what = read_trace(args.trace), Path(args.trace).name
    else:
        table, what = load_workload("azure-conv-like", max_requests=19_366, seed=0), "azure-conv-like (trace absent)"
    native = mean_rate_qps(table.rows["arrival_s"])
    ensure_tables(required_pairs(args.system, args.model))
    prep = prepare(args.system, args.model, on_missing="error")
    print(f"{what}: {len(table):,} requests, native {native:.2f} req/s; {args.system}, {args.model}")
    for mult in (float(x) for x in args.rates.split(",")):
        qps = native * mult
        from tokenstack_sim.workload.shaping import scale_rate

        t = scale_rate(table, qps) if mult != 1 else table
        t0 = time.perf_counter()
        r = run_prepared(prep, RunSpec(workload=what, qps=qps), table=t)
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        s = r.summary
        print(f"  {mult:g}x ({qps:.2f} req/s): {wall:6.1f} s wall, {len(t) / wall:8.0f} simulated req/s, "
              f"{s['steps']:,} steps ({s['steps'] / wall:,.0f}/s), simulated {s['makespan_s']:,.0f} s; "
              f"TPOT p50 {1e3 * s['tpot_s_p50']:.1f} ms; peak RSS {peak_mb:,.0f} MB (target <= 60 s, <= 2,048 MB)")


if __name__ == "__main__":
    main()
