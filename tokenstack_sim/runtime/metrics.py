"""Latency, throughput and SLO metrics of a serving run, and Student-t confidence intervals over seeds.

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

SLO attainment: a request meets its SLO when it produced a first token with TTFT <= ``slo_ttft_s`` and,
if it has >= 2 output tokens, TPOT <= ``slo_tpot_s`` (``slo_met``); a bound given as None is left out.
``slo_attainment`` is the share of included requests meeting it; NaN when neither bound is given.

Confidence intervals (``confidence_interval``): mean ± t(level, n − 1) · s / sqrt(n), s the sample standard
deviation. The Student-t quantile (``t_quantile``) inverts the t CDF (regularized incomplete beta,
continued fraction) by bisection for df <= 100; beyond, the normal quantile with the Cornish–Fisher terms
up to 1/df^4 (Abramowitz & Stegun 26.7.5), within 1e-7 of the inversion there (the plain normal quantile
would be 1.2% low at df 101).
Leaves out: per-step time series (they are in ServeResult.steps), goodput under a load sweep.
"""

from __future__ import annotations

import math
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
    slo_attainment: float = float("nan")  # share of included requests with slo_met; NaN without SLOs
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None

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


def _check_slo(value, name: str) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"an SLO must be a positive number of seconds (or None for no bound), got {value!r}",
                         where=name)
    return v


def slo_met(requests: np.ndarray, slo_ttft_s: float | None, slo_tpot_s: float | None) -> np.ndarray:
    """Per request: it produced a first token, TTFT <= slo_ttft_s and, with >= 2 output tokens,
    TPOT <= slo_tpot_s (a bound of None is not checked)."""
    ttft_bound, tpot_bound = _check_slo(slo_ttft_s, "slo_ttft_s"), _check_slo(slo_tpot_s, "slo_tpot_s")
    ttft = requests["first_token_s"] - requests["arrival_s"]
    ok = np.isfinite(ttft)
    if ttft_bound is not None:
        ok &= ttft <= ttft_bound
    if tpot_bound is not None:
        out = requests["output_tokens"]
        multi = out >= 2
        with np.errstate(invalid="ignore"):
            tpot = (requests["finish_s"] - requests["first_token_s"]) / np.maximum(out - 1, 1)
        ok &= ~multi | (tpot <= tpot_bound)  # an unfinished multi-token request (NaN TPOT) fails
    return ok


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
              drain_frac: float = DEFAULT_DRAIN_FRAC, steps: np.ndarray | None = None,
              slo_ttft_s: float | None = None, slo_tpot_s: float | None = None) -> ServeMetrics:
    """Metrics of ``ServeResult.requests`` (every request of the run), optionally with the run's step
    table ``steps`` (fields end_s and output_tokens) and SLOs; see the module docstring."""
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
    ttft_bound, tpot_bound = _check_slo(slo_ttft_s, "slo_ttft_s"), _check_slo(slo_tpot_s, "slo_tpot_s")
    if (ttft_bound is None and tpot_bound is None) or len(rows) == 0:
        attainment = float("nan")
    else:
        attainment = float(slo_met(rows, ttft_bound, tpot_bound).mean())
    return ServeMetrics(
        ttft_s=Stat.of(ttft), tpot_s=Stat.of(tpot), e2e_s=Stat.of(e2e),
        output_tokens_per_s=win_out * per_s, total_tokens_per_s=(win_in + win_out) * per_s,
        requests=len(rows), duration_s=duration_s, preemptions=int(rows["preemptions"].sum()),
        window_output_tokens=win_out, window_input_tokens=win_in, window_tokens_from=source,
        slo_attainment=attainment, slo_ttft_s=ttft_bound, slo_tpot_s=tpot_bound,
    )


# ---- Student-t quantile and confidence intervals (no scipy) -------------------------------------------------
_EXACT_DF_MAX = 100


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta (modified Lentz; Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError("incomplete beta continued fraction did not converge")  # pragma: no cover


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0."""
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


def _t_quantile_exact(p: float, df: float) -> float:
    """t with P(T <= t) = p, by bisection on the upper tail (no cancellation near p = 1)."""
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -_t_quantile_exact(1.0 - p, df)
    target = 1.0 - p
    lo, hi = 0.0, 1.0
    while _t_upper_tail(hi, df) > target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_upper_tail(mid, df) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 4e-16 * hi:
            break
    return 0.5 * (lo + hi)


def _normal_quantile(p: float) -> float:
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -_normal_quantile(1.0 - p)
    target = 1.0 - p  # upper tail 0.5 * erfc(z / sqrt 2)
    lo, hi = 0.0, 1.0
    while 0.5 * math.erfc(hi / math.sqrt(2.0)) > target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(mid / math.sqrt(2.0)) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 4e-16 * hi:
            break
    return 0.5 * (lo + hi)


def t_quantile(p: float, df: int) -> float:
    """The Student-t quantile t_p with ``df`` degrees of freedom (see the module docstring)."""
    if not (0.0 < p < 1.0):
        raise InputError(f"a quantile's probability must be in (0, 1), got {p!r}", where="p")
    if not (df >= 1 and float(df) == int(df)):
        raise InputError(f"degrees of freedom must be an integer >= 1, got {df!r}", where="df")
    df = int(df)
    if df <= _EXACT_DF_MAX:
        return _t_quantile_exact(p, df)
    z = _normal_quantile(p)
    z2 = z * z
    g1 = (z2 + 1.0) * z / 4.0
    g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
    g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
    g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
    v = float(df)
    return z + g1 / v + g2 / v**2 + g3 / v**3 + g4 / v**4


def confidence_interval(values, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the two-sided Student-t interval at ``level`` over ``values`` (e.g. one
    metric over seeds). A NaN value makes both NaN; one value gives a NaN half-width; none, both NaN."""
    if not (0.0 < level < 1.0):
        raise InputError(f"a confidence level must be in (0, 1), got {level!r}", where="level")
    x = np.asarray(values, dtype=np.float64).ravel()
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    mean = float(x.mean())
    if n == 1 or not math.isfinite(mean):
        return mean, float("nan")
    s = float(x.std(ddof=1))
    return mean, t_quantile(0.5 + level / 2.0, n - 1) * s / math.sqrt(n)
