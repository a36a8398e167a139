#!/usr/bin/env python
"""Benchmark the cycle-level DRAM kernel: requests/s and commands/s per pattern, HBM3 and HBM4.

Prints a table; asserts nothing. Compile time is measured apart (first call of the process; numba
caches the machine code on disk, so a second process compiles nothing). Each figure is the best of
`--repeat` runs on the same trace, shown two ways: the kernel alone, and the whole `run_dram` call
(address mapping, kernel and summary; trace generation excluded). The issue's floor is 1M requests/s on one core for every pattern; target 5M.

    python scripts/bench_dram.py [--requests 1000000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time

from tokenstack_sim.config import load_config
from tokenstack_sim.hw.dram.patterns import generate
from tokenstack_sim.hw.dram.run import run_dram, warmup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--presets", nargs="+", default=["hbm3-ramulator21", "hbm4-ramulator21"])
    args = ap.parse_args()

    t0 = time.perf_counter()
    warmup()
    print(f"warm-up (compile or load from cache): {time.perf_counter() - t0:.2f} s")
    print(f"{'preset':<18} {'pattern':<11} {'requests':>10} {'GB/s':>8} {'kernel s':>8} {'Mreq/s':>7} "
          f"{'Mcmd/s':>7} {'run s':>6} {'Mreq/s':>7} {'passes/req':>10}")
    for preset in args.presets:
        r = load_config(preset)
        for pattern in ("sequential", "random", "mixed"):
            req = generate(pattern, args.requests, r.capacity_bytes, r.access_bytes, seed=0)
            best = None
            for _ in range(args.repeat):
                res = run_dram(r, req)
                if best is None or res.kernel_s < best.kernel_s:
                    best = res
            cmds = sum(best.command_counts.values())
            k = best.kernel_s
            print(f"{preset:<18} {pattern:<11} {best.requests:>10,} {best.bandwidth_GBps:>8.1f} {k:>8.3f} "
                  f"{best.requests / k / 1e6:>7.2f} {cmds / k / 1e6:>7.2f} {best.wall_s:>6.3f} "
                  f"{best.requests / best.wall_s / 1e6:>7.2f} {best.kernel_events['channel_passes'] / best.requests:>10.2f}")


if __name__ == "__main__":
    main()
