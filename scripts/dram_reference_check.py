#!/usr/bin/env python
"""Reproduce the peer simulator's DRAM reference points with the same presets, map and front end.

Prints our figure beside the peer's (from ../shared/reference/dram_reference_points.md) and the gap,
plus the closed-form checks: unloaded read latency against tRP + tRCD + CL (+ burst). Asserts nothing.

    python scripts/dram_reference_check.py [--requests 1000000] [--markdown]
"""

from __future__ import annotations

import argparse

import numpy as np

from tokenstack_sim.config import load_config
from tokenstack_sim.hw.dram.address_map import parse_map
from tokenstack_sim.hw.dram.patterns import Requests, generate
from tokenstack_sim.hw.dram.run import run_dram, warmup

# dram_reference_points.md (Ramulator 2.1, 1M-request read traces): GB/s, row-hit rate
PEER = {
    ("hbm3-ramulator21", "sequential"): (692, 0.958),
    ("hbm3-ramulator21", "random"): (219, 0.0),
    ("hbm4-ramulator21", "sequential"): (1660, 0.959),
    ("hbm4-ramulator21", "random"): (406, 0.0),
}
PEER_UNLOADED_NS = {"hbm3-ramulator21": 49.5, "hbm4-ramulator21": 47.0}


def unloaded_latency_ns(r) -> float:
    """A row conflict served alone: one request to a bank, then another row of that bank."""
    amap = parse_map(r.config.controller.address_map, r.org)
    idx = amap.encode({"ch": 0, "pc": 0, "sid": 0, "bg": 0, "ba": 0, "row": np.array([1, 2]), "col": 0})
    req = Requests((idx * r.access_bytes).astype(np.uint64), np.zeros(2, bool), np.array([0.0, 2000.0]))
    return float(run_dram(r, req, open_loop=True).latency_cycles[1] * r.tck_ns)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    warmup()
    sep = " | " if args.markdown else "  "
    head = ["preset", "pattern", "GB/s", "% peak", "peer GB/s", "gap", "row hits", "peer hits", "refresh"]
    print(sep.join(head) if not args.markdown else "| " + " | ".join(head) + " |")
    if args.markdown:
        print("|" + "---|" * len(head))
    for (preset, pattern), (peer_bw, peer_hit) in PEER.items():
        r = load_config(preset)
        res = run_dram(r, generate(pattern, args.requests, r.capacity_bytes, r.access_bytes, seed=0))
        cells = [preset, pattern, f"{res.bandwidth_GBps:.0f}", f"{res.pct_of_peak:.1f}%", f"{peer_bw}",
                 f"{100 * (res.bandwidth_GBps / peer_bw - 1):+.1f}%", f"{100 * res.row_hit_rate:.1f}%",
                 f"{100 * peer_hit:.1f}%", f"{100 * res.refresh_time_share:.1f}%"]
        print("| " + " | ".join(cells) + " |" if args.markdown else sep.join(cells))
    print()
    for preset, peer_ns in PEER_UNLOADED_NS.items():
        r = load_config(preset, ["refresh.mode=\"none\""])
        n = r.n
        closed_form = (n["nRP"] + n["nRCD_RD"] + n["nCL"]) * r.tck_ns
        print(f"{preset}: unloaded read latency {unloaded_latency_ns(r):.2f} ns (to the last data beat); "
              f"tRP + tRCD + CL = {closed_form:.2f} ns, + burst {n['nBL'] * r.tck_ns:.2f} ns; peer {peer_ns} ns")


if __name__ == "__main__":
    main()
