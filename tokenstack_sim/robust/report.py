"""Tables and plots of a robustness study (robust/sweep.py's `robustness.json`), for `tokenstack report`.

- `summary_table(rows)`: per (design, uncertainty type, scope, magnitude), the mean over seeds of the
  performance kept (throughput, SLO attainment, energy per token), the recovery time (and how many
  seeds recovered), KV tokens lost and reload time; markdown (or CSV).
- `heatmap(rows, path, metric)`: design (or policy) x uncertainty type (with scope), the mean of
  `metric` at each type's largest magnitude, one PNG.
- `recovery_plot(rows, path)`: recovery time against magnitude, one panel per uncertainty type, one line
  per design (seeds averaged over those that recovered; a hollow marker where none did).
- `rank_correlation(x, y)`: Spearman's rho (average ranks for ties), for "does nominal performance
  predict robustness" (scripts/reproduce_robustness.py).
Drawn with matplotlib's Agg canvas (pyplot never imported), written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

METRICS = ("throughput_kept", "slo_kept", "energy_kept")


def _nanmean(v) -> float:
    a = np.asarray([x for x in v if x is not None], np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else float("nan")


def type_label(row: dict) -> str:
    return row["type"] if row["scope"] == "all" else f"{row['type']} ({row['scope_key']})"


def groups(rows: list[dict], keys=("design", "type", "scope_key", "magnitude")) -> dict:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def metrics_of(rows: list[dict]) -> tuple[str, ...]:
    """METRICS, and `makespan_kept` where the rows are agent runs."""
    return METRICS + (("makespan_kept",) if any("makespan_kept" in r for r in rows) else ())


def summary_table(rows: list[dict], fmt: str = "markdown") -> str:
    ms = metrics_of(rows)
    head = ["design", "uncertainty", "scope", "magnitude", "seeds", *(m.replace("_", " ") for m in ms),
            "recovery s", "recovered", "KV tokens lost", "reload s"]
    lines = []
    for (design, typ, scope, mag), rs in sorted(groups(rows).items(), key=lambda kv: tuple(map(str, kv[0]))):
        rec = [r["recovery_s"] for r in rs if r.get("recovered")]
        lines.append([design, typ, scope, _fmt(float(mag), 2), str(len(rs)),
                      *(_fmt(_nanmean(r.get(m) for r in rs)) for m in ms),
                      _fmt(_nanmean(rec), 2), f"{len(rec)}/{len(rs)}",
                      _fmt(_nanmean(r.get("kv_tokens_lost", 0) for r in rs), 0),
                      _fmt(_nanmean(r.get("reload_s", 0) for r in rs), 4)])
    if fmt == "csv":
        return "\n".join(",".join(c.replace(",", ";") for c in x) for x in [head, *lines])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(x) + " |" for x in lines]
    return "\n".join(out)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    from tokenstack_sim.results.plots import _save as save  # atomic PNG write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save(fig, path)


def heatmap(rows: list[dict], path, metric: str = "slo_kept", *, by: str = "design") -> Path:
    """Design x uncertainty type (scope), mean `metric` at each type's largest magnitude."""
    if not rows:
        raise ValueError("no robustness rows to draw")
    cols = sorted({type_label(r) for r in rows})
    top = {}
    for r in rows:
        top[type_label(r)] = max(top.get(type_label(r), -math.inf), r["magnitude"])
    designs = sorted({r[by] for r in rows})
    grid = np.full((len(designs), len(cols)), np.nan)
    for i, d in enumerate(designs):
        for j, c in enumerate(cols):
            v = [r.get(metric) for r in rows if r[by] == d and type_label(r) == c and r["magnitude"] == top[c]]
            grid[i, j] = _nanmean(v)
    fig = _figure(width=max(6.0, 1.1 * len(cols) + 3), height=max(3.0, 0.45 * len(designs) + 2))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, cmap="RdYlGn", vmin=min(0.5, np.nanmin(grid) if np.isfinite(grid).any() else 0.5),
                   vmax=max(1.0, np.nanmax(grid) if np.isfinite(grid).any() else 1.0), aspect="auto")
    ax.set_xticks(range(len(cols)), [f"{c}\nm={top[c]:g}" for c in cols], rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(designs)), designs, fontsize=7)
    for i in range(len(designs)):
        for j in range(len(cols)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label=f"{metric.replace('_', ' ')} (perturbed / nominal)")
    ax.set_title(f"{metric.replace('_', ' ')} at the largest magnitude, mean over seeds")
    return _save(fig, path)


def recovery_plot(rows: list[dict], path) -> Path:
    """Recovery time against magnitude per uncertainty type, a line per design."""
    rows = [r for r in rows if math.isfinite(r.get("disruption_end_s", math.nan))]
    if not rows:
        raise ValueError("no perturbation with an end to recover from")
    types = sorted({type_label(r) for r in rows})
    n = len(types)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(width=4.2 * ncols, height=3.2 * nrows)
    designs = sorted({r["design"] for r in rows})
    for k, t in enumerate(types):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for d in designs:
            sel = [r for r in rows if r["design"] == d and type_label(r) == t]
            mags = sorted({r["magnitude"] for r in sel})
            ys, hollow = [], []
            for m in mags:
                rec = [r["recovery_s"] for r in sel if r["magnitude"] == m and r.get("recovered")]
                ys.append(_nanmean(rec) if rec else np.nan)
                hollow.append(not rec)
            line = ax.plot(mags, ys, marker="o", label=d)[0]
            never = [m for m, h in zip(mags, hollow) if h]
            if never:
                top = np.nanmax(ys) if np.isfinite(ys).any() else 1.0
                ax.plot(never, [top * 1.1 + 0.1] * len(never), ls="", marker="o", mfc="none", color=line.get_color())
        ax.set_title(t, fontsize=8)
        ax.set_xlabel("magnitude")
        ax.set_ylabel("recovery time, s")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=6)
    fig.suptitle("Time back within tolerance of nominal after the disruption ends (hollow: not recovered)",
                 fontsize=9)
    return _save(fig, path)


def rank_correlation(x, y) -> float:
    """Spearman's rho of paired values (NaN pairs dropped; NaN with fewer than 3 pairs or a constant side)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3:
        return float("nan")

    def ranks(a):
        order = np.argsort(a, kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        for v in np.unique(a):  # ties: average rank
            sel = a == v
            r[sel] = r[sel].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def write_report(doc: dict, out_dir, fmt: str = "markdown") -> tuple[str, list[Path]]:
    """The summary table and every plot of `robustness.json`'s rows under `out_dir`."""
    rows = doc["rows"]
    images = []
    if rows:
        for metric in metrics_of(rows):
            images.append(heatmap(rows, Path(out_dir) / f"robustness_heatmap_{metric}.png", metric))
        try:
            images.append(recovery_plot(rows, Path(out_dir) / "robustness_recovery.png"))
        except ValueError:
            pass
    return summary_table(rows, fmt), images
