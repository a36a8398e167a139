"""The statistics of a reproduction: geometric means of ratios, with intervals over seeds.

Seeds pair the systems: seed s gives every system the same request table (same arrivals and lengths),
so a ratio is taken within a seed. `seed_geomeans(cells)` takes cell -> {seed: ratio} and returns, per
seed, the geometric mean over the cells that seed has; `summary(...)` gives the mean of those per-seed
geometric means and the half-width of the 95% Student-t interval over seeds (`results.report.mean_ci`:
none with one seed). The interval covers the seed-to-seed spread of the workload's randomness only, not
model error. A cell with a missing or non-positive value in a seed is left out of that seed's geomean
(and counted in `left_out`).

`best_split(scores)` picks AttAcc's split (PIM stacks per GPU) for a (model, workload): the highest
goodput score; splits within `tie` (relative) of it are tied and the lowest TPOT among them wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CI_LEVEL = 0.95


def geomean(values) -> float:
    """Geometric mean of the positive finite values; NaN when there are none."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x)) and float(x) > 0]
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else float("nan")


def ratio(a, b) -> float:
    """a / b, NaN when either is missing, non-finite or b is not positive."""
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return float("nan")
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return float("nan")
    return a / b


@dataclass
class RatioSummary:
    mean: float  # mean over seeds of the per-seed geometric mean
    ci95: float | None  # Student-t half-width over seeds; None with one seed
    per_seed: dict  # seed -> geometric mean over its cells
    cells: int  # cells in the geomean (the most any seed has)
    left_out: int  # (cell, seed) values left out as missing or non-positive

    @property
    def low(self) -> float:
        return self.mean - (self.ci95 or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.ci95 or 0.0)


def seed_geomeans(cells: dict) -> tuple[dict, int, int]:
    """cells: cell -> {seed: ratio}. Returns ({seed: geomean over cells}, cells used, values left out)."""
    seeds = sorted({s for per in cells.values() for s in per})
    out, used, left = {}, 0, 0
    for s in seeds:
        vals = [per.get(s) for per in cells.values()]
        good = [v for v in vals if v is not None and math.isfinite(v) and v > 0]
        left += len(vals) - len(good)
        if good:
            out[s] = geomean(good)
            used = max(used, len(good))
    return out, used, left


def summary(cells: dict) -> RatioSummary:
    """Mean over seeds of the per-seed geometric mean ratio, with its 95% interval (module docstring)."""
    from tokenstack_sim.results.report import mean_ci

    per_seed, used, left = seed_geomeans(cells)
    mean, half = mean_ci(list(per_seed.values()), CI_LEVEL)
    return RatioSummary(float("nan") if mean is None else mean, half, per_seed, used, left)


def best_split(scores: dict, tie: float = 0.005):
    """scores: split -> (goodput, tpot_s). The split of highest goodput; those within `tie` of it
    (relative) are tied and the one with the lowest TPOT wins (then the smaller split). None if empty."""
    ok = {k: v for k, v in scores.items() if v[0] is not None and math.isfinite(v[0]) and v[0] > 0}
    if not ok:
        return None
    top = max(v[0] for v in ok.values())
    tied = [k for k, v in ok.items() if v[0] >= top * (1 - tie)]

    def tpot(k):
        t = ok[k][1]
        return t if t is not None and math.isfinite(t) else math.inf

    return min(tied, key=lambda k: (tpot(k), k))
