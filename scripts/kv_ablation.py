"""TokenStack's KV management with each policy switched off in turn, beside AttAcc at its best split.

    python scripts/kv_ablation.py [--model llama-3.1-70b] [--workload mooncake-conv-like] [--rates 1,2]
        [--duration 180] [--splits 2,3,4,5,6] [--workers N] [--out results/kv_ablation.md]

Runs tokenstack-hbm4 with the default KV policy (kv/policy.py: topology-aware placement, workload-aware
eviction with INT8 demotion, promotion, 5% replication) and with one switch changed at a time, then
attacc-hbm4 at each PIM-stack split (`pim_device.pim_stacks`), picking the best by output throughput
(ties by TPOT p99), at each rate (multiples of the workload's own). Writes a markdown table per rate: throughput, TPOT p50/p99, energy per output token, PIM
share of attention, migrations and gathers. Each row is one seed; the spread between seeds is not
measured here (use `tokenstack run --seeds N` for intervals).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

VARIANTS = [
    ("all on (default)", {}),
    ("placement round-robin", {"placement": "round-robin"}),
    ("placement interleaved", {"placement": "interleaved"}),
    ("eviction LRU", {"eviction": "lru"}),
    ("no eviction / migration", {"eviction": "none"}),
    ("no quantization (FP16 capacity)", {"demote_format": "fp16"}),
    ("no replication", {"replication_budget": 0.0}),
    ("no promotion", {"promotion": False}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3.1-70b")
    ap.add_argument("--workload", default="mooncake-conv-like")
    ap.add_argument("--rates", default="1,2", help="multiples of the workload's own rate")
    ap.add_argument("--duration", type=float, default=180.0)
    ap.add_argument("--splits", default="2,3,4,5,6", help="AttAcc PIM stacks per GPU to try")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "kv_ablation.md"))
    args = ap.parse_args()

    from tokenstack_sim.atomic_io import atomic_write
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.sim.engine import RunSpec, ensure_tables, required_pairs, run_many
    from tokenstack_sim.sim.step_cost import EngineOptions

    options = EngineOptions()
    splits = [int(x) for x in args.splits.split(",")]
    attacc = {k: load_config("attacc-hbm4", [f"pim_device.pim_stacks={k}"], kind="system") for k in splits}
    pairs = [p for _, kv in VARIANTS for p in required_pairs("tokenstack-hbm4", args.model, options=options, kv=kv)]
    pairs += [p for s in attacc.values() for p in required_pairs(s, args.model, options=options)]
    ensure_tables(pairs, workers=args.workers, progress=lambda m: print(" ", m, flush=True))

    from tokenstack_sim.workload.shaping import mean_rate_qps
    from tokenstack_sim.workload.source import load_workload

    native = mean_rate_qps(load_workload(args.workload, seed=0, duration_s=args.duration).rows["arrival_s"])
    rates = [float(x) for x in args.rates.split(",")]

    def spec(mult, kv=None):
        return RunSpec(args.workload, qps=None if mult == 1 else mult * native, duration_s=args.duration,
                       kv=dict(kv or {}))

    jobs = []
    for m in rates:
        jobs += [("tokenstack-hbm4", args.model, spec(m, kv), options) for _, kv in VARIANTS]
        jobs += [(("attacc-hbm4", (f"pim_device.pim_stacks={k}",)), args.model, spec(m), options) for k in splits]
    t0 = time.perf_counter()
    runs = run_many(jobs, workers=args.workers, progress=lambda m: print(" ", m, flush=True))
    wall = time.perf_counter() - t0

    def row(label, r):
        if r.status != "ok":
            return f"| {label} | {r.status}: {r.reason} ||||||||"
        m = r.summary
        return (f"| {label} | {m['output_tokens_per_s']:,.0f} | {1e3 * m['tpot_s_p50']:.1f} | {1e3 * m['tpot_s_p99']:.1f} | "
                f"{1e3 * m['energy_per_output_token_j']:,.0f} | {100 * m['pim_attention_share']:.1f}% | "
                f"{m.get('kv_migrations_per_s', 0):,.0f} | {m.get('kv_gathers_per_decode', 0):.2f} | "
                f"{100 * m.get('prefix_hit_rate', 0):.1f}% |")

    lines = [f"# KV management ablation: {args.model} on {args.workload}, {args.duration:g} simulated s per run",
             "", f"Written by `python scripts/kv_ablation.py --workload {args.workload} --duration {args.duration:g} "
             f"--rates {args.rates}` ({wall:.0f} s wall, 2 processes). Engine defaults (characterized stack costs, "
             "packed PIM batching, no overlap); one seed per row; first and last 10% of requests left out of the "
             "latency statistics. Energy includes static power. AttAcc's best split is the one with the highest "
             "output throughput (ties: TPOT p99)."]
    per = len(VARIANTS) + len(splits)
    for i, m in enumerate(rates):
        chunk = runs[i * per:(i + 1) * per]
        ts, aa = chunk[: len(VARIANTS)], dict(zip(splits, chunk[len(VARIANTS):]))
        ok = {k: r for k, r in aa.items() if r.status == "ok"}
        best = max(ok, key=lambda k: (ok[k].summary["output_tokens_per_s"], -ok[k].summary["tpot_s_p99"])) if ok else None
        lines += ["", f"## {m:g}x the workload's rate ({m * native:.2f} req/s)", "",
                  "| configuration | output tok/s | TPOT p50 ms | TPOT p99 ms | mJ / out tok | PIM attn | "
                  "KV moves / s | gathers / decode seq | prefix hits |",
                  "|:---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [row(f"tokenstack-hbm4, {label}", r) for (label, _), r in zip(VARIANTS, ts)]
        for k, r in aa.items():
            lines.append(row(f"attacc-hbm4, {k} PIM stacks{' (best)' if k == best else ''}", r))
    atomic_write_text(atomic_write, args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {args.out}")


def atomic_write_text(atomic_write, path: str, text: str) -> None:
    with atomic_write(Path(path), mode="w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
