"""Latency and throughput metrics of a serving run (vLLM ``benchmark_serving`` definitions).

Per request: TTFT = first token − arrival; TPOT = (finish − first token) / (output tokens − 1), for
requests with at least 2 output tokens; end-to-end = finish − arrival. Each is summarized by mean, p50,
p90 and p99 (numpy's linear-interpolation percentiles).
Throughput over the included requests: output tokens / duration and (input + output) tokens / duration,
where duration = last finish − first arrival among them (vLLM's benchmark divides by its wall time).
Warm-up and drain: the first ``warmup_frac`` and last ``drain_frac`` of the requests by arrival are
excluded, so the figures describe the loaded steady state rather than the ramp-up and the tail.
Leaves out: SLO goodput (a later module), per-step time series (they are in ServeResult.steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokenstack_sim.errors import InputError

# Model choice [E]: drop the first and last 10% of requests by arrival; callers can set 0.
DEFAULT_WARMUP_FRAC = 0.1
DEFAULT_DRAIN_FRAC = 0.1


@dataclass(frozen=True)
class Stat:
    mean: float
    p50: float
    p90: float
    p99: float
    count: int

    @staticmethod
    def of(values: np.ndarray) -> "Stat":
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return Stat(float("nan"), float("nan"), float("nan"), float("nan"), 0)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return Stat(float(values.mean()), float(p50), float(p90), float(p99), len(values))


@dataclass(frozen=True)
class ServeMetrics:
    ttft_s: Stat
    tpot_s: Stat
    e2e_s: Stat
    output_tokens_per_s: float
    total_tokens_per_s: float
    requests: int  # included requests
    duration_s: float
    preemptions: int  # over the included requests

    def as_dict(self) -> dict:
        out = {}
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            out[name] = vars(getattr(self, name)).copy()
        out.update(output_tokens_per_s=self.output_tokens_per_s, total_tokens_per_s=self.total_tokens_per_s,
                   requests=self.requests, duration_s=self.duration_s, preemptions=self.preemptions)
        return out


def included(requests: np.ndarray, warmup_frac: float, drain_frac: float) -> np.ndarray:
    """Rows kept after dropping the first/last fractions by arrival (stable order)."""
    for name, v in (("warmup_frac", warmup_frac), ("drain_frac", drain_frac)):
        if not (0.0 <= v < 1.0):
            raise InputError(f"must be in [0, 1), got {v}", where=name)
    if warmup_frac + drain_frac >= 1.0:
        raise InputError(f"warmup_frac + drain_frac must be < 1, got {warmup_frac + drain_frac}")
    n = len(requests)
    order = np.argsort(requests["arrival_s"], kind="stable")
    lo = int(np.floor(warmup_frac * n))
    hi = n - int(np.floor(drain_frac * n))
    return requests[order[lo:hi]]


def summarize(requests: np.ndarray, *, warmup_frac: float = DEFAULT_WARMUP_FRAC,
              drain_frac: float = DEFAULT_DRAIN_FRAC) -> ServeMetrics:
    """Metrics of ``ServeResult.requests`` (see the module docstring)."""
    rows = included(requests, warmup_frac, drain_frac)
    arrival, first, finish = rows["arrival_s"], rows["first_token_s"], rows["finish_s"]
    out = rows["output_tokens"]
    ttft = first - arrival
    multi = out >= 2
    tpot = (finish[multi] - first[multi]) / (out[multi] - 1)
    e2e = finish - arrival
    duration_s = float(finish.max() - arrival.min()) if len(rows) else 0.0
    per_s = (1.0 / duration_s) if duration_s > 0 else float("nan")
    return ServeMetrics(
        ttft_s=Stat.of(ttft), tpot_s=Stat.of(tpot), e2e_s=Stat.of(e2e),
        output_tokens_per_s=float(out.sum()) * per_s,
        total_tokens_per_s=float(out.sum() + rows["input_tokens"].sum()) * per_s,
        requests=len(rows), duration_s=duration_s, preemptions=int(rows["preemptions"].sum()),
    )
