"""SLO capacity: the highest request rate at which a share `target` (0.9) of requests meets the SLO.

The search serves the same workload at different mean rates (the spec's arrival process at that rate,
or the trace's arrivals rescaled; same seed, same window): it doubles or halves from `qps_start` until
one rate passes and one fails, then bisects until the bracket is within `tolerance` (relative). Every
rate tried is a full run, kept in the result. SLO attainment over rate is assumed to fall once it falls:
with one seed it can wobble near the target, so the answer carries the bracket it was found in.

Leaves out: several seeds per rate (run `tokenstack run --seeds` at the answer to see the spread).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Callable

from tokenstack_sim.errors import InputError

MAX_DOUBLINGS = 16  # 2^16 x qps_start: far past any system's capacity


@dataclass
class CapacityResult:
    system: str
    model: str
    target: float
    status: str  # "ok" | "does_not_fit" | "below_range" | "above_range"
    capacity_qps: float = float("nan")  # highest passing rate found
    failing_qps: float = float("nan")  # lowest failing rate found
    runs: list = field(default_factory=list)
    reason: str = ""


def _attainment(run) -> float:
    return float(run.summary.get("slo_attainment", float("nan")))


def capacity_search(prep, spec, *, qps_start: float = 1.0, tolerance: float = 0.05, target: float = 0.9,
                    progress: Callable[[str], None] | None = None) -> CapacityResult:
    from tokenstack_sim.sim.engine import run_prepared

    if not qps_start > 0:
        raise InputError(f"expected a rate > 0, got {qps_start}", where="--qps-start")
    if not 0 < tolerance < 1:
        raise InputError(f"expected a relative width in (0, 1), got {tolerance}", where="--tolerance")
    if not 0 < target <= 1:
        raise InputError(f"expected a share in (0, 1], got {target}", where="--target")
    res = CapacityResult(prep.system.name, prep.model.config.name, target, "ok")
    if not prep.fits:
        res.status, res.reason = "does_not_fit", prep.reason
        return res

    def passes(qps: float) -> bool:
        run = run_prepared(prep, dataclasses.replace(spec, qps=qps))
        res.runs.append(run)
        a = _attainment(run)
        if progress:
            progress(f"{prep.system.name}: {qps:.4g} req/s -> {100 * a:.1f}% within SLO "
                     f"({run.summary.get('requests', 0)} requests)")
        return a >= target

    lo = hi = None
    q = qps_start
    if passes(q):
        lo = q
        for _ in range(MAX_DOUBLINGS):
            q *= 2
            if not passes(q):
                hi = q
                break
            lo = q
        else:
            res.status, res.capacity_qps = "above_range", lo
            res.reason = f"still meets the SLO at {lo:g} req/s"
            return res
    else:
        hi = q
        for _ in range(MAX_DOUBLINGS):
            q /= 2
            if passes(q):
                lo = q
                break
            hi = q
        else:
            res.status, res.failing_qps = "below_range", hi
            res.reason = f"misses the SLO even at {hi:g} req/s"
            return res
    while hi / lo - 1 > tolerance:
        mid = (lo * hi) ** 0.5  # geometric: the bracket's relative width halves each time
        if passes(mid):
            lo = mid
        else:
            hi = mid
    res.capacity_qps, res.failing_qps = lo, hi
    return res


def capacity_table(results: list[CapacityResult], fmt: str = "markdown") -> str:
    """One row per system: the capacity, the bracket, and the throughput and latency at the capacity."""
    rows = []
    for r in results:
        at = next((x for x in r.runs if x.params.get("qps") == r.capacity_qps), None)
        s = at.summary if at is not None else {}
        rows.append({"system": r.system, "model": r.model, "status": r.status,
                     "capacity_qps": r.capacity_qps, "first_failing_qps": r.failing_qps,
                     "slo_attainment_at_capacity": s.get("slo_attainment"),
                     "output_tokens_per_s": s.get("output_tokens_per_s"),
                     "ttft_p99_ms": None if not s else 1e3 * s["ttft_s_p99"],
                     "tpot_p99_ms": None if not s else 1e3 * s["tpot_s_p99"],
                     "runs": len(r.runs), "note": r.reason})
    if fmt == "json":
        return json.dumps(rows, indent=2, default=float)
    heads = list(rows[0]) if rows else []
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, heads)
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return "" if v != v else (f"{100 * v:.1f}%" if False else f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}")
        return str(v)

    titles = ["system", "model", "status", "capacity req/s", "fails at req/s", "SLO met", "output tok/s",
              "TTFT p99 ms", "TPOT p99 ms", "runs", "note"]
    cells = [[cell(r[h]) if h != "slo_attainment_at_capacity" or r[h] is None else f"{100 * r[h]:.1f}%"
              for h in heads] for r in rows]
    widths = [max(len(t), *(len(c[i]) for c in cells)) for i, t in enumerate(titles)]
    line = lambda cs: "| " + " | ".join(c.ljust(w) for c, w in zip(cs, widths)) + " |"  # noqa: E731
    return "\n".join([line(titles), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(c) for c in cells)])
