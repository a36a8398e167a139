"""Renewal arrival processes parameterized by mean rate and inter-arrival CV, and their fits.

Families: ``poisson`` (exponential gaps, CV = 1), ``gamma`` (shape k = 1 / CV^2) and ``weibull`` (shape
from CV by a bisection on Gamma-function moments). Every family matches the requested mean and CV
exactly in expectation; they differ in the shape of the gap distribution. Fitting is by the method of
moments (no scipy); the family is chosen by the median-to-mean gap ratio, which the two families
predict differently at equal CV.
Leaves out correlation between successive gaps (a renewal process has none), so a trace whose
burstiness lives in minute-scale rate swings (Azure code: Fano(1 s) 13) is matched in CV but not in
its counting statistics.
"""

from __future__ import annotations

import math

import numpy as np

from tokenstack_sim.errors import InputError

FAMILIES = ("poisson", "gamma", "weibull")
# The inter-arrival CVs the samplers are trusted with. Above ~20 most Gamma gaps underflow to exactly 0
# (shape 1/CV^2: 16% zero gaps at CV 20, 43% at 30, all at 1e4) and Weibull gaps span hundreds of
# decades; below 0.03 the Weibull shape leaves the bisection bracket.
CV_MIN, CV_MAX = 0.03, 20.0


def check_cv(cv: float, where: str | None = None, source: str | None = None) -> float:
    """``cv`` if it is a finite number in [CV_MIN, CV_MAX], else InputError stating the bound."""
    if not (math.isfinite(cv) and CV_MIN <= cv <= CV_MAX):
        raise InputError(
            f"inter-arrival cv {cv} is outside the supported range {CV_MIN} to {CV_MAX:g}", source=source, where=where
        )
    return cv


def weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape k with the given CV: CV^2 = G(1 + 2/k) / G(1 + 1/k)^2 - 1, decreasing in k."""
    target = math.log1p(cv * cv)

    def log_ratio(k: float) -> float:
        return math.lgamma(1 + 2 / k) - 2 * math.lgamma(1 + 1 / k)

    lo, hi = 0.02, 50.0  # CV from ~1e8 down to ~0.03
    if not log_ratio(hi) <= target <= log_ratio(lo):
        raise InputError(f"inter-arrival CV {cv} is outside what a Weibull can reach (0.03 to ~1e8)")
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if log_ratio(mid) > target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def sample_gaps_s(rng: np.random.Generator, n: int, family: str, rate_qps: float, cv: float) -> np.ndarray:
    """``n`` inter-arrival gaps in seconds with mean 1 / rate_qps and coefficient of variation ``cv``."""
    if not (math.isfinite(rate_qps) and rate_qps > 0):
        raise InputError(f"rate_qps must be a finite number > 0, got {rate_qps}")
    mean_s = 1.0 / rate_qps
    if family == "poisson":
        gaps_s = rng.exponential(mean_s, n)
    elif family == "gamma":
        shape = 1.0 / (check_cv(cv) ** 2)
        gaps_s = rng.gamma(shape, mean_s / shape, n)
    elif family == "weibull":
        shape = weibull_shape_for_cv(check_cv(cv))
        scale_s = mean_s / math.exp(math.lgamma(1 + 1 / shape))
        gaps_s = scale_s * rng.weibull(shape, n)
    else:
        raise InputError(f"unknown arrival family {family!r}; known: {', '.join(FAMILIES)}")
    if not np.all(np.isfinite(gaps_s)) or (n > 0 and not np.any(gaps_s > 0)):
        raise InputError(f"{family} gaps at rate {rate_qps} and cv {cv} are not finite or all zero; use a rate or cv nearer 1")
    return gaps_s


def sample_arrivals_s(rng: np.random.Generator, n: int, family: str, rate_qps: float, cv: float) -> np.ndarray:
    """Arrival times starting at 0 (the first request arrives at t = 0)."""
    arrival_s = np.empty(n, dtype=np.float64)
    if n == 0:
        return arrival_s
    arrival_s[0] = 0.0
    np.cumsum(sample_gaps_s(rng, n - 1, family, rate_qps, cv), out=arrival_s[1:])
    return arrival_s


def _median_over_mean(family: str, cv: float) -> float:
    if family == "poisson":
        return math.log(2)
    if family == "weibull":
        k = weibull_shape_for_cv(cv)
        return math.log(2) ** (1 / k) / math.exp(math.lgamma(1 + 1 / k))
    # The gamma median has no closed form; a fixed-seed sample is exact enough to rank two families.
    return float(np.median(sample_gaps_s(np.random.default_rng(0), 200_000, "gamma", 1.0, cv)))


def fit_family(gaps_s: np.ndarray) -> tuple[str, float, float]:
    """(family, rate_qps, cv) by moments; Poisson when the CV is within 5% of 1."""
    gaps_s = np.asarray(gaps_s, dtype=np.float64)
    if len(gaps_s) < 2 or gaps_s.mean() <= 0:
        raise InputError("need at least 3 requests with distinct arrival times to fit arrivals")
    mean_s = float(gaps_s.mean())
    cv = float(gaps_s.std() / mean_s)
    if abs(cv - 1.0) < 0.05:
        return "poisson", 1.0 / mean_s, 1.0
    observed = float(np.median(gaps_s)) / mean_s
    in_range = min(max(cv, CV_MIN), CV_MAX)  # the family choice is made where the samplers are trusted
    family = min(("gamma", "weibull"), key=lambda f: abs(_median_over_mean(f, in_range) - observed))
    return family, 1.0 / mean_s, cv
