"""Benchmark of characterized op costs: look-ups per second and the time to characterize a config.

    python scripts/bench_ops.py [--config hbm4-12h-tokenstack] [--lookups 1000000] [--skip-characterize]

Characterizes into a fresh temporary cache (one core, from nothing) unless --skip-characterize, then
times vectorized look-ups of every op at random sizes and load shares. Prints figures; asserts nothing.
Targets (issue 6): >= 1M look-ups/s vectorized; <= 60 s to characterize one config.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="hbm4-12h-tokenstack")
    ap.add_argument("--lookups", type=int, default=1_000_000)
    ap.add_argument("--skip-characterize", action="store_true", help="use the cache in $TOKENSTACK_CACHE")
    args = ap.parse_args()
    if not args.skip_characterize:
        os.environ["TOKENSTACK_CACHE"] = tempfile.mkdtemp(prefix="tokenstack-bench-")
    from tokenstack_sim.cli.opcost_cmd import default_ops
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.hw.dram.run import warmup
    from tokenstack_sim.hw.opcost import OpCosts

    warmup()
    st = load_config(args.config, kind="stack")
    costs = OpCosts(st, on_missing="characterize")
    t0 = time.perf_counter()
    tables = {}
    for op in default_ops(st):
        t1 = time.perf_counter()
        tables[op.op_id] = costs.table(op)
        tab = tables[op.op_id]
        print(f"{op.op_id:<38} {costs.origin[op.op_id]:<6} {len(tab.sizes[0])} sizes (0 .. {tab.max_size:,.0f} "
              f"{tab.size_unit}) x {len(tab.shares)} loads {tab.shares.tolist()}: {time.perf_counter() - t1:6.1f} s, "
              f"held-out max error {100 * tab.max_rel_error:.1f}%")
    print(f"characterize {args.config}: {time.perf_counter() - t0:.1f} s (target <= 60 s on one core)")
    rng = np.random.default_rng(0)
    for op_id, tab in tables.items():
        size = rng.uniform(0, tab.max_size, args.lookups)
        share = rng.uniform(0, tab.shares[-1], args.lookups)
        tab.time(size[:1000], share[:1000])
        t1 = time.perf_counter()
        tab.time(size, share)
        dt = time.perf_counter() - t1
        print(f"look-ups {op_id:<38} {args.lookups / dt / 1e6:6.1f} M/s (vectorized batch of {args.lookups:,})")


if __name__ == "__main__":
    main()
