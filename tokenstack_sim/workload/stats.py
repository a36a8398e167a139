"""Summary statistics of a request table: what `tokenstack workload inspect` prints and tests check.

Lengths (mean / p50 / p99 / max), mean rate over the trace's span, inter-arrival coefficient of
variation, the Fano factor of per-second counts, and the prefix-hit potential: the share of input
tokens that an unbounded prefix cache, filled in arrival order, would serve (a request hits the leading
run of its blocks already seen; hit tokens are capped by its input length, so a hit on a partial last
block counts only its real tokens).
Leaves out cache capacity, eviction and the time a block takes to become reusable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokenstack_sim.workload.table import RequestTable


@dataclass(frozen=True)
class LengthStats:
    mean: float
    p50: float
    p99: float
    max: float


@dataclass(frozen=True)
class PrefixStats:
    token_hit_frac: float  # input tokens served from cache / all input tokens
    request_hit_p50: float  # per-request hit fraction, median
    request_hit_p90: float
    blocks_reused_frac: float  # unique blocks referenced by more than one request slot


@dataclass(frozen=True)
class TraceStats:
    requests: int
    duration_s: float
    rate_qps: float
    interarrival_cv: float
    fano_1s: float
    input_tokens: LengthStats
    output_tokens: LengthStats
    prefix: PrefixStats | None


def length_stats(values: np.ndarray) -> LengthStats:
    v = np.asarray(values, dtype=np.float64)
    p50, p99 = np.percentile(v, [50, 99])
    return LengthStats(float(v.mean()), float(p50), float(p99), float(v.max()))


def interarrival_cv(arrival_s: np.ndarray) -> float:
    """Std / mean of the gaps between consecutive arrivals (1 for Poisson); nan below 3 requests."""
    gaps_s = np.diff(np.asarray(arrival_s, dtype=np.float64))
    if len(gaps_s) < 2 or gaps_s.mean() <= 0:
        return float("nan")
    return float(gaps_s.std() / gaps_s.mean())


def mean_rate_qps(arrival_s: np.ndarray) -> float:
    """Requests per second over the span from first to last arrival."""
    span_s = float(arrival_s[-1] - arrival_s[0]) if len(arrival_s) else 0.0
    return len(arrival_s) / span_s if span_s > 0 else float("nan")


def fano_factor(arrival_s: np.ndarray, bin_s: float = 1.0) -> float:
    """Variance / mean of arrivals counted in ``bin_s`` bins (1 for Poisson)."""
    t = np.asarray(arrival_s, dtype=np.float64)
    counts = np.bincount(((t - t[0]) // bin_s).astype(np.int64))
    return float(counts.var() / counts.mean()) if counts.mean() > 0 else float("nan")


def prefix_hit(table: RequestTable) -> tuple[np.ndarray, PrefixStats] | None:
    """Per-request hit tokens and the summary, or None when the table has no hashes."""
    if not table.has_prefix or len(table) == 0:
        return None
    hashes = table.prefix_hashes
    offsets = table.prefix_offsets
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(len(table)), counts)
    unique, first_pos, inverse, uses = np.unique(hashes, return_index=True, return_inverse=True, return_counts=True)
    # A block hits when the request that first held its hash arrived strictly earlier.
    seen_before = owner[first_pos][inverse] < owner
    position = np.arange(len(hashes), dtype=np.int64) - offsets[:-1][owner]
    # Leading run of hits per request = position of its first miss (or its block count if none).
    miss_pos = np.where(seen_before, np.iinfo(np.int64).max, position)
    first_miss = np.full(len(table), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_miss, owner, miss_pos)
    run_blocks = np.minimum(first_miss, counts)
    input_tokens = table.rows["input_tokens"]
    hit_tokens = np.minimum(run_blocks * table.hash_block_tokens, input_tokens)
    per_request = hit_tokens / input_tokens
    p50, p90 = np.percentile(per_request, [50, 90])
    summary = PrefixStats(
        token_hit_frac=float(hit_tokens.sum() / input_tokens.sum()),
        request_hit_p50=float(p50),
        request_hit_p90=float(p90),
        blocks_reused_frac=float(np.mean(uses > 1)) if len(unique) else 0.0,
    )
    return hit_tokens, summary


def trace_stats(table: RequestTable) -> TraceStats:
    rows = table.rows
    arrival_s = rows["arrival_s"]
    hit = prefix_hit(table)
    return TraceStats(
        requests=len(table),
        duration_s=float(arrival_s[-1] - arrival_s[0]),
        rate_qps=mean_rate_qps(arrival_s),
        interarrival_cv=interarrival_cv(arrival_s),
        fano_1s=fano_factor(arrival_s),
        input_tokens=length_stats(rows["input_tokens"]),
        output_tokens=length_stats(rows["output_tokens"]),
        prefix=hit[1] if hit else None,
    )
