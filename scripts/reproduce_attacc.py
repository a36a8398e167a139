"""AttAcc (attacc-hbm3) against GPU-only for GPT-3 175B, input 2048 / output 128, beside AttAcc's figures.

    python scripts/reproduce_attacc.py [--batches 1,32,101] [--out results/attacc_reproduction.md]

(a) each system at its own largest batch that fits (capacity enforced); (b) AttAcc's own protocol, a
static batch of identical requests without a capacity check, at each --batches size; and the ordering
of AttAcc's PIM placements (bank, bank group, base die). The static batch drives the step model
directly (tokenstack_sim/repro/static_batch.py); tokenstack_sim/repro/attacc_repro.py says what is
compared. About 10-20 s once the attention costs of the three placements are characterized.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,32,101", help="static batch sizes for (b), comma-separated")
    ap.add_argument("--out", default=str(REPO / "results" / "attacc_reproduction.md"), help="markdown report path")
    args = ap.parse_args(argv)
    try:
        batches = tuple(int(x) for x in args.batches.split(","))
        if not batches or min(batches) < 1:
            raise ValueError
    except ValueError:
        print(f"error: --batches: expected whole numbers >= 1 separated by commas, got {args.batches!r}", file=sys.stderr)
        return 2

    from tokenstack_sim.atomic_io import atomic_write
    from tokenstack_sim.repro.attacc_repro import markdown, run_study

    t0 = time.perf_counter()
    study = run_study(batches, progress=lambda m: print(" ", m, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    cmd = "python scripts/reproduce_attacc.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = markdown(study, command=cmd.strip(), wall_s=wall, batches=batches)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text)
    print(f"wrote {out} ({wall:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
