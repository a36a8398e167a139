"""PIM attention time per placement on one TokenStack HBM4 stack, alone and beside GPU streaming.

One decode-attention layer of Llama-3.1-70B (8 KV heads, 8 query heads per KV head, head dim 128,
BF16 KV; model_shapes.csv) for one request of 2k, 8k and 32k tokens, on `hbm4-12h-tokenstack` with
each PIM placement, run on the cycle kernel: alone, and with the GPU streaming reads from the two
capacity SIDs for the whole time. Bounds printed beside: KV bytes / the units' internal bandwidth and
MACs / their peak rate. Writes results/pim_attention.md.

    python scripts/pim_attention_table.py [--tokens 2048,8192,32768] [--out results/pim_attention.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.config.loader import load_config
from tokenstack_sim.hw.stack.dma import GpuStream
from tokenstack_sim.hw.stack.pim import PimUnits, attention_programs
from tokenstack_sim.hw.stack.run import run_stack

SHAPE = dict(kv_heads=8, gqa=8, head_dim=128, kv_bytes=2)  # Llama-3.1-70B, BF16
PLACEMENTS = ("bank", "bank_pair", "bank_group", "base_die")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="2048,8192,32768")
    ap.add_argument("--stack", default="hbm4-12h-tokenstack")
    ap.add_argument("--out", default="results/pim_attention.md")
    args = ap.parse_args()
    tokens = [int(x) for x in args.tokens.split(",")]
    base = load_config(args.stack, kind="stack")
    gpu_alone = run_stack(base, gpu=GpuStream(64 << 20)).gpu_bw_GBps
    rows = []
    t_start = time.perf_counter()
    for placement in PLACEMENTS:
        st = load_config(args.stack, [f'pim.placement="{placement}"'], kind="stack")
        u = PimUnits.of(st)
        for k in tokens:
            kv = 2 * k * SHAPE["kv_heads"] * SHAPE["head_dim"] * SHAPE["kv_bytes"]
            macs = 2 * k * SHAPE["kv_heads"] * SHAPE["head_dim"] * SHAPE["gqa"]
            alone = run_stack(st, programs=attention_programs(st, tokens=k, **SHAPE))
            t_alone = alone.op_time_ns[0]
            # keep the GPU streaming from the capacity SIDs past the end of the attention
            gpu_bytes = int(t_alone * st.dram.peak_bw_GBps * 1.3)
            both = run_stack(st, programs=attention_programs(st, tokens=k, **SHAPE), gpu=GpuStream(gpu_bytes))
            rows.append((placement, k, kv / u.internal_bw_GBps, macs / (u.peak_tflops * 1e3 / 2), t_alone,
                         both.op_time_ns[0], both.gpu_bw_GBps, alone.throttled_share, both.throttled_share))
            print(f"{placement:<10} {k:>6} tokens: alone {t_alone / 1e3:8.2f} us, with GPU streaming "
                  f"{both.op_time_ns[0] / 1e3:8.2f} us (GPU {both.gpu_bw_GBps:,.0f} GB/s)  "
                  f"[{time.perf_counter() - t_start:.0f} s]", file=sys.stderr)
    lines = [
        f"# PIM attention on one `{args.stack}` stack, per placement",
        "",
        "One decode-attention layer of Llama-3.1-70B (8 KV heads x GQA 8, head dim 128, BF16 KV) for one",
        "request, on the cycle kernel (`python scripts/pim_attention_table.py`). 'with GPU' = the GPU streams",
        "reads from the two capacity SIDs of every channel for the whole time (concurrent access on).",
        "Bounds: KV bytes / the units' internal bandwidth (memory), MACs / their peak rate (compute).",
        f"Power budget {base.config.power.budget_w:g} W per stack; 'throttled' = share of cycles with a command "
        "held back by it.",
        f"The GPU alone streams {gpu_alone:,.0f} GB/s from the capacity SIDs (64 MiB; peak "
        f"{base.dram.peak_bw_GBps:,.0f} GB/s over all SIDs).",
        "Each run starts just after a refresh: an op that the GPU slows past the next one, due "
        f"{base.dram.n['nREFI'] * base.dram.tck_ns / 1e3:.1f} us in, also waits for it.",
        "",
        "| placement | tokens | memory bound us | compute bound us | alone us | with GPU us | GPU GB/s meanwhile "
        "| throttled alone / with GPU |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p, k, mb, cb, a, b, g, th_a, th_b in rows:
        lines.append(f"| {p} | {k:,} | {mb / 1e3:.2f} | {cb / 1e3:.2f} | {a / 1e3:.2f} | {b / 1e3:.2f} | {g:,.0f} "
                     f"| {th_a:.1%} / {th_b:.1%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
