"""Latency and throughput metrics of a serving run.

Per request (vLLM ``benchmark_serving`` definitions): TTFT = first token − arrival; TPOT = (finish − first
token) / (output tokens − 1), for requests with at least 2 output tokens; end-to-end = finish − arrival.
Each is summarized by mean, p50, p90 and p99 (numpy's linear-interpolation percentiles) over the
included requests.

Warm-up and drain: the first ``warmup_frac`` and last ``drain_frac`` of the requests by arrival are
excluded from the statistics, so the figures describe the loaded steady state rather than the ramp-up
and the tail.

Throughput is measured over a window, not over the included requests' own tokens:
window = (first arrival, last finish] of the included requests, ``duration_s`` its length, and the
tokens counted are every token produced inside the window, by any request. Excluded requests share the
machine during the window (a warm-up request still decoding, a drain request already running); counting
only the included requests' tokens over a span that the others also used underestimates the rate.
- Output tokens: with ``steps`` (the serve loop's step table), the tokens sampled by the steps that end
  inside the window (a step's tokens exist at its end). Without ``steps``, each request's first token is
  placed at its first-token time and its other output tokens spread evenly over (first token, finish]
  (exact when the window edges fall outside a request's decode, an estimate inside it); a request with
  no finish time contributes only its first token. The result says which (``window_tokens_from``).
- Input tokens: a request's whole prompt counts when its prefill completes — at its first token (at its
  finish for a request with 0 output tokens) — if that lies inside the window; recomputed prompts count
  once, as in vLLM's benchmark.
``output_tokens_per_s`` = output tokens in the window / duration; ``total_tokens_per_s`` = (input +
output tokens in the window) / duration. With the whole run included (warm-up = drain = 0) both equal the
run's totals over (last finish − first arrival), as before.

Leaves out: SLO goodput (a later module), per-step time series (they are in ServeResult.steps).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

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
    output_tokens_per_s: float  # output tokens produced in the window / duration_s
    total_tokens_per_s: float  # (input + output tokens produced in the window) / duration_s
    requests: int  # included requests
    duration_s: float  # the window: last finish - first arrival of the included requests
    preemptions: int  # over the included requests
    window_output_tokens: float = float("nan")  # output tokens produced in the window, by any request
    window_input_tokens: float = float("nan")  # prompt tokens whose prefill completed in the window
    window_tokens_from: str = "requests"  # "steps" (exact) or "requests" (decode tokens spread evenly)

    def as_dict(self, flat: bool = False) -> dict:
        """Every field. Stats are dicts {mean, p50, p90, p99, count}, or with ``flat`` keys
        ``<name>_<stat>`` (``ttft_s_p99``), so that every value is a plain scalar (or None)."""
        out: dict = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Stat):
                d = vars(v).copy()
                if flat:
                    out.update({f"{f.name}_{k}": x for k, x in d.items()})
                else:
                    out[f.name] = d
            else:
                out[f.name] = v
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


def _in_window(t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (t > lo) & (t <= hi)


def _window_output_from_requests(req: np.ndarray, lo: float, hi: float) -> float:
    out = req["output_tokens"].astype(np.float64)
    first, finish = req["first_token_s"], req["finish_s"]
    produced = np.isfinite(first) & (out >= 1)
    total = float(np.count_nonzero(produced & _in_window(first, lo, hi)))
    rest = produced & np.isfinite(finish) & (out >= 2)
    a, b, k = first[rest], finish[rest], out[rest] - 1  # k tokens spread evenly over (a, b]
    span = b - a
    overlap = np.clip(np.minimum(b, hi) - np.maximum(a, lo), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(span > 0, overlap / span, _in_window(b, lo, hi).astype(np.float64))
    return total + float(np.sum(k * share))


def summarize(requests: np.ndarray, *, warmup_frac: float = DEFAULT_WARMUP_FRAC,
              drain_frac: float = DEFAULT_DRAIN_FRAC, steps: np.ndarray | None = None) -> ServeMetrics:
    """Metrics of ``ServeResult.requests`` (every request of the run), optionally with the run's step
    table ``steps`` (fields end_s and output_tokens); see the module docstring."""
    rows = included(requests, warmup_frac, drain_frac)
    arrival, first, finish = rows["arrival_s"], rows["first_token_s"], rows["finish_s"]
    out = rows["output_tokens"]
    ttft = first - arrival
    multi = out >= 2
    tpot = (finish[multi] - first[multi]) / (out[multi] - 1)
    e2e = finish - arrival
    fin = finish[np.isfinite(finish)]
    lo = float(arrival.min()) if len(rows) else 0.0
    hi = float(fin.max()) if len(fin) else lo
    duration_s = hi - lo
    if steps is not None:
        names = steps.dtype.names or ()
        missing = [f for f in ("end_s", "output_tokens") if f not in names]
        if missing:
            raise InputError(f"the step table lacks {', '.join(missing)} (pass the serve loop's steps)", where="steps")
        win_out = float(steps["output_tokens"][_in_window(steps["end_s"], lo, hi)].sum())
        source = "steps"
    else:
        win_out = _window_output_from_requests(requests, lo, hi)
        source = "requests"
    prefill_done = np.where(requests["output_tokens"] > 0, requests["first_token_s"], requests["finish_s"])
    win_in = float(requests["input_tokens"][_in_window(prefill_done, lo, hi)].sum())
    per_s = (1.0 / duration_s) if duration_s > 0 else float("nan")
    return ServeMetrics(
        ttft_s=Stat.of(ttft), tpot_s=Stat.of(tpot), e2e_s=Stat.of(e2e),
        output_tokens_per_s=win_out * per_s, total_tokens_per_s=(win_in + win_out) * per_s,
        requests=len(rows), duration_s=duration_s, preemptions=int(rows["preemptions"].sum()),
        window_output_tokens=win_out, window_input_tokens=win_in, window_tokens_from=source,
    )
