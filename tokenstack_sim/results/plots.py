"""PNG plots of runs: throughput vs QPS, latency CDFs, energy per output token, KV blocks over time.

Each function takes a list of `RunResult`s and a path, draws with matplotlib's Agg canvas (pyplot is
never imported, so nothing opens a window or keeps global figures), writes the PNG atomically and
returns the path. Only "ok" runs are drawn; does_not_fit runs are skipped (the tables list them), and a
call with no ok run raises ValueError.

- `throughput_vs_qps`: one line per (system, model[, workload]) over the offered QPS; several seeds at
  one QPS give their mean and a 95% Student-t error bar (`report.mean_ci`).
- `latency_cdfs`: empirical CDFs of TTFT and TPOT (ms, log x) per run over the requests the summary
  uses (warm-up and drain excluded by the run's `warmup_frac` / `drain_frac` params).
- `energy_breakdown`: one stacked bar per run, mJ per output token by component and action (from
  `energy_pj`, whole run, divided by `summary["output_tokens"]`); the smallest segments beyond
  `max_segments` are merged into "other".
- `kv_blocks_over_time`: KV blocks in use at each step's start, per run.
- `kv_tiers_over_time`: blocks per tier, PIM-served share of attention and migrations per second over
  time (KV management, kv/tiered.py).
Leaves out: per-request scatter, per-step time split (see `timeline.py`), interactive output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.results.report import mean_ci
from tokenstack_sim.results.result import RunResult
from tokenstack_sim.runtime.metrics import DEFAULT_DRAIN_FRAC, DEFAULT_WARMUP_FRAC, included

_CMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys", "YlOrBr", "BuGn")


def _figure(ncols: int = 1, width: float = 7.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_write(path, mode="wb", suffix=".png.tmp") as handle:
        fig.savefig(handle, format="png", dpi=120)
    return path


def _ok(runs: list[RunResult]) -> list[RunResult]:
    ok = [r for r in runs if r.status == "ok"]
    if not ok:
        raise ValueError("no run with status 'ok' to plot")
    return ok


def offered_qps(run: RunResult) -> float:
    """The rate the run was asked for, or (a run at the workload's own rate) the measured one: requests
    over the span of their arrivals."""
    if run.params.get("qps") is not None:
        return float(run.params["qps"])
    a = run.requests["arrival_s"]
    span = float(a.max() - a.min()) if len(a) > 1 else 0.0
    return len(a) / span if span > 0 else float("nan")


def throughput_vs_qps(runs: list[RunResult], path: str | Path, *, metric: str = "output_tokens_per_s") -> Path:
    """Throughput (``metric``: output_tokens_per_s or total_tokens_per_s) against offered QPS."""
    if metric not in ("output_tokens_per_s", "total_tokens_per_s"):
        raise ValueError(f"metric must be output_tokens_per_s or total_tokens_per_s, got {metric!r}")
    ok = _ok(runs)
    several_workloads = len({r.params.get("workload") for r in ok}) > 1
    lines: dict[str, dict[float, list[float]]] = {}
    for r in ok:
        label = f"{r.params.get('system')} / {r.params.get('model')}"
        if several_workloads:
            label += f" / {r.params.get('workload')}"
        lines.setdefault(label, {}).setdefault(offered_qps(r), []).append(float(r.summary[metric]))
    fig, (ax,) = _figure()
    for label, points in lines.items():
        qps = sorted(points)
        stats = [mean_ci(points[q]) for q in qps]
        mean = [m for m, _ in stats]
        err = [h if h is not None else 0.0 for _, h in stats]
        ax.errorbar(qps, mean, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel(("output" if metric.startswith("output") else "total") + " throughput (tokens/s)")
    ax.grid(True, alpha=0.3)
    seeds = any(len(v) > 1 for points in lines.values() for v in points.values())
    ax.legend(fontsize="small", title="mean ± 95% CI over seeds" if seeds else None, title_fontsize="small")
    return _save(fig, path)


def _latencies_ms(run: RunResult) -> tuple[np.ndarray, np.ndarray]:
    rows = included(run.requests, run.params.get("warmup_frac", DEFAULT_WARMUP_FRAC),
                    run.params.get("drain_frac", DEFAULT_DRAIN_FRAC))
    ttft = rows["first_token_s"] - rows["arrival_s"]
    multi = rows["output_tokens"] >= 2
    tpot = (rows["finish_s"][multi] - rows["first_token_s"][multi]) / (rows["output_tokens"][multi] - 1)
    return ttft[np.isfinite(ttft)] * 1e3, tpot[np.isfinite(tpot)] * 1e3


def latency_cdfs(runs: list[RunResult], path: str | Path) -> Path:
    """Empirical CDFs of TTFT and TPOT, one line per run."""
    ok = _ok(runs)
    fig, (ax_ttft, ax_tpot) = _figure(ncols=2, width=11.0)
    for r in ok:
        for ax, values in zip((ax_ttft, ax_tpot), _latencies_ms(r)):
            values = np.sort(values)
            if len(values):
                ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=r.name)
    for ax, name in ((ax_ttft, "TTFT"), (ax_tpot, "TPOT")):
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        if ax.lines and all(min(line.get_xdata()) > 0 for line in ax.lines):
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3, which="both")
    ax_tpot.legend(fontsize="x-small")
    return _save(fig, path)


def energy_per_token_mj(run: RunResult) -> dict[tuple[str, str], float]:
    """(component, action) -> mJ per output token over the whole run."""
    tokens = run.summary.get("output_tokens")
    if tokens is None:
        tokens = int(run.requests["output_tokens"].sum())
    if not tokens:
        return {}
    return {(c, a): float(pj) * 1e-9 / tokens for c, acts in run.energy_pj.items() for a, pj in acts.items()}


def energy_breakdown(runs: list[RunResult], path: str | Path, *, max_segments: int = 16) -> Path:
    """Stacked bars of energy per output token by component and action, one bar per run."""
    ok = _ok(runs)
    per_run = [energy_per_token_mj(r) for r in ok]
    keys = list(dict.fromkeys(k for d in per_run for k in d))  # first-seen order, grouped by component
    weight = {k: max(d.get(k, 0.0) / (sum(d.values()) or 1.0) for d in per_run) for k in keys}
    kept = set(sorted(keys, key=lambda k: -weight[k])[:max_segments])
    components = list(dict.fromkeys(c for c, _ in keys))

    from matplotlib import colormaps

    fig, (ax,) = _figure(width=max(7.0, 1.0 + 0.9 * len(ok)))
    x = np.arange(len(ok))
    bottom = np.zeros(len(ok))
    for ci, comp in enumerate(components):
        actions = [k for k in keys if k[0] == comp and k in kept]
        cmap = colormaps[_CMAPS[ci % len(_CMAPS)]]
        for ai, key in enumerate(actions):
            h = np.array([d.get(key, 0.0) for d in per_run])
            ax.bar(x, h, bottom=bottom, color=cmap(0.35 + 0.55 * (ai + 1) / (len(actions) + 1)),
                   edgecolor="white", linewidth=0.5, label=f"{comp}: {key[1]}")
            bottom += h
    rest = np.array([sum(v for k, v in d.items() if k not in kept) for d in per_run])
    if rest.any():
        ax.bar(x, rest, bottom=bottom, color="lightgrey", edgecolor="white", linewidth=0.5, label="other")
    ax.set_xticks(x, [r.name for r in ok], rotation=30, ha="right", fontsize="x-small")
    ax.set_ylabel("energy per output token (mJ)")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def kv_blocks_over_time(runs: list[RunResult], path: str | Path) -> Path:
    """KV blocks in use against simulated time, one line per run."""
    ok = _ok(runs)
    fig, (ax,) = _figure()
    for r in ok:
        if len(r.steps):
            ax.step(r.steps["start_s"], r.steps["kv_blocks_in_use"], where="post", label=r.name)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("KV blocks in use")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    return _save(fig, path)


def _binned(t_s: np.ndarray, values: np.ndarray, weights: np.ndarray | None, bin_s: float):
    """Per bin of `bin_s` simulated seconds: sum(values) / sum(weights) (a ratio), or sum(values) / bin_s
    (a rate) without weights. Returns bin centres and values (NaN where a ratio has no weight)."""
    if len(t_s) == 0:
        return np.zeros(0), np.zeros(0)
    idx = ((t_s - t_s[0]) // bin_s).astype(np.int64)
    n = int(idx.max()) + 1
    num = np.bincount(idx, values, minlength=n)
    centres = t_s[0] + (np.arange(n) + 0.5) * bin_s
    if weights is None:
        return centres, num / bin_s
    den = np.bincount(idx, weights, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return centres, np.where(den > 0, num / den, np.nan)


def kv_tiers_over_time(runs: list[RunResult], path: str | Path, *, bin_s: float | None = None) -> Path:
    """KV management over simulated time, per run (kv/tiered.py): blocks in the PIM units and in the
    capacity tier (one GPU shard; cached prefix blocks included), the share of attended KV tokens served
    by PIM units, and blocks migrated (demoted + promoted) per second. Ratios and rates are over bins of
    `bin_s` (default: 1/100 of the longest run, at least 1 ms). Runs without KV fields (written before
    schema 2) are left out of the panels."""
    ok = [r for r in _ok(runs) if "kv_pim_blocks" in (r.steps.dtype.names or ()) and len(r.steps)]
    if not ok:
        raise ValueError("no run with KV placement fields (results schema >= 2) to plot")
    span = max(float(r.steps["end_s"][-1] - r.steps["start_s"][0]) for r in ok)
    bin_s = bin_s or max(span / 100.0, 1e-3)
    fig, (a1, a2, a3) = _figure(ncols=3, width=15.0, height=4.2)
    for r in ok:
        st = r.steps
        t = st["start_s"]
        line, = a1.step(t, st["kv_pim_blocks"], where="post", label=f"{r.name} PIM")
        a1.step(t, st["kv_capacity_blocks"], where="post", ls="--", color=line.get_color(), label=f"{r.name} capacity")
        x, share = _binned(t, st["kv_tokens_attended_pim"], st["kv_tokens_attended"], bin_s)
        a2.plot(x, 100.0 * share, color=line.get_color(), label=r.name)
        x, rate = _binned(t, st["kv_demoted_blocks"] + st["kv_promoted_blocks"], None, bin_s)
        a3.plot(x, rate, color=line.get_color(), label=r.name)
    a1.set_ylabel("blocks held (one GPU shard)")
    a2.set_ylabel("attention served by PIM (%)")
    a3.set_ylabel(f"blocks migrated per s ({bin_s * 1e3:.3g} ms bins)")
    for a in (a1, a2, a3):
        a.set_xlabel("simulated time (s)")
        a.grid(True, alpha=0.3)
    a1.legend(fontsize="x-small")
    return _save(fig, path)
