"""Benchmark of the workload layer (prints figures; no pass/fail).

- rows/s reading the Mooncake conversation trace (target >= 100k rows/s);
- seconds to generate 1M synthetic requests per preset (target <= 2 s), with prefix hashes where the
  preset has a [prefix] section.

Usage: python scripts/bench_workload.py [--traces DIR] [--repeats N]
(DIR defaults to ../shared/traces beside the repository.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from tokenstack_sim.workload.readers import read_mooncake
from tokenstack_sim.workload.spec import load_spec
from tokenstack_sim.workload.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]


def best_and_median(fn, repeats: int) -> tuple[float, float, object]:
    times_s, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times_s.append(time.perf_counter() - start)
    return min(times_s), statistics.median(times_s), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=ROOT.parent / "shared" / "traces")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    trace = args.traces / "mooncake_fast25" / "conversation_trace.jsonl"
    if trace.is_file():
        best_s, median_s, table = best_and_median(lambda: read_mooncake(trace), args.repeats)
        print(f"read mooncake conversation: {len(table):,} rows; best {len(table) / best_s:,.0f} rows/s, "
              f"median {len(table) / median_s:,.0f} rows/s (target >= 100,000)")
    else:
        print(f"read mooncake conversation: skipped, {trace} not found")

    for spec_path in sorted((ROOT / "workloads").glob("*.toml")):
        spec = load_spec(spec_path)
        best_s, median_s, table = best_and_median(lambda: synthesize(spec, 1_000_000, seed=0), max(2, args.repeats // 2))
        blocks = f", {len(table.prefix_hashes):,} prefix blocks" if table.has_prefix else ""
        print(f"synth 1M {spec.name:<20} best {best_s:.2f} s, median {median_s:.2f} s{blocks} (target <= 2 s)")


if __name__ == "__main__":
    main()
