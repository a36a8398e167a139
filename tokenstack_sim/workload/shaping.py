"""Load shaping of a request table: time windows, rate scaling, re-timing.

- ``window``: requests with ``start_s <= arrival_s < end_s``, re-based to start at 0.
- ``scale_rate``: compress or stretch time so the mean rate becomes ``target_qps``. Every gap is scaled by
  the same factor, so the inter-arrival CV, the gap distribution's shape and the order of requests are
  kept exactly; only the duration changes.
- ``retime``: replace the arrival times with a seeded renewal process (Poisson / Gamma / Weibull) of a
  given rate and CV, keeping each request's lengths and ids in order.
Leaves out changing the number of requests (thinning or replicating a trace), which would have to
invent or discard sessions.
"""

from __future__ import annotations

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.arrivals import check_cv, sample_arrivals_s
from tokenstack_sim.workload.stats import interarrival_cv, mean_rate_qps
from tokenstack_sim.workload.table import RequestTable


def window(table: RequestTable, start_s: float = 0.0, end_s: float | None = None) -> RequestTable:
    arrival_s = table.rows["arrival_s"]
    end_s = float("inf") if end_s is None else end_s
    if end_s <= start_s:
        raise InputError(f"window end {end_s} s must be after its start {start_s} s", where="window")
    selected = np.flatnonzero((arrival_s >= start_s) & (arrival_s < end_s))
    if len(selected) == 0:
        raise InputError(f"no request arrives in [{start_s}, {end_s}) s", where="window")
    out = table.take(selected)
    out.rows["arrival_s"] -= out.rows["arrival_s"][0]
    out.meta["window_s"] = [start_s, None if end_s == float("inf") else end_s]
    return out


def scale_rate(table: RequestTable, target_qps: float) -> RequestTable:
    if not target_qps > 0:
        raise InputError(f"target rate must be > 0 req/s, got {target_qps}", where="rate")
    current_qps = mean_rate_qps(table.rows["arrival_s"])
    if not np.isfinite(current_qps):
        raise InputError("the trace spans no time, so its rate cannot be scaled", where="rate")
    rows = table.rows.copy()
    rows["arrival_s"] = (rows["arrival_s"] - rows["arrival_s"][0]) * (current_qps / target_qps)
    meta = dict(table.meta, rate_scaled_from_qps=current_qps)
    return RequestTable(rows, table.prefix_offsets, table.prefix_hashes, table.hash_block_tokens, meta)


def retime(
    table: RequestTable, family: str, seed: int, rate_qps: float | None = None, cv: float | None = None
) -> RequestTable:
    """New arrivals from a renewal process; rate and CV default to the trace's own."""
    arrival_s = table.rows["arrival_s"]
    if family == "poisson" and cv is not None and cv != 1.0:
        raise InputError(f"a poisson process has cv = 1, got cv {cv}; use gamma or weibull for another cv", where="--cv")
    if rate_qps is not None and not (np.isfinite(rate_qps) and rate_qps > 0):
        raise InputError(f"rate must be a finite number > 0, got {rate_qps}", where="--rate")
    if cv is not None and family != "poisson":
        check_cv(cv, where="--cv")
    rate_qps = mean_rate_qps(arrival_s) if rate_qps is None else rate_qps
    cv = 1.0 if family == "poisson" else interarrival_cv(arrival_s) if cv is None else cv
    if not (np.isfinite(rate_qps) and np.isfinite(cv)):
        raise InputError("give rate and cv: the trace is too short to measure them", where="retime")
    if family != "poisson":
        check_cv(cv, where="retime (the trace's own cv; give --cv)")
    rows = table.rows.copy()
    rows["arrival_s"] = sample_arrivals_s(np.random.default_rng(seed), len(rows), family, rate_qps, cv)
    meta = dict(table.meta, retimed={"family": family, "rate_qps": rate_qps, "cv": cv, "seed": seed})
    return RequestTable(rows, table.prefix_offsets, table.prefix_hashes, table.hash_block_tokens, meta)
