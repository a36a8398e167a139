"""Durations of function (tool) calls in agent applications: distributions to draw the real duration
from, and the duration a runtime is told to expect.

Models a tool call as a random wait with a known distribution; the runtime sees only a *prediction*
(`predicted_s` on the DAG node: a declared estimate, the distribution's mean as a duration history
would give, or TokenCake's default of 1 s), which may be wrong. Leaves out any dependence of a tool's
time on the LLM output, load on the tool's backend, and correlation between calls of one application.

Distributions: `Fixed` (a declared wait, as TokenCake's CodeWriter benchmark uses), `Uniform`,
`LogNormal` (from a median and a p99, or a median and sigma), `Normal` (clipped at 0, InferCept's
synthetic API time), `Mixture`. `measured_mixture()` is the mixture that ../shared/reference/
workloads.md §2(a) suggests from SWE-smith and SyFI measurements; its numbers are cited in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tokenstack_sim.errors import InputError

Z99 = 2.3263478740408408  # standard normal quantile at 0.99

# TokenCake (docs/features/tokencake.md, serving.md §3.1): with neither an estimate nor a history the
# runtime predicts 1 s.
DEFAULT_PREDICTION_S = 1.0


class ToolTime:
    """A distribution of tool-call durations in seconds (>= 0)."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def mean_s(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


def _check(value: float, name: str, lo: float = 0.0, strict: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < lo or (strict and v <= lo):
        raise InputError(f"expected a number {'>' if strict else '>='} {lo:g}, got {value!r}", where=name)
    return v


@dataclass(frozen=True)
class Fixed(ToolTime):
    seconds: float

    def __post_init__(self):
        _check(self.seconds, "tool_time.seconds")

    def sample(self, rng, n):
        return np.full(n, self.seconds)

    @property
    def mean_s(self):
        return self.seconds

    def describe(self):
        return f"{self.seconds:g} s"


@dataclass(frozen=True)
class Uniform(ToolTime):
    low_s: float
    high_s: float

    def __post_init__(self):
        _check(self.low_s, "tool_time.low_s")
        if _check(self.high_s, "tool_time.high_s") < self.low_s:
            raise InputError(f"high_s {self.high_s} < low_s {self.low_s}", where="tool_time.high_s")

    def sample(self, rng, n):
        return rng.uniform(self.low_s, self.high_s, n)

    @property
    def mean_s(self):
        return 0.5 * (self.low_s + self.high_s)

    def describe(self):
        return f"U({self.low_s:g}, {self.high_s:g}) s"


@dataclass(frozen=True)
class LogNormal(ToolTime):
    median_s: float
    sigma: float

    def __post_init__(self):
        _check(self.median_s, "tool_time.median_s", strict=True)
        _check(self.sigma, "tool_time.sigma")

    @staticmethod
    def from_p99(median_s: float, p99_s: float) -> "LogNormal":
        if p99_s < median_s:
            raise InputError(f"p99 {p99_s} < median {median_s}", where="tool_time.p99_s")
        return LogNormal(median_s, math.log(p99_s / median_s) / Z99)

    @staticmethod
    def from_mean(median_s: float, mean_s: float) -> "LogNormal":
        """mean / median = exp(sigma^2 / 2) for a lognormal."""
        if mean_s < median_s:
            raise InputError(f"mean {mean_s} < median {median_s}", where="tool_time.mean_s")
        return LogNormal(median_s, math.sqrt(2.0 * math.log(mean_s / median_s)))

    def sample(self, rng, n):
        return self.median_s * np.exp(self.sigma * rng.standard_normal(n))

    @property
    def mean_s(self):
        return self.median_s * math.exp(0.5 * self.sigma ** 2)

    def describe(self):
        return f"LogN(median {self.median_s:g} s, sigma {self.sigma:.2f})"


@dataclass(frozen=True)
class Normal(ToolTime):
    mean: float
    sd: float

    def __post_init__(self):
        _check(self.mean, "tool_time.mean")
        _check(self.sd, "tool_time.sd")

    def sample(self, rng, n):
        return np.maximum(0.0, rng.normal(self.mean, self.sd, n))

    @property
    def mean_s(self):
        return self.mean  # clipping at 0 is negligible for mean >= 2 sd

    def describe(self):
        return f"N({self.mean:g}, {self.sd:g}) s"


@dataclass(frozen=True)
class Mixture(ToolTime):
    parts: tuple  # ((weight, ToolTime), ...)

    def __post_init__(self):
        if not self.parts:
            raise InputError("a mixture needs at least one part", where="tool_time.parts")
        w = np.array([p[0] for p in self.parts], float)
        if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise InputError(f"weights must be >= 0 with a positive sum, got {w.tolist()}", where="tool_time.parts")

    @property
    def weights(self) -> np.ndarray:
        w = np.array([p[0] for p in self.parts], float)
        return w / w.sum()

    def sample(self, rng, n):
        which = rng.choice(len(self.parts), size=n, p=self.weights)
        out = np.empty(n)
        for i, (_, d) in enumerate(self.parts):
            sel = which == i
            if sel.any():
                out[sel] = d.sample(rng, int(sel.sum()))
        return out

    @property
    def mean_s(self):
        return float(sum(w * d.mean_s for w, (_, d) in zip(self.weights, self.parts)))

    def describe(self):
        return " + ".join(f"{w:.0%} {d.describe()}" for w, (_, d) in zip(self.weights, self.parts))


def measured_mixture() -> Mixture:
    """The tool-time mixture suggested in workloads.md §2(a) ("Suggested synthesis parameters"),
    consistent with the SWE-smith and SyFI measurements quoted there."""
    return Mixture((
        # 60% ~0 s (<= 10 ms): SWE-smith's 61% editor/submit calls at ~0 s
        (0.60, Uniform(0.0, 0.010)),
        # 25% lognormal, median 0.2-0.5 s: midpoint 0.35 s; sigma from SWE-smith's normal bash calls
        # (p50 0.42 s, mean 0.73 s: sigma = sqrt(2 ln(0.73 / 0.42)) = 1.05)
        (0.25, LogNormal(0.35, math.sqrt(2.0 * math.log(0.73 / 0.42)))),
        # 15% heavy lognormal, median ~3 s and p99 ~60 s
        (0.15, LogNormal.from_p99(3.0, 60.0)),
    ))


def infercept_api() -> Normal:
    """InferCept's synthetic API call time, N(6 s, 2 s) (serving.md §3.3, benchmark_api_simu.py)."""
    return Normal(6.0, 2.0)
