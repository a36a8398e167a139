"""Estimate a `WorkloadSpec` from a request table, and write specs as TOML.

Arrivals: method of moments (mean rate, inter-arrival CV), family by the median-to-mean gap ratio
(`arrivals.fit_family`). Lengths: the empirical quantiles at ``QUANTILE_GRID`` (denser in the tail,
where the means of LLM length distributions live). Prefix (only for tables with hashes): the block
size, the number of leading blocks shared by every request, and the follow-up probability calibrated
so the prefix model reproduces the table's token prefix-hit; the other prefix parameters keep their
Mooncake-measured defaults.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.workload.arrivals import CV_MAX, CV_MIN, fit_family
from tokenstack_sim.workload.prefix_model import PrefixModel, calibrate_followup_prob
from tokenstack_sim.workload.spec import SCHEMA_VERSION, ArrivalSpec, LengthSpec, WorkloadSpec
from tokenstack_sim.workload.stats import prefix_hit
from tokenstack_sim.workload.table import RequestTable

QUANTILE_GRID = (
    0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0,
)


def fit_lengths(values: np.ndarray) -> LengthSpec:
    quantiles = np.quantile(np.asarray(values, dtype=np.float64), QUANTILE_GRID)
    return LengthSpec("quantiles", q=QUANTILE_GRID, value=tuple(round(float(v), 1) for v in quantiles))


def common_prefix_blocks(table: RequestTable) -> int:
    """Leading block positions whose hash is the same in every request long enough to have them."""
    offsets, hashes = table.prefix_offsets, table.prefix_hashes
    counts = np.diff(offsets)
    j = 0
    while True:
        holders = counts > j + 1  # a partial last block is not a shared prompt block
        if not holders.any():
            return j
        at_j = hashes[offsets[:-1][holders] + j]
        if not np.all(at_j == at_j[0]) or holders.sum() < 0.5 * len(table):
            return j
        j += 1


def fit_spec(table: RequestTable, name: str, seed: int = 0) -> WorkloadSpec:
    rows = table.rows
    family, rate_qps, cv = fit_family(np.diff(rows["arrival_s"]))
    cv = min(max(cv, CV_MIN), CV_MAX)  # a trace outside the range is fitted at its nearest end
    prefix = None
    if table.has_prefix:
        measured = prefix_hit(table)[1].token_hit_frac
        base = PrefixModel(block_tokens=table.hash_block_tokens, common_prefix_blocks=common_prefix_blocks(table))
        prefix = calibrate_followup_prob(table, measured, base, seed)
    return WorkloadSpec(
        name=name,
        description=f"fitted from {table.meta.get('source', 'a request table')} ({len(table)} requests)",
        arrivals=ArrivalSpec(family, round(rate_qps, 4), round(cv, 4)),
        input_tokens=fit_lengths(rows["input_tokens"]),
        output_tokens=fit_lengths(rows["output_tokens"]),
        prefix=prefix,
    )


def _toml_value(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    return str(value)


def _length_table(spec: LengthSpec) -> dict:
    if spec.kind == "quantiles":
        return {"kind": spec.kind, "q": spec.q, "value": spec.value}
    if spec.kind == "lognormal":
        return {"kind": spec.kind, "median": spec.median, "sigma": spec.sigma, "min": spec.min, "max": spec.max}
    return {"kind": spec.kind, "constant": spec.constant}


def spec_to_toml(spec: WorkloadSpec, comment: str = "") -> str:
    lines = [f"# {line}" for line in comment.splitlines()] if comment else []
    lines += [f"schema_version = {SCHEMA_VERSION}", f"name = {_toml_value(spec.name)}"]
    if spec.description:
        lines.append(f"description = {_toml_value(spec.description)}")
    arrivals = {"family": spec.arrivals.family, "rate_qps": spec.arrivals.rate_qps}
    if spec.arrivals.family != "poisson":
        arrivals["cv"] = spec.arrivals.cv
    sections = {"arrivals": arrivals, "input_tokens": _length_table(spec.input_tokens),
                "output_tokens": _length_table(spec.output_tokens)}
    if spec.prefix is not None:
        sections["prefix"] = {f.name: getattr(spec.prefix, f.name) for f in fields(spec.prefix)}
    for section, values in sections.items():
        lines += ["", f"[{section}]"] + [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def write_spec(spec: WorkloadSpec, path: str | Path, comment: str = "") -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(spec_to_toml(spec, comment))
    return path


__all__ = ["QUANTILE_GRID", "fit_spec", "fit_lengths", "spec_to_toml", "write_spec"]
