"""The compared systems at equal resources serving one workload at several rates: a small summary table.

    python scripts/serving_comparison.py [--model llama-3.1-70b] [--workload azure-conv-like]
        [--rates 5.53,20,40] [--duration 300] [--workers N] [--out results/serving_comparison.md]

Runs tokenstack-hbm4, attacc-hbm4, uniform-pim-hbm4 and gpu-hbm4 (8 GPUs each, equal stacks and dies)
with the engine's defaults (characterized stack costs, packed PIM batching, auto all-reduce, no overlap,
the default head-sharded KV placement: PIM tier first) and writes a markdown table with each system's
throughput, latency, SLO attainment and energy per output token, and TokenStack's ratio to AttAcc. This is
the baseline placement, not the paper's KV management (a later issue); it tests the hardware side only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SYSTEMS = ("tokenstack-hbm4", "attacc-hbm4", "uniform-pim-hbm4", "gpu-hbm4")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3.1-70b")
    ap.add_argument("--workload", default="azure-conv-like")
    ap.add_argument("--rates", default="5.53,20,40")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "serving_comparison.md"))
    args = ap.parse_args()

    from tokenstack_sim.atomic_io import atomic_write
    from tokenstack_sim.sim.engine import RunSpec, ensure_tables, required_pairs, run_many
    from tokenstack_sim.sim.step_cost import EngineOptions

    rates = [float(x) for x in args.rates.split(",")]
    options = EngineOptions()
    ensure_tables([p for s in SYSTEMS for p in required_pairs(s, args.model, options=options)], workers=args.workers)
    jobs = [(s, args.model, RunSpec(args.workload, qps=q, duration_s=args.duration), options)
            for q in rates for s in SYSTEMS]
    runs = run_many(jobs, workers=args.workers, progress=lambda m: print(" ", m, flush=True))
    by = {(r.params["system"], r.params["qps"]): r for r in runs}
    lines = [f"# {args.model} on {args.workload}, {args.duration:g} simulated s per point",
             "", f"Written by `python scripts/serving_comparison.py --rates {args.rates} --duration {args.duration:g}`. "
             "Equal resources: 8 x b200 compute, 8 stacks x 12 HBM4 dies per GPU. Default engine options; "
             "KV policy: TokenStack's default (topology-aware placement, workload-aware eviction, promotion, "
             "replication); the rivals without migration, their KV interleaved over their PIM units "
             "(sim/engine.py rival_policy). SLO: TTFT <= 2 s, TPOT <= 100 ms.", "",
             "| req/s | system | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | SLO met | "
             "mJ / out tok | PIM attn | KV blocks peak / total |",
             "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for q in rates:
        for s in SYSTEMS:
            r = by[(s, q)]
            if r.status != "ok":
                lines.append(f"| {q:g} | {s} | {r.status}: {r.reason} |||||||||")
                continue
            m = r.summary
            lines.append(f"| {q:g} | {s} | {m['output_tokens_per_s']:,.0f} | {1e3 * m['ttft_s_p50']:,.1f} | "
                         f"{1e3 * m['ttft_s_p99']:,.1f} | {1e3 * m['tpot_s_p50']:.2f} | {1e3 * m['tpot_s_p99']:.2f} | "
                         f"{100 * m['slo_attainment']:.1f}% | {1e3 * m['energy_per_output_token_j']:,.0f} | "
                         f"{100 * m['pim_attention_share']:.0f}% | {m['kv_blocks_peak']:,} / {m['kv_blocks_total']:,} |")
    lines += ["", "TokenStack / AttAcc at each rate (output throughput, TPOT p50 inverse, energy per token):", ""]
    for q in rates:
        a, b = by[("tokenstack-hbm4", q)].summary, by[("attacc-hbm4", q)].summary
        lines.append(f"- {q:g} req/s: throughput x{a['output_tokens_per_s'] / b['output_tokens_per_s']:.2f}, "
                     f"TPOT p50 x{b['tpot_s_p50'] / a['tpot_s_p50']:.2f} faster, energy per token "
                     f"{100 * (a['energy_per_output_token_j'] / b['energy_per_output_token_j'] - 1):+.0f}%")
    with atomic_write(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
