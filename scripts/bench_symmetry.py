"""Channel symmetry: the whole-stack kernel against the one-channel slice that op costs are made from.

    python scripts/bench_symmetry.py [--config hbm4-12h-tokenstack] [--loads 0,0.05,0.2] [--seeds 4]
                                     [--ops stream-capacity,...]

Characterized costs simulate one channel (with 1 / channels of the op) and take its time as the
stack's (hw/opcost/simulate.py). For each op of the config's default set, at four sizes from a few
hundred ns to tens of us, this runs the whole op on every channel at once under a Poisson background
at each load share on every channel (`simulate_whole_stack`, mean over --seeds realizations) and
prints it beside the slice's expected time (`simulate_op`, to a 1% standard error), both without
refresh so that only the channels differ. At load 0 the two agree (tests/test_opcost.py checks it);
under load the stack's op ends with its slowest channel, and the gap shows how far one channel's
expectation is from the stack's time. Beside it, a candidate correction: the slice's mean plus its draws'
standard deviation times the expected maximum of `channels` standard normals (2.07 for 32), as if the
channels were independent and normal; its gap to the whole stack is the last column. Prints figures;
asserts nothing. Takes ~1 min on one core.
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import numpy as np

SIZES = {"stream": [256e3, 1e6, 4e6, 16e6], "dma": [128e3, 512e3, 2e6, 8e6], "attention": [256, 1024, 4096, 16384]}


@functools.lru_cache
def expected_max_of_normals(n: int) -> float:
    """E[max of n independent standard normals]: the integral of x n phi(x) Phi(x)^(n-1), summed on a fine
    grid (the integrand vanishes at its ends)."""
    x, dx = np.linspace(-8.0, 8.0, 16001, retstep=True)
    phi = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    return float(np.sum(x * n * phi * cdf ** (n - 1)) * dx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="hbm4-12h-tokenstack")
    ap.add_argument("--loads", default="0,0.05,0.2", help="comma-separated load shares")
    ap.add_argument("--seeds", type=int, default=4, help="background realizations of each whole-stack run")
    ap.add_argument("--ops", default="", help="comma-separated op ids (default: the config's default ops)")
    args = ap.parse_args()
    from tokenstack_sim.cli.opcost_cmd import default_ops
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.hw.dram.run import warmup
    from tokenstack_sim.hw.opcost.simulate import _slice, simulate_op, simulate_whole_stack

    warmup()
    st = load_config(args.config, kind="stack")
    loads = [float(x) for x in args.loads.split(",")]
    ops = [op for op in default_ops(st) if not args.ops or op.op_id in args.ops.split(",")]
    t0 = time.perf_counter()
    print(f"{args.config}: whole stack (mean of {args.seeds} backgrounds) against the one-channel slice's "
          "expected time, refresh off")
    print(f"| {'op':<34} | {'size':>12} | load | {'slice ns':>9} | draws' cv | {'whole ns':>9} | {'+- se':>6} | gap "
          "| normal-max gap |")
    print(f"|{'-' * 36}|{'-' * 14}|-----:|{'-' * 11}|----------:|{'-' * 11}|{'-' * 8}|----:|---------------:|")
    gaps, fixed = {}, {}
    for op in ops:
        n_ch = _slice(st, op)[1]
        for size in SIZES[op.kind]:
            if op.kind != "attention":  # whole accesses on every channel: the slice then moves exactly 1 / n_ch
                q = st.dram.access_bytes * n_ch
                size = float(round(size / q) * q)
            for share in loads:
                sliced, _, det = simulate_op(st, op, size, share, refresh="off", draw_se=0.01, max_draws=64)
                draws = np.array(det.get("draw_times_ns") or [sliced])
                sd = float(np.std(draws, ddof=1)) if len(draws) > 1 else 0.0
                whole, ts = simulate_whole_stack(st, op, size, share, seeds=args.seeds)
                se = float(np.std(ts, ddof=1) / np.sqrt(len(ts))) if len(ts) > 1 else 0.0
                gap = whole / sliced - 1
                fix = (sliced + sd * expected_max_of_normals(n_ch)) / whole - 1
                gaps.setdefault(share, []).append(gap)
                fixed.setdefault(share, []).append(fix)
                print(f"| {op.op_id:<34} | {size:>12,.0f} | {share:4g} | {sliced:>9,.0f} | {100 * sd / sliced:>8.1f}% | "
                      f"{whole:>9,.0f} | {se:>6,.0f} | {100 * gap:+.1f}% | {100 * fix:+.1f}% |", flush=True)
    for share, g in gaps.items():
        g, f = np.array(g), np.array(fixed[share])
        print(f"load {share:g}: gap max {100 * g.max():+.1f}%, min {100 * g.min():+.1f}%, mean {100 * g.mean():+.1f}% "
              f"over {len(g)} points; normal-max: |gap| max {100 * np.abs(f).max():.1f}%, "
              f"mean {100 * np.abs(f).mean():.1f}%")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
