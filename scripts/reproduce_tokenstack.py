"""TokenStack vs AttAcc (and the other rivals at equal resources), beside the paper's claims.

    python scripts/reproduce_tokenstack.py --quick                 # CI smoke subset, <= 3 min on 2 cores
    python scripts/reproduce_tokenstack.py --mode subset30 -j 2    # the named 30-minute subset
    python scripts/reproduce_tokenstack.py --mode full -j 16       # the overnight study
    python scripts/reproduce_tokenstack.py --mode full --dask tcp://scheduler:8786

Runs the plan of the chosen mode (tokenstack_sim/repro/tokenstack_plan.py: models x workloads x rates
as multiples of each workload's own rate x seeds; AttAcc at each split of PIM stacks; per-seed
SLO-capacity searches; ablations of PIM dies per stack, KV quantization, replication bound and
eviction policy) as ordinary sweep folders under --out (resumable: rerun the same command after a kill
and only unfinished points run), then writes the markdown report (default
results/tokenstack_reproduction.md; the quick mode writes results/runs/tokenstack_reproduction_quick.md
unless --report is given, so CI leaves the committed report alone). Exit status 1 when a point or a
search failed (the report lists them), 2 for a bad option.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from tokenstack_sim.repro.tokenstack_plan import PLANS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=sorted(PLANS), default=None, help="which plan (default: subset30)")
    ap.add_argument("--quick", action="store_true", help="the CI smoke subset (same as --mode quick)")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="local worker processes (default 1)")
    ap.add_argument("--dask", default=None, metavar="ADDRESS", help="run the points on this Dask scheduler")
    ap.add_argument("--dask-local", type=int, default=None, metavar="N", help="a local Dask cluster of N workers")
    ap.add_argument("--out", default=None, help="sweep folders (default results/runs/reproduce_tokenstack/MODE)")
    ap.add_argument("--report", default=None, help="markdown report path")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)

    from tokenstack_sim.errors import InputError
    from tokenstack_sim.repro.pool import make_executor
    from tokenstack_sim.repro.tokenstack_report import markdown
    from tokenstack_sim.repro.tokenstack_run import run_plan

    if args.quick and args.mode not in (None, "quick"):
        print(f"error: --quick: expected no --mode or --mode quick, got --mode {args.mode}", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else (args.mode or "subset30")
    plan = PLANS[mode]
    out = Path(args.out) if args.out else REPO / "results" / "runs" / "reproduce_tokenstack" / mode
    default_report = REPO / "results" / ("runs/tokenstack_reproduction_quick.md" if mode == "quick"
                                         else "tokenstack_reproduction.md")
    report = Path(args.report) if args.report else default_report
    say = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    print(f"reproduce_tokenstack: {plan.describe()}; folders under {out}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        executor = make_executor(args.jobs, args.dask, args.dask_local)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        g = run_plan(plan, out, executor, workers=args.jobs, progress=say, note=say)
    finally:
        executor.close()
    wall = time.perf_counter() - t0
    cmd = "python scripts/reproduce_tokenstack.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    host = f"{os.cpu_count()} CPUs, {executor.describe()}"
    try:
        root_text = str(out.absolute().relative_to(REPO))
    except ValueError:
        root_text = str(out)
    text = markdown(g, command=cmd.strip(), wall_s=wall, host=host, root_text=root_text)
    report.parent.mkdir(parents=True, exist_ok=True)
    from tokenstack_sim.atomic_io import atomic_write

    with atomic_write(report, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text)
    print(f"wrote {report} ({mode}: {wall:.0f} s)", file=sys.stderr)
    return 1 if g.errors else 0


if __name__ == "__main__":
    sys.exit(main())
