"""Robustness and resilience of a perturbed run against the nominal run with the same seed (issue 12).

- **Robustness** = performance kept under the perturbation, each as perturbed / nominal so that 1 is
  "unaffected" and below 1 is worse: `throughput_kept` (output tokens/s over the measurement window,
  sim/engine.py's summary), `slo_kept` (SLO attainment; NaN when the nominal run meets no SLO at all),
  `energy_kept` = nominal / perturbed energy per output token (below 1: each token costs more); agent
  runs also `makespan_kept` = nominal / perturbed mean app makespan.
- **Resilience** = `recovery_s`: the time from the disruption's end until the perturbed run is back
  within `tolerance` (default 10% [E]) of the nominal run, read from both runs' step records as a
  windowed series (default: output tokens per second in `window_s` windows, from the steps that end in
  each window). Recovered = the first window starting at or after the disruption's end from which
  `hold_windows` consecutive windows (those left, near the end of the runs) are all within the tolerance
  (|p - n| <= tolerance x |n|; two empty windows agree); recovery_s = that window's start - the disruption's end (0: never left, or back by
  the next window). NaN when it never happens before either run ends, or when the disruption has no end
  (a rate shift or misprediction over the whole run): `recovered` says which.
  The disruption ends at the window's end for slow-downs, storms and bursts, at the failure plus its
  weight reload for a stack failure, at the failure itself for a PIM layer failure (its capacity stays
  lost: a run may never come back within the tolerance, which is what resilience is meant to show).
  A perturbation that keeps shifting the timeline (a burst moves later arrivals earlier) compares
  times, not requests: the series must come back to the nominal rate, not to the same requests.
- **Work lost**: KV tokens whose blocks were lost (to recompute), requests that lost their KV mid-run,
  blocks lost, reload seconds (robust/perturb.py's summary keys), `tokens_recomputed` = tokens computed
  by the perturbed run's steps - the nominal run's (preemptions and lost prefix-cache entries both add
  to it; can be negative when a perturbation happens to improve prefix reuse), and `requests_failed`
  (requests that never finished: always 0 here, a lost request is recomputed rather than dropped).

Leaves out: significance over seeds (the report averages seeds and shows their spread), recovery of
latency series (only throughput and queue length are offered).
"""

from __future__ import annotations

import math

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.robust.injectors import FAILURE_TYPES, Injector, parse_injectors

# [E] "back to normal" = within 10% of the nominal run's rate for 3 consecutive 1-s windows: wide enough
# that the step-level noise of two runs of the same requests does not count, short next to the windows
# the injectors use (several seconds)
DEFAULT_WINDOW_S = 1.0
DEFAULT_TOLERANCE = 0.1
DEFAULT_HOLD_WINDOWS = 3
SERIES = ("output_tokens_per_s", "num_waiting")


def _ratio(a: float, b: float) -> float:
    if b is None or a is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return float("nan")
    return float(a) / float(b)


def robustness(nominal: dict, perturbed: dict) -> dict:
    """Performance kept (module docstring) from two runs' summaries."""
    out = {"throughput_kept": _ratio(perturbed.get("output_tokens_per_s"), nominal.get("output_tokens_per_s")),
           "slo_kept": _ratio(perturbed.get("slo_attainment"), nominal.get("slo_attainment")),
           "energy_kept": _ratio(nominal.get("energy_per_output_token_j"), perturbed.get("energy_per_output_token_j"))}
    if "app_makespan_mean_s" in nominal:  # agent runs: nominal / perturbed mean app makespan
        out["makespan_kept"] = _ratio(nominal.get("app_makespan_mean_s"), perturbed.get("app_makespan_mean_s"))
    return out


def disruption_end_s(injectors, summary: dict | None = None) -> float:
    """When the run's disruption ends (module docstring); inf when some injector never ends."""
    inj = parse_injectors(injectors)
    active = [i for i in inj if not i.is_nominal]
    if not active:
        return float("nan")
    end = 0.0
    for i in active:
        if i.type == "stack_failure":
            end = max(end, i.start_s + float((summary or {}).get("perturb_reload_s", 0.0)))
        elif i.type == "pim_layer_failure":
            end = max(end, i.start_s)
        elif i.type in ("output_length_misprediction", "tool_time_misprediction"):
            end = max(end, i.end_s)
        else:
            end = max(end, i.end_s)
    return end


def series(steps: np.ndarray, window_s: float, t0: float, n_windows: int,
           what: str = "output_tokens_per_s") -> np.ndarray:
    """Per window [t0 + k w, t0 + (k + 1) w): output tokens per second of the steps ending in it, or the
    mean `num_waiting` of those steps (0 for an empty window)."""
    if what not in SERIES:
        raise InputError(f"expected one of {', '.join(SERIES)}, got {what!r}", where="series")
    if not (window_s > 0 and math.isfinite(window_s)):
        raise InputError(f"expected a window > 0 s, got {window_s!r}", where="window_s")
    out = np.zeros(n_windows)
    if len(steps) == 0 or n_windows == 0:
        return out
    k = np.floor((steps["end_s"] - t0) / window_s).astype(np.int64)
    ok = (k >= 0) & (k < n_windows)
    if what == "output_tokens_per_s":
        np.add.at(out, k[ok], steps["output_tokens"][ok].astype(np.float64))
        return out / window_s
    cnt = np.bincount(k[ok], minlength=n_windows).astype(np.float64)
    np.add.at(out, k[ok], steps["num_waiting"][ok].astype(np.float64))
    return np.divide(out, cnt, out=np.zeros(n_windows), where=cnt > 0)


def recovery(nominal_steps: np.ndarray, perturbed_steps: np.ndarray, end_s: float, *,
             window_s: float = DEFAULT_WINDOW_S, tolerance: float = DEFAULT_TOLERANCE,
             hold_windows: int = DEFAULT_HOLD_WINDOWS, what: str = "output_tokens_per_s") -> dict:
    """Time to return within `tolerance` of the nominal series after the disruption ends at `end_s`
    (module docstring): {recovery_s, recovered}."""
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise InputError(f"expected a tolerance >= 0, got {tolerance!r}", where="tolerance")
    if hold_windows < 1:
        raise InputError(f"expected at least 1 window, got {hold_windows!r}", where="hold_windows")
    if not math.isfinite(end_s):
        return {"recovery_s": float("nan"), "recovered": False}
    t0 = 0.0
    last = min(float(nominal_steps["end_s"].max()) if len(nominal_steps) else 0.0,
               float(perturbed_steps["end_s"].max()) if len(perturbed_steps) else 0.0)
    n = int(math.floor((last - t0) / window_s))  # whole windows both runs cover
    a = series(nominal_steps, window_s, t0, n, what)
    b = series(perturbed_steps, window_s, t0, n, what)
    within = np.abs(b - a) <= tolerance * np.abs(a) + 1e-12
    first = int(math.ceil((end_s - t0) / window_s - 1e-9))
    for i in range(max(first, 0), n):
        if within[i:i + hold_windows].all():  # near the end of the runs: the windows left
            return {"recovery_s": max(0.0, t0 + i * window_s - end_s), "recovered": True}
    return {"recovery_s": float("nan"), "recovered": False}


def work_lost(nominal, perturbed) -> dict:
    """Work lost by the perturbed run (module docstring); `nominal` and `perturbed` are RunResults."""
    s = perturbed.summary
    out = {k.removeprefix("perturb_"): s.get(k, 0) for k in ("perturb_kv_tokens_lost", "perturb_requests_interrupted",
                                                            "perturb_blocks_lost", "perturb_reload_s")}
    out["tokens_recomputed"] = int(perturbed.steps["new_tokens"].sum()) - int(nominal.steps["new_tokens"].sum())
    out["requests_failed"] = int(np.count_nonzero(np.isnan(perturbed.requests["finish_s"])))
    return out


def compare(nominal, perturbed, *, window_s: float = DEFAULT_WINDOW_S, tolerance: float = DEFAULT_TOLERANCE,
            hold_windows: int = DEFAULT_HOLD_WINDOWS, what: str = "output_tokens_per_s") -> dict:
    """Every metric of a perturbed RunResult against its nominal one (same seed)."""
    injectors = perturbed.params.get("perturb", [])
    end = disruption_end_s(injectors, perturbed.summary)
    out = robustness(nominal.summary, perturbed.summary)
    out["disruption_end_s"] = end
    out |= recovery(nominal.steps, perturbed.steps, end, window_s=window_s, tolerance=tolerance,
                    hold_windows=hold_windows, what=what)
    out |= work_lost(nominal, perturbed)
    return out


def describe(injectors) -> tuple[str, str, float]:
    """(type, scope, magnitude) of a point's single injector (the report's axes); several are joined."""
    inj: list[Injector] = parse_injectors(injectors)
    if not inj:
        return "nominal", "all", 0.0
    return ("+".join(i.type for i in inj), "+".join(i.scope for i in inj), max(abs(i.magnitude) for i in inj))


__all__ = ["robustness", "recovery", "series", "work_lost", "compare", "disruption_end_s", "describe",
           "FAILURE_TYPES"]
