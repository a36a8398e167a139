"""Comparison tables of runs: one row per run (`runs_table`) or per group of seeds (`seeds_table`).

Both read only `RunResult.params` (system, model, workload, qps, seed), `status`, `reason` and
`RunResult.summary`; the engine fills `summary` with (at least) the keys of `SUMMARY_KEYS`:

=========================  =========  ============================================================
key                        unit       meaning
=========================  =========  ============================================================
requests                   count      requests in the statistics (warm-up and drain excluded)
duration_s                 s          last finish - first arrival over those requests
output_tokens_per_s        tok/s      their output tokens / duration_s
total_tokens_per_s         tok/s      their input + output tokens / duration_s
ttft_s_mean/_p50/_p90/_p99 s          time to first token (first token - arrival)
tpot_s_mean/_p50/_p90/_p99 s          time per output token after the first (requests with >= 2)
e2e_s_mean/_p50/_p90/_p99  s          end-to-end latency (finish - arrival)
slo_attainment             fraction   share of those requests with slo_met (0..1)
preemptions                count      preemptions during the whole run
output_tokens              tokens     every output token of the run (warm-up and drain included)
energy_j_total             J          energy of the whole run, static included
energy_j_gpu               J          of which the GPUs (compute, on-chip, static)
energy_j_stacks            J          of which the DRAM of the stacks (capacity layers, base die, DMA, static)
energy_j_pim               J          of which the PIM units (MACs and their all-bank commands)
energy_j_links             J          of which the links (GPU-PIM device, all-reduce; bytes, static)
energy_per_output_token_j  J/token    energy_j_total / output_tokens
pim_attention_share        fraction   sum kv_tokens_attended_pim / sum kv_tokens_attended (steps)
kv_blocks_peak             blocks     max kv_blocks_in_use over the steps
=========================  =========  ============================================================

Optional keys (KV management, kv/tiered.py; runs without them show empty cells): kv_migrations_per_s
(blocks demoted + promoted per simulated second), kv_migration_time_share (share of step time spent
in migration DMA), kv_gathers_per_decode (cross-unit partial results merged per decode sequence),
kv_replica_hit_rate (prefix hits served by a copy on the request's home unit).

The four energy_j_<class> values sum to energy_j_total (the engine assigns each `energy_pj`
component to one class). Energy is over the whole run, so energy per output token is too; latencies
and throughputs use the included requests only. The summary may hold further keys (the tables ignore
them); an "ok" run lacking one of these is refused with the missing keys named. A "does_not_fit" run
has no metrics: it is a row with its reason in the note column.

Formats: "markdown" (aligned, units in the headers, numbers rounded for reading), "csv" and "json"
(the same columns in display units, unrounded; a missing value is empty / null).
Leaves out: plots (`plots.py`), per-request or per-step data, significance tests between systems.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tokenstack_sim.results.result import RunResult
from tokenstack_sim.runtime.metrics import t_quantile

_STATS = ("mean", "p50", "p90", "p99")
SUMMARY_KEYS: list[tuple[str, str]] = [
    ("requests", "count"),
    ("duration_s", "s"),
    ("output_tokens_per_s", "tok/s"),
    ("total_tokens_per_s", "tok/s"),
    *[(f"ttft_s_{s}", "s") for s in _STATS],
    *[(f"tpot_s_{s}", "s") for s in _STATS],
    *[(f"e2e_s_{s}", "s") for s in _STATS],
    ("slo_attainment", "fraction"),
    ("preemptions", "count"),
    ("output_tokens", "tokens"),
    ("energy_j_total", "J"),
    ("energy_j_gpu", "J"),
    ("energy_j_stacks", "J"),
    ("energy_j_pim", "J"),
    ("energy_j_links", "J"),
    ("energy_per_output_token_j", "J/token"),
    ("pim_attention_share", "fraction"),
    ("kv_blocks_peak", "blocks"),
]
SUMMARY_KEY_NAMES = tuple(k for k, _ in SUMMARY_KEYS)
ENERGY_CLASSES = ("gpu", "stacks", "pim", "links")
FORMATS = ("markdown", "csv", "json")


def missing_summary_keys(run: RunResult) -> list[str]:
    """Keys of SUMMARY_KEYS absent from an "ok" run's summary (none expected of a does_not_fit run)."""
    if run.status != "ok":
        return []
    return [k for k in SUMMARY_KEY_NAMES if k not in run.summary]


@dataclass(frozen=True)
class _Col:
    id: str  # key in JSON output
    header: str  # markdown / CSV header, unit in brackets
    get: Callable[[RunResult], object]
    numeric: bool = True


def _s(key: str, scale: float = 1.0):
    return lambda r: _scaled(r.summary.get(key), scale)


def _scaled(v, scale: float):
    if v is None:
        return None
    return float(v) * scale


def _count(key: str):
    return lambda r: None if r.summary.get(key) is None else int(r.summary[key])


def _per_token_mj(cls: str):
    def get(r: RunResult):
        e, n = r.summary.get(f"energy_j_{cls}"), r.summary.get("output_tokens")
        return float(e) / float(n) * 1e3 if e is not None and n else None
    return get


_ID_COLS = [
    _Col("system", "system", lambda r: r.params.get("system"), numeric=False),
    _Col("model", "model", lambda r: r.params.get("model"), numeric=False),
    _Col("workload", "workload", lambda r: r.params.get("workload"), numeric=False),
    _Col("qps", "QPS (req/s)", lambda r: r.params.get("qps")),
]
_METRIC_COLS = [
    _Col("output_tok_per_s", "output (tok/s)", _s("output_tokens_per_s")),
    _Col("total_tok_per_s", "total (tok/s)", _s("total_tokens_per_s")),
    _Col("ttft_ms_p50", "TTFT p50 (ms)", _s("ttft_s_p50", 1e3)),
    _Col("ttft_ms_p99", "TTFT p99 (ms)", _s("ttft_s_p99", 1e3)),
    _Col("tpot_ms_p50", "TPOT p50 (ms)", _s("tpot_s_p50", 1e3)),
    _Col("tpot_ms_p99", "TPOT p99 (ms)", _s("tpot_s_p99", 1e3)),
    _Col("e2e_s_p50", "E2E p50 (s)", _s("e2e_s_p50")),
    _Col("slo_pct", "SLO met (%)", _s("slo_attainment", 100.0)),
    _Col("energy_mj_per_tok", "energy/out tok (mJ)", _s("energy_per_output_token_j", 1e3)),
    *[_Col(f"energy_mj_per_tok_{c}", f"{label} (mJ/tok)", _per_token_mj(c))
      for c, label in zip(ENERGY_CLASSES, ("GPU", "stacks", "PIM", "links"))],
    _Col("pim_attention_pct", "PIM attn (%)", _s("pim_attention_share", 100.0)),
    _Col("preemptions", "preemptions", _count("preemptions")),
    # KV management (kv/tiered.py); absent from runs written before it (shown empty)
    _Col("kv_migrations_per_s", "KV moves (blocks/s)", _s("kv_migrations_per_s")),
    _Col("kv_migration_pct", "migration time (%)", _s("kv_migration_time_share", 100.0)),
    _Col("kv_gathers_per_decode", "gathers/decode seq", _s("kv_gathers_per_decode")),
    _Col("kv_replica_hit_pct", "replica hits (%)", _s("kv_replica_hit_rate", 100.0)),
]
_RUN_COLS = [
    *_ID_COLS,
    _Col("seed", "seed", lambda r: r.params.get("seed")),
    _Col("status", "status", lambda r: r.status, numeric=False),
    _Col("requests", "requests", _count("requests")),
    *_METRIC_COLS,
    _Col("note", "note", lambda r: r.reason, numeric=False),
]


# The columns of a compact comparison (the demo's): who, how fast, how well, at what energy.
COMPACT_COLUMNS = ("system", "requests", "output_tok_per_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50",
                   "tpot_ms_p99", "slo_pct", "energy_mj_per_tok", "pim_attention_pct", "preemptions", "note")
# The columns of a KV-management comparison (policies switched off in turn).
KV_COLUMNS = ("system", "output_tok_per_s", "tpot_ms_p50", "tpot_ms_p99", "energy_mj_per_tok", "pim_attention_pct",
              "kv_migrations_per_s", "kv_migration_pct", "kv_gathers_per_decode", "kv_replica_hit_pct",
              "preemptions", "note")


def runs_table(runs: list[RunResult], fmt: str = "markdown", columns: tuple[str, ...] | None = None) -> str:
    """One row per run, in the given order (see the module docstring for columns and formats);
    `columns` picks and orders columns by id (e.g. COMPACT_COLUMNS)."""
    for r in runs:
        missing = missing_summary_keys(r)
        if missing:
            raise ValueError(f"run {r.name!r}: summary lacks {missing} (see report.SUMMARY_KEYS)")
    cols = _RUN_COLS
    if columns is not None:
        by_id = {c.id: c for c in _RUN_COLS}
        unknown = [c for c in columns if c not in by_id]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; known: {', '.join(by_id)}")
        cols = [by_id[c] for c in columns]
    rows = [[c.get(r) if (r.status == "ok" or c not in _METRIC_COLS) else None for c in cols] for r in runs]
    return _render([c.id for c in cols], [c.header for c in cols], [c.numeric for c in cols], rows, fmt)


# -- seeds ---------------------------------------------------------------------------------------

def seed_groups(runs: list[RunResult]) -> list[list[RunResult]]:
    """Runs grouped by equal params apart from "seed", in order of first appearance."""
    groups: dict[str, list[RunResult]] = {}
    for r in runs:
        key = json.dumps({k: v for k, v in r.params.items() if k != "seed"}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def seeds_table(runs: list[RunResult], fmt: str = "markdown", level: float = 0.95) -> str:
    """Per group of seeds: mean ± half-width of the Student-t confidence interval of each metric.

    n counts the "ok" runs; a metric's interval uses its finite values only (NaN values skipped); with
    one value the half-width is missing. A group with a does_not_fit run is one row with its reason.
    """
    for r in runs:
        missing = missing_summary_keys(r)
        if missing:
            raise ValueError(f"run {r.name!r}: summary lacks {missing} (see report.SUMMARY_KEYS)")
    pct = f"{100 * level:g}"
    ids = [c.id for c in _ID_COLS] + ["n"]
    headers = [c.header for c in _ID_COLS] + ["seeds"]
    numeric = [c.numeric for c in _ID_COLS] + [True]
    for c in _METRIC_COLS:
        ids += [c.id, f"{c.id}_ci{pct}"]
        headers += [c.header, f"±{pct}%"]
        numeric += [True, True]
    ids.append("note")
    headers.append("note")
    numeric.append(False)

    rows = []
    for group in seed_groups(runs):
        first = group[0]
        row: list = [c.get(first) for c in _ID_COLS]
        ok = [r for r in group if r.status == "ok"]
        row.append(len(ok))
        bad = [r for r in group if r.status != "ok"]
        for c in _METRIC_COLS:
            values = [c.get(r) for r in ok]
            mean, half = mean_ci([v for v in values if v is not None], level)
            row += [mean, half] if not bad else [None, None]
        row.append(bad[0].reason if bad else "")
        rows.append(row)
    if fmt == "markdown":  # fold "±" columns into their metric's cell: "12.3 ± 0.4"
        return _render_markdown_pm(headers, numeric, rows)
    return _render(ids, headers, numeric, rows, fmt)


def mean_ci(values, level: float = 0.95) -> tuple[float | None, float | None]:
    """Mean and half-width of the two-sided Student-t interval of the finite values (None if absent)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return None, None
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None
    sem = float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, t_quantile(0.5 + level / 2, len(x) - 1) * sem


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def _num(v) -> str:
    """A number rounded for reading: integers as such, else ~3-4 significant digits, no exponent."""
    if _missing(v):
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v)}"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _pm(mean: float, half: float) -> str:
    """"mean ± half" with the half-width given to the decimals shown for the mean (>= 1 significant)."""
    m = _num(mean)
    decimals = len(m.split(".")[1]) if "." in m else 0
    h = f"{half:.{decimals}f}"
    if half > 0 and float(h) == 0.0:
        h = f"{half:.1g}"
    return f"{m} ± {h}"


def _cell(v, numeric: bool) -> str:
    if numeric:
        return _num(v)
    return "–" if v is None else str(v)


def _markdown(headers: list[str], numeric: list[bool], cells: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(items):
        return "| " + " | ".join(s.rjust(w) if n else s.ljust(w)
                                 for s, w, n in zip(items, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if n else (":" + "-" * (w + 1))
                          for w, n in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in cells)]) + "\n"


def _plain(v):
    """A JSON/CSV value: floats unrounded, NaN/inf as missing, numpy scalars as Python ones."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _render(ids, headers, numeric, rows, fmt: str) -> str:
    if fmt == "markdown":
        return _markdown(headers, numeric, [[_cell(v, n) for v, n in zip(r, numeric)] for r in rows])
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(headers)
        for r in rows:
            w.writerow(["" if _plain(v) is None else _plain(v) for v in r])
        return buf.getvalue()
    if fmt == "json":
        return json.dumps([{i: _plain(v) for i, v in zip(ids, r)} for r in rows], indent=2) + "\n"
    raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")


def _render_markdown_pm(headers, numeric, rows) -> str:
    """Markdown with each (metric, ±half-width) column pair shown as one "mean ± hw" cell."""
    n_id = len(_ID_COLS) + 1
    out_headers = headers[:n_id]
    out_numeric = numeric[:n_id]
    pairs = range(n_id, len(headers) - 1, 2)
    out_headers += [headers[i] for i in pairs] + ["note"]
    out_numeric += [True for _ in pairs] + [False]
    cells = []
    for r in rows:
        row = [_cell(v, n) for v, n in zip(r[:n_id], numeric[:n_id])]
        for i in pairs:
            mean, half = r[i], r[i + 1]
            row.append(_num(mean) if _missing(mean) or _missing(half) else _pm(mean, half))
        row.append(_cell(r[-1], False))
        cells.append(row)
    return _markdown(out_headers, out_numeric, cells)
