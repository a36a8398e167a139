"""SLO capacity: the highest request rate at which a share `target` (0.9) of requests meets the SLO.

The search serves the same workload at different mean rates (the spec's arrival process at that rate,
or the trace's arrivals rescaled; same window): it doubles or halves from `qps_start` until one rate
passes and one fails, then bisects (geometrically) until the bracket is within `tolerance` (relative).
Every rate tried is a full run per seed, all kept in the result.

Several seeds (`seeds` = N): each probed rate is served with seeds spec.seed .. spec.seed + N - 1 (the
workload's arrivals and lengths differ by seed). The rule: a rate meets the SLO when the MEAN SLO
attainment over its N seeds is >= `target` (a seed with no request in the statistics, NaN, fails the
rate). Each probe reports that mean and its 95% Student-t confidence interval over the seeds
(`results.report.mean_ci`; none with one seed); the interval is reported, not used by the rule, so a
rate whose interval straddles the target is a pass or a fail by its mean alone, and the answer carries
the bracket it was found in. SLO attainment over rate is assumed to fall once it falls; seeds make a
wobble near the target less likely to misplace the bracket, not impossible.

`serve` (optional) runs the seeds of one probed rate elsewhere: `serve(qps, seeds) -> [run per seed]`,
each run with a `summary` holding `slo_attainment` (scripts/reproduce_tokenstack.py serves them as sweep
points, resumable and in parallel); by default each seed runs here with `run_prepared`.

Leaves out: a stopping rule on the interval (more seeds until the CI clears the target), common random
numbers beyond reusing the same seeds at every rate, and parallel runs (unless `serve` provides them).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Callable

from tokenstack_sim.errors import InputError

MAX_DOUBLINGS = 16  # 2^16 x qps_start: far past any system's capacity


CI_LEVEL = 0.95
RULE = "a rate meets the SLO when the mean SLO attainment over its seeds is >= the target"


@dataclass
class Probe:
    """One probed rate: the SLO attainment of each seed's run, their mean and the 95% CI half-width."""
    qps: float
    attainments: list  # one per seed, in seed order (fraction 0..1; NaN: no request in the statistics)
    mean: float
    ci95: float | None  # half-width of the Student-t interval over seeds; None with one seed
    passes: bool


@dataclass
class CapacityResult:
    system: str
    model: str
    target: float
    status: str  # "ok" | "does_not_fit" | "below_range" | "above_range"
    capacity_qps: float = float("nan")  # highest passing rate found
    failing_qps: float = float("nan")  # lowest failing rate found
    runs: list = field(default_factory=list)  # every run, seeds of one rate together, in probe order
    reason: str = ""
    seeds: int = 1
    probes: list = field(default_factory=list)  # Probe per rate tried, in probe order
    unit: str = "req/s"  # what a "rate" counts: req/s, apps/s (agent apps) or agents (All-Gather rounds)

    def probe_at(self, qps: float) -> Probe | None:
        return next((p for p in self.probes if p.qps == qps), None)


def _attainment(run, metric: str = "slo_attainment") -> float:
    return float(run.summary.get(metric, float("nan")))


def probe(qps: float, attainments, target: float) -> Probe:
    """The rule on one rate's per-seed attainments: mean >= target, any NaN fails; with its 95% CI."""
    from tokenstack_sim.results.report import mean_ci

    a = [float(x) for x in attainments]
    finite = all(x == x for x in a)
    mean = sum(a) / len(a) if a else float("nan")
    _, half = mean_ci(a, CI_LEVEL) if finite else (None, None)
    return Probe(qps, a, mean, half, bool(finite and a and mean >= target))


def capacity_search(prep, spec, *, qps_start: float = 1.0, tolerance: float = 0.05, target: float = 0.9,
                    seeds: int = 1, progress: Callable[[str], None] | None = None,
                    serve: Callable[[float, list], list] | None = None,
                    metric: str = "slo_attainment", unit: str = "req/s", integer: bool = False) -> CapacityResult:
    """Highest rate meeting the SLO by the mean over `seeds` seeds (see the module docstring). `metric`: the
    summary key taken as a run's SLO attainment (agent apps: ``app_slo_attainment``, the share of apps
    whose makespan meets ``slo_makespan_s``, runtime/agent_loop.py). `unit`: what the rate counts, for
    messages and tables (req/s; apps/s; agents, where `serve` maps the "rate" to an agent count).
    `integer`: whole rates only (an agent count): the start is rounded, the bisection probes whole numbers
    and stops when the bracket is within `tolerance` or one apart."""
    from tokenstack_sim.sim.engine import run_prepared

    if not (isinstance(seeds, int) and seeds >= 1):
        raise InputError(f"expected a whole number of seeds >= 1, got {seeds!r}", where="--seeds")
    if not qps_start > 0:
        raise InputError(f"expected a rate > 0, got {qps_start}", where="--qps-start")
    if not 0 < tolerance < 1:
        raise InputError(f"expected a relative width in (0, 1), got {tolerance}", where="--tolerance")
    if not 0 < target <= 1:
        raise InputError(f"expected a share in (0, 1], got {target}", where="--target")
    res = CapacityResult(prep.system.name, prep.model.config.name, target, "ok", seeds=seeds, unit=unit)
    if not prep.fits:
        res.status, res.reason = "does_not_fit", prep.reason
        return res

    def passes(qps: float) -> bool:
        seed_list = [spec.seed + i for i in range(seeds)]
        if serve is not None:
            runs = list(serve(qps, seed_list))
        else:
            runs = [run_prepared(prep, dataclasses.replace(spec, qps=qps, seed=s)) for s in seed_list]
        res.runs += runs
        p = probe(qps, [_attainment(r, metric) for r in runs], target)
        res.probes.append(p)
        if progress:
            ci = "" if p.ci95 is None else f" ± {100 * p.ci95:.1f}"
            n = sum(int(r.summary.get("requests", 0)) for r in runs)
            progress(f"{prep.system.name}: {p.qps:.4g} {unit} -> {100 * p.mean:.1f}%{ci} within SLO "
                     f"({seeds} seed{'s' if seeds > 1 else ''}, {n} requests) "
                     f"{'meets' if p.passes else 'misses'} {100 * target:g}%")
        return p.passes

    lo = hi = None
    q = float(max(1, round(qps_start))) if integer else qps_start
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
            res.reason = f"still meets the SLO at {lo:g} {unit}"
            return res
    else:
        hi = q
        for _ in range(MAX_DOUBLINGS):
            if integer and q <= 1:
                break  # no whole rate below 1
            q = float(max(1, q // 2)) if integer else q / 2
            if passes(q):
                lo = q
                break
            hi = q
        if lo is None:
            res.status, res.failing_qps = "below_range", hi
            res.reason = f"misses the SLO even at {hi:g} {unit}"
            return res
    while hi / lo - 1 > tolerance and not (integer and hi - lo <= 1):
        mid = (lo * hi) ** 0.5  # geometric: the bracket's relative width halves each time
        if integer:
            mid = float(min(max(round(mid), lo + 1), hi - 1))
        if passes(mid):
            lo = mid
        else:
            hi = mid
    res.capacity_qps, res.failing_qps = lo, hi
    return res


def _mean(values) -> float | None:
    v = [float(x) for x in values if x is not None and float(x) == float(x)]
    return sum(v) / len(v) if v else None


def capacity_table(results: list[CapacityResult], fmt: str = "markdown") -> str:
    """One row per system: the capacity, the bracket, the mean SLO attainment at the capacity with its 95%
    CI over seeds, and the throughput and p99 latencies at the capacity (means over its seeds). JSON rows
    also hold every probe (rate, per-seed attainments, mean, CI, pass) and the rule."""
    rows = []
    for r in results:
        key = "max_requests" if r.unit == "agents" else "qps"  # agents: the probe's agent count
        at = [x for x in r.runs if x.params.get(key) == r.capacity_qps]
        p = r.probe_at(r.capacity_qps)
        rows.append({"system": r.system, "model": r.model, "status": r.status, "unit": r.unit,
                     "capacity_qps": r.capacity_qps, "first_failing_qps": r.failing_qps,
                     "seeds": r.seeds,
                     "slo_attainment_at_capacity": None if p is None else p.mean,
                     "slo_attainment_ci95_at_capacity": None if p is None else p.ci95,
                     "output_tokens_per_s": _mean(x.summary.get("output_tokens_per_s") for x in at),
                     "ttft_p99_ms": None if not at else 1e3 * _mean(x.summary["ttft_s_p99"] for x in at),
                     "tpot_p99_ms": None if not at else 1e3 * _mean(x.summary["tpot_s_p99"] for x in at),
                     "runs": len(r.runs), "note": r.reason})
    if fmt == "json":
        for row, r in zip(rows, results):
            row["rule"] = f"{RULE} ({100 * r.target:g}%)"
            row["probes"] = [{"qps": p.qps, "slo_attainment_per_seed": p.attainments, "slo_attainment_mean": p.mean,
                              "slo_attainment_ci95": p.ci95, "meets_slo": p.passes} for p in r.probes]
        return json.dumps(rows, indent=2, default=float)
    heads = list(rows[0]) if rows else []
    if fmt == "csv":
        return _csv(heads, rows)

    def att(row):
        m, h = row["slo_attainment_at_capacity"], row["slo_attainment_ci95_at_capacity"]
        return "" if m is None else f"{100 * m:.1f}%" + ("" if h is None else f" ± {100 * h:.1f}")

    unit = _unit(results)
    titles = ["system", "model", "status", f"capacity {unit}", f"fails at {unit}", "seeds", "SLO met (95% CI)",
              "output tok/s", "TTFT p99 ms", "TPOT p99 ms", "runs", "note"]
    cells = [[att(r) if h == "slo_attainment_at_capacity" else _cell(r[h])
              for h in heads if h not in ("slo_attainment_ci95_at_capacity", "unit")] for r in rows]
    return _markdown(titles, cells)


def probes_table(results: list[CapacityResult], fmt: str = "markdown") -> str:
    """One row per probed rate per system, in probe order: seeds, mean SLO attainment, its 95% CI
    half-width over seeds (none with one seed), and whether the rate meets the SLO by the rule."""
    rows = [{"system": r.system, "qps": p.qps, "unit": r.unit, "seeds": len(p.attainments),
             "slo_attainment_mean": p.mean, "slo_attainment_ci95": p.ci95, "meets_slo": p.passes}
            for r in results for p in r.probes]
    if fmt == "json":
        return json.dumps(rows, indent=2, default=float)
    if fmt == "csv":
        return _csv(["system", "qps", "unit", "seeds", "slo_attainment_mean", "slo_attainment_ci95", "meets_slo"],
                    rows)
    titles = ["system", _unit(results), "seeds", "SLO met (mean)", "± 95% CI (pp)", "meets SLO"]
    cells = [[r["system"], _cell(r["qps"]), str(r["seeds"]), f"{100 * r['slo_attainment_mean']:.1f}%",
              "" if r["slo_attainment_ci95"] is None else f"{100 * r['slo_attainment_ci95']:.1f}",
              "yes" if r["meets_slo"] else "no"] for r in rows]
    return _markdown(titles, cells)


def rule_line(results: list[CapacityResult]) -> str:
    """The rule the table used, in words."""
    targets = sorted({r.target for r in results}) or [0.9]
    seeds = sorted({r.seeds for r in results}) or [1]
    return (f"Rule: {RULE} ({', '.join(f'{100 * t:g}%' for t in targets)}); seeds per rate: "
            f"{', '.join(map(str, seeds))}; ± is the {100 * CI_LEVEL:g}% Student-t interval over seeds "
            "(none with one seed), reported, not used by the rule.")


def _unit(results: list[CapacityResult]) -> str:
    """The rate's unit of a table's column: the results' own when they agree."""
    units = {r.unit for r in results}
    return units.pop() if len(units) == 1 else "rate"


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if v != v else f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _csv(heads, rows) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, heads)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _markdown(titles, cells) -> str:
    widths = [max([len(t)] + [len(c[i]) for c in cells]) for i, t in enumerate(titles)]
    line = lambda cs: "| " + " | ".join(c.ljust(w) for c, w in zip(cs, widths)) + " |"  # noqa: E731
    return "\n".join([line(titles), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(c) for c in cells)])
