"""Views of a design-space sweep: a points table, plots and one self-contained HTML page.

Input: the point records of a sweep index (sweep/index.py), as plain data — each a dict with "id",
"status", "params" ({system, model, workload, seed, qps, run{}, engine{}, scheduler{}, kv{}, params{}}),
"summary" (the run's summary, sim/engine.py) and optionally "error" / "reason" / "wall_s". Only "ok"
points are plotted; the tables list every point.

Series. Points that differ only in QPS and seed make one series: seeds are averaged (mean of each
metric over the seeds at one QPS) and QPS is the curve's parameter. A series is labelled by its system
and by whatever else varies across the sweep (model, workload, each swept design value), e.g.
"tokenstack-hbm4 · memory_utilization=0.8".

Plots (each function draws with matplotlib's Agg canvas through `results/plots.py`'s helpers, writes
the PNG atomically and returns the `Figure`; data artists carry gid "series", read back by
`series_labels(fig)`):
- `throughput_latency`: output tok/s (x) against TPOT p50 and p99 (y, ms; two panels), one line per
  series through its QPS values (each marker annotated with its QPS).
- `slo_attainment`: share of requests meeting the SLO (%) against QPS, one line per series, the
  target (`TARGET_SLO_ATTAINMENT`, 90% as `tokenstack capacity`) dashed.
- `slo_capacity`: per series the highest rate meeting the target (`slo_capacity_qps`: linear
  interpolation between the last swept QPS that meets it and the first that does not; "below" the
  lowest swept QPS or "at least" the highest when the sweep does not bracket it); one bar per series.
- `energy_per_token`: mJ per output token stacked by component class (GPU, stacks, PIM, links: the
  summary's energy_j_<class> / output_tokens, whole run), one bar per (series, QPS); over
  `MAX_ENERGY_BARS` bars, only each series' highest QPS.
- `pareto`: output tok/s against mJ per output token, one marker set per system over every
  (series, QPS), and the Pareto front (no other point has both more throughput and less energy).
- `sensitivity`: for one swept parameter, output tok/s, TPOT p99 and mJ per token against its values,
  one line per system: the main effect, i.e. each value's mean over every other swept value and seed.
`write_report(records, out_dir)` draws them all (one sensitivity plot per swept design dimension,
QPS included) and writes `report.html`: the images embedded as base64 PNG, the SLO-capacity table and
the points table as HTML tables, nothing fetched from elsewhere.

Leaves out: confidence intervals over seeds in the plots (`tokenstack report FILE` has seed tables),
interaction effects between parameters, interactive plots.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.results.plots import _figure, _save
from tokenstack_sim.results.report import _render

TARGET_SLO_ATTAINMENT = 0.9
MAX_ENERGY_BARS = 40
DESIGN_SECTIONS = ("engine", "scheduler", "kv", "params")
ENERGY_CLASSES = (("gpu", "GPU"), ("stacks", "stacks"), ("pim", "PIM"), ("links", "links"))
SEP = " · "


# -- records as data -----------------------------------------------------------------------------

def flat_params(params: dict) -> dict:
    """system, model, workload, seed, qps, and `<section>.<key>` for run / engine / scheduler / kv / params."""
    out = {k: params.get(k) for k in ("system", "model", "workload", "seed", "qps")}
    for section in ("run", *DESIGN_SECTIONS):
        for k, v in (params.get(section) or {}).items():
            out[f"{section}.{k}"] = v
    return out


def _key(v) -> str:
    return json.dumps(v, sort_keys=True)


def swept_keys(records: list[dict]) -> list[str]:
    """Flat parameter names with more than one value across the records (seed left out), first-seen order."""
    values: dict[str, set] = {}
    for r in records:
        for k, v in flat_params(r["params"]).items():
            values.setdefault(k, set()).add(_key(v))
    return [k for k, vs in values.items() if len(vs) > 1 and k != "seed"]


def short(key: str) -> str:
    """`params.gpu_stack.layout.pim_dies` -> `gpu_stack.layout.pim_dies`; `engine.overlap` -> `overlap`."""
    head, _, rest = key.partition(".")
    return rest if head in (*DESIGN_SECTIONS, "run") and rest else key


def display_name(value) -> str:
    """A preset or built-in name as it is; a file path by its stem (`../traces/conv.csv` -> `conv`)."""
    text = str(value)
    return Path(text).stem if ("/" in text or text.endswith((".toml", ".csv", ".jsonl", ".npz"))) else text


def series_label(record: dict, swept: list[str]) -> str:
    f = flat_params(record["params"])
    parts = [display_name(f["system"])]
    for k in swept:
        if k in ("system", "qps", "seed"):
            continue
        v = f.get(k)
        parts.append(display_name(v) if k in ("model", "workload") else f"{short(k)}={v}")
    return SEP.join(parts)


def _ok(records: list[dict]) -> list[dict]:
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise ValueError("no point with status 'ok' to plot")
    return ok


def _finite_mean(values) -> float:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else math.nan


def metric(record: dict, name: str) -> float:
    """A summary metric in display units: tok/s, ms (tpot_ms_*, ttft_ms_*), % (slo_pct), mJ/token."""
    s = record.get("summary") or {}
    tokens = s.get("output_tokens")
    if name.startswith(("tpot_ms_", "ttft_ms_")):
        v = s.get(name.replace("_ms_", "_s_"))
        return math.nan if v is None else float(v) * 1e3
    if name == "slo_pct":
        v = s.get("slo_attainment")
        return math.nan if v is None else float(v) * 100.0
    if name == "mj_per_token":
        v = s.get("energy_per_output_token_j")
        return math.nan if v is None else float(v) * 1e3
    if name.startswith("mj_per_token_"):
        e = s.get(f"energy_j_{name.removeprefix('mj_per_token_')}")
        return float(e) / float(tokens) * 1e3 if e is not None and tokens else math.nan
    v = s.get(name)
    return math.nan if v is None else float(v)


def curves(records: list[dict]) -> dict[str, dict[float, list[dict]]]:
    """series label -> qps -> the ok records (one per seed), series in first-seen order."""
    ok = _ok(records)
    swept = swept_keys(ok)
    out: dict[str, dict[float, list[dict]]] = {}
    for r in ok:
        out.setdefault(series_label(r, swept), {}).setdefault(float(r["params"]["qps"]), []).append(r)
    return out


def _seed_mean(recs: list[dict], name: str) -> float:
    return _finite_mean(metric(r, name) for r in recs)


# -- plots ----------------------------------------------------------------------------------------

def series_labels(fig) -> list[list[str]]:
    """Per axes of `fig`, the labels of its data series (artists with gid "series")."""
    out = []
    for ax in fig.axes:
        labels = [a.get_label() for a in (*ax.lines, *ax.collections) if a.get_gid() == "series"]
        labels += [c.get_label() for c in ax.containers
                   if len(c.patches) and c.patches[0].get_gid() == "series"]
        out.append(labels)
    return out


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def throughput_latency(records: list[dict], path: str | Path):
    """Output tok/s against TPOT p50 and p99, one line per series over its QPS values."""
    cs = curves(records)
    fig, axes = _figure(ncols=2, width=12.0)
    for ax, stat in zip(axes, ("p50", "p99")):
        for label, by_qps in cs.items():
            qps = sorted(by_qps)
            x = [_seed_mean(by_qps[q], "output_tokens_per_s") for q in qps]
            y = [_seed_mean(by_qps[q], f"tpot_ms_{stat}") for q in qps]
            (line,) = ax.plot(x, y, marker="o", label=label)
            line.set_gid("series")
            for xi, yi, q in zip(x, y, qps):
                if math.isfinite(xi) and math.isfinite(yi):
                    ax.annotate(f"{q:g}", (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6)
        ax.set_xlabel("output throughput (tokens/s)")
        ax.set_ylabel(f"TPOT {stat} (ms)")
        ax.set_title(f"throughput vs TPOT {stat} (labels: QPS)", fontsize="small")
        ax.grid(True, alpha=0.3)
    _legend(axes[1], len(cs))
    _save(fig, path)
    return fig


def slo_attainment(records: list[dict], path: str | Path, *, target: float = TARGET_SLO_ATTAINMENT):
    """SLO attainment (%) against QPS, one line per series."""
    cs = curves(records)
    fig, (ax,) = _figure(width=9.0)
    for label, by_qps in cs.items():
        qps = sorted(by_qps)
        (line,) = ax.plot(qps, [_seed_mean(by_qps[q], "slo_pct") for q in qps], marker="o", label=label)
        line.set_gid("series")
    ax.axhline(100 * target, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("requests meeting the SLO (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    _legend(ax, len(cs))
    _save(fig, path)
    return fig


def slo_capacity_qps(qps: list[float], attainment: list[float], target: float = TARGET_SLO_ATTAINMENT):
    """(rate, kind): kind "interpolated", "at_least" (the highest swept QPS meets the target), "below"
    (the lowest does not: rate = that QPS) or "none" (no finite attainment)."""
    pts = [(q, a) for q, a in sorted(zip(qps, attainment)) if math.isfinite(a)]
    if not pts:
        return math.nan, "none"
    if pts[0][1] < target:
        return pts[0][0], "below"
    for (q0, a0), (q1, a1) in zip(pts, pts[1:]):
        if a1 < target:
            return q0 + (q1 - q0) * (a0 - target) / (a0 - a1), "interpolated"
    return pts[-1][0], "at_least"


def capacities(records: list[dict], target: float = TARGET_SLO_ATTAINMENT) -> dict[str, tuple[float, str]]:
    out = {}
    for label, by_qps in curves(records).items():
        qps = sorted(by_qps)
        out[label] = slo_capacity_qps(qps, [_seed_mean(by_qps[q], "slo_pct") / 100 for q in qps], target)
    return out


_CAPACITY_NOTE = {"interpolated": "", "at_least": "≥ (highest QPS swept)", "below": "< (lowest QPS swept)",
                  "none": "no data"}


def slo_capacity(records: list[dict], path: str | Path, *, target: float = TARGET_SLO_ATTAINMENT):
    """One bar per series: the highest rate meeting the SLO target (hatched when not bracketed)."""
    caps = capacities(records, target)
    fig, (ax,) = _figure(width=max(7.0, 1.5 + 0.8 * len(caps)))
    x = np.arange(len(caps))
    for i, (label, (rate, kind)) in enumerate(caps.items()):
        bars = ax.bar([x[i]], [rate if math.isfinite(rate) else 0.0], label=label,
                      hatch="//" if kind in ("at_least", "below") else None, edgecolor="black", linewidth=0.5)
        for p in bars.patches:
            p.set_gid("series")
        if _CAPACITY_NOTE[kind]:
            ax.annotate(_CAPACITY_NOTE[kind].split(" ")[0], (x[i], rate if math.isfinite(rate) else 0.0),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, list(caps), rotation=30, ha="right", fontsize="x-small")
    ax.set_ylabel(f"SLO capacity (requests/s at {100 * target:g}% attainment)")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)
    return fig


def energy_per_token(records: list[dict], path: str | Path):
    """mJ per output token stacked by component class, one bar per (series, QPS)."""
    cs = curves(records)
    groups = [(label, q, recs) for label, by_qps in cs.items() for q, recs in sorted(by_qps.items())]
    title = "energy per output token by component (whole run)"
    if len(groups) > MAX_ENERGY_BARS:
        groups = [(label, max(by_qps), by_qps[max(by_qps)]) for label, by_qps in cs.items()]
        title += "; each series at its highest QPS"
    fig, (ax,) = _figure(width=max(7.0, 2.5 + 0.45 * len(groups)))
    x = np.arange(len(groups))
    bottom = np.zeros(len(groups))
    for cls, name in ENERGY_CLASSES:
        h = np.nan_to_num(np.array([_seed_mean(recs, f"mj_per_token_{cls}") for _, _, recs in groups]))
        bars = ax.bar(x, h, bottom=bottom, label=name, edgecolor="white", linewidth=0.5)
        for p in bars.patches:
            p.set_gid("series")
        bottom += h
    ax.set_xticks(x, [f"{label} @ {q:g}" for label, q, _ in groups], rotation=35, ha="right", fontsize="x-small")
    ax.set_ylabel("energy per output token (mJ)")
    ax.set_title(title, fontsize="small")
    _legend(ax, 1)
    _save(fig, path)
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (energy, throughput) points no other point beats on both (less energy and more throughput),
    by increasing energy."""
    front, best = [], -math.inf
    for e, t in sorted(p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])):
        if t > best:
            front.append((e, t))
            best = t
    return front


def pareto(records: list[dict], path: str | Path):
    """Output tok/s against mJ per output token, markers per system, and the Pareto front."""
    cs = curves(records)
    by_system: dict[str, list[tuple[float, float]]] = {}
    for label, by_qps in cs.items():
        system = label.split(SEP)[0]  # series labels start with the system
        for recs in by_qps.values():
            by_system.setdefault(system, []).append((_seed_mean(recs, "mj_per_token"),
                                                     _seed_mean(recs, "output_tokens_per_s")))
    fig, (ax,) = _figure(width=9.0)
    for system, pts in by_system.items():
        sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=system, s=22)
        sc.set_gid("series")
    front = pareto_front([p for pts in by_system.values() for p in pts])
    if front:
        (line,) = ax.plot([p[0] for p in front], [p[1] for p in front], color="black", linewidth=1,
                          drawstyle="steps-post", label="Pareto front")
        line.set_gid("front")
    ax.set_xlabel("energy per output token (mJ)")
    ax.set_ylabel("output throughput (tokens/s)")
    ax.grid(True, alpha=0.3)
    _legend(ax, len(by_system))
    _save(fig, path)
    return fig


SENSITIVITY_METRICS = (("output_tokens_per_s", "output throughput (tokens/s)"), ("tpot_ms_p99", "TPOT p99 (ms)"),
                       ("mj_per_token", "energy per output token (mJ)"))


def _order(values: list) -> list:
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(values)
    return sorted(values, key=_key)


def sensitivity(records: list[dict], key: str, path: str | Path):
    """Main effect of the flat parameter `key` on three metrics, one line per system."""
    ok = _ok(records)
    values = _order(list({_key(flat_params(r["params"]).get(key)): flat_params(r["params"]).get(key)
                          for r in ok}.values()))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(values)))
    systems = list(dict.fromkeys(r["params"]["system"] for r in ok))  # as written; labels by display_name
    fig, axes = _figure(ncols=3, width=15.0, height=4.2)
    for ax, (name, ylabel) in zip(axes, SENSITIVITY_METRICS):
        for system in systems:
            ys = [_finite_mean(metric(r, name) for r in ok if r["params"]["system"] == system
                               and _key(flat_params(r["params"]).get(key)) == _key(v)) for v in values]
            (line,) = ax.plot(xs, ys, marker="o", label=display_name(system))
            line.set_gid("series")
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in values], rotation=20, fontsize="small")
        ax.set_xlabel(short(key))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    axes[0].set_title("mean over every other swept value and seed", fontsize="small", loc="left")
    _legend(axes[-1], len(systems))
    _save(fig, path)
    return fig


# -- tables ---------------------------------------------------------------------------------------

_METRIC_COLUMNS = (("output_tok_per_s", "output (tok/s)", "output_tokens_per_s"),
                   ("ttft_ms_p99", "TTFT p99 (ms)", "ttft_ms_p99"),
                   ("tpot_ms_p50", "TPOT p50 (ms)", "tpot_ms_p50"),
                   ("tpot_ms_p99", "TPOT p99 (ms)", "tpot_ms_p99"),
                   ("slo_pct", "SLO met (%)", "slo_pct"),
                   ("energy_mj_per_tok", "energy/out tok (mJ)", "mj_per_token"))


def _point_rows(records: list[dict]):
    swept = [k for k in swept_keys(records) if k not in ("system", "model", "workload", "qps")]
    ids = ["id", "system", "model", "workload", "qps", "seed", *swept, "status",
           *[c[0] for c in _METRIC_COLUMNS], "wall_s", "note"]
    headers = ["point", "system", "model", "workload", "QPS (req/s)", "seed", *[short(k) for k in swept], "status",
               *[c[1] for c in _METRIC_COLUMNS], "wall (s)", "note"]
    numeric = [False, False, False, False, True, True]
    rows = []
    for r in records:
        f = flat_params(r["params"])
        row = [r["id"], display_name(f["system"]), display_name(f["model"]), display_name(f["workload"]), f["qps"],
               f["seed"]]
        row += [f.get(k) if not isinstance(f.get(k), (list, dict)) else json.dumps(f.get(k)) for k in swept]
        row.append(r["status"])
        row += [metric(r, c[2]) if r["status"] == "ok" else None for c in _METRIC_COLUMNS]
        row += [r.get("wall_s"), r.get("error") or r.get("reason") or ""]
        rows.append(row)
    for k in swept:
        vals = [flat_params(r["params"]).get(k) for r in records]
        numeric.append(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals))
    numeric += [False, *[True] * len(_METRIC_COLUMNS), True, False]
    return ids, headers, numeric, rows


def points_table(records: list[dict], fmt: str = "markdown") -> str:
    """One row per point: who, the swept values, status and headline metrics (markdown, csv or json)."""
    ids, headers, numeric, rows = _point_rows(records)
    return _render(ids, headers, numeric, rows, fmt)


def _html_table(headers: list[str], rows: list[list], numeric: list[bool]) -> str:
    from tokenstack_sim.results.report import _cell

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="{"num" if n else "txt"}">{html.escape(_cell(v, n))}</td>'
                        for v, n in zip(row, numeric))
        body.append(f"<tr>{cells}</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


# -- the whole report -----------------------------------------------------------------------------

@dataclass
class SweepReport:
    html: Path
    images: list[Path] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # image file stem -> Figure


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:12px;margin:1em 0}
th,td{border:1px solid #ccc;padding:2px 6px}td.num{text-align:right}th{background:#f0f0f0}
figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:13px;color:#444}"""


def write_report(records: list[dict], out_dir: str | Path, *, title: str = "sweep", dims: list | None = None,
                 target: float = TARGET_SLO_ATTAINMENT) -> SweepReport:
    """Every plot of the module docstring as PNG under `out_dir`, and `out_dir/report.html` gathering
    them (images inline) with the SLO-capacity and points tables."""
    out_dir = Path(out_dir)
    rep = SweepReport(out_dir / "report.html")
    captions = []
    ok = [r for r in records if r.get("status") == "ok"]
    if ok:
        plots = [("throughput_latency", lambda p: throughput_latency(records, p),
                  "Output throughput against TPOT p50 and p99; each line is one series through its QPS values."),
                 ("slo_attainment", lambda p: slo_attainment(records, p, target=target),
                  f"Share of requests meeting the SLO against QPS; dashed: the {100 * target:g}% target."),
                 ("slo_capacity", lambda p: slo_capacity(records, p, target=target),
                  f"Highest rate at which {100 * target:g}% of requests meet the SLO, interpolated between swept "
                  "QPS values (hatched: not bracketed by the sweep)."),
                 ("energy_per_token", lambda p: energy_per_token(records, p),
                  "Energy per output token by component class, whole run."),
                 ("pareto", lambda p: pareto(records, p),
                  "Throughput against energy per output token for every (series, QPS); line: the Pareto front.")]
        design_keys = [k for k in swept_keys(ok) if k == "qps" or k.split(".")[0] in DESIGN_SECTIONS]
        for k in design_keys:
            stem = "sensitivity_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in k)
            plots.append((stem, lambda p, k=k: sensitivity(records, k, p),
                          f"Sensitivity to {short(k)}: main effect (mean over every other swept value and seed)."))
        for stem, draw, caption in plots:
            path = out_dir / f"{stem}.png"
            rep.figures[stem] = draw(path)
            rep.images.append(path)
            captions.append((path, caption))

    counts: dict[str, int] = {}
    for r in records:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    parts = [f"<h1>{html.escape(title)}</h1>",
             "<p>" + html.escape(f"{len(records)} points: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
             + "</p>"]
    if dims:
        drows = [[d["name"], json.dumps(d["values"]) if "values" in d else json.dumps(d["range"])] for d in dims]
        parts += ["<h2>Dimensions</h2>", _html_table(["dimension", "values / range"], drows, [False, False])]
    if ok:
        caps = capacities(records, target)
        crows = [[label, rate, _CAPACITY_NOTE[kind]] for label, (rate, kind) in caps.items()]
        parts += [f"<h2>SLO capacity ({100 * target:g}% of requests within the SLO)</h2>",
                  _html_table(["series", "capacity (req/s)", "note"], crows, [False, True, False]),
                  "<h2>Figures</h2>"]
        for path, caption in captions:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    else:
        parts.append("<p>No point has finished with status ok: nothing to plot.</p>")
    _, headers, numeric, rows = _point_rows(records)
    parts += ["<h2>Points</h2>", _html_table(headers, rows, numeric)]
    doc = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
           + "\n".join(parts) + "\n</body>\n</html>\n")
    with atomic_write(rep.html, "w", suffix=".html.tmp", encoding="utf-8") as fh:
        fh.write(doc)
    return rep
