"""results/tokenstack_reproduction.md from a gathered plan (repro/tokenstack_run.py).

Ratios are TokenStack over AttAcc at its best split, paired by seed (same request table), geometric
means over the cells, then the mean and 95% Student-t interval over seeds (repro/stats.py):
- throughput: output tokens/s per cell (model, workload, rate);
- SLO capacity: the highest rate at which >= 90% of requests meet TTFT <= 2 s and TPOT <= 100 ms, one
  search per seed, per (model, workload) (sim/capacity.py's rule and bracket);
- energy per output token: all components, static power included, per cell.
Each gap is explained from the measurements themselves (which cells are load-bound, which SLO term fails
first at the capacity, which energy component differs most); nothing is fitted to a published number.
"""

from __future__ import annotations

import math

from tokenstack_sim.repro import stats
from tokenstack_sim.repro import tokenstack_plan as tp
from tokenstack_sim.repro.tokenstack_run import attacc_label

COMPONENTS = {  # energy components (sim/engine.py energy_pj) and what they hold
    "gpu": "GPU FLOPs and L2 traffic plus the GPUs' static power over the run",
    "gpu_stacks": "the GPU's own stacks: weights and GPU-read KV streamed, plus their background and refresh power",
    "pim": "the PIM units' array reads and MACs, and AttAcc's PIM stacks' background power",
    "gpu_link": "the tensor-parallel all-reduces over NVLink and the links' static power",
    "pim_link": "AttAcc's GPU-to-PIM-device link",
}


def _mean(xs) -> float:
    v = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return sum(v) / len(v) if v else float("nan")


def _f(x, spec=".2f", suffix="") -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:{spec}}{suffix}"


def _ratio_text(r: stats.RatioSummary, pct: bool = False) -> str:
    if not math.isfinite(r.mean):
        return "–"
    body = f"{r.mean:.2f}x"
    if r.ci95 is not None:
        body += f" [{r.low:.2f}, {r.high:.2f}]"
    if pct:
        body += f" ({100 * (r.mean - 1):+.0f}%)"
    return body


def _summary(g, system, m, w, x, s):
    r = g.runs.get((system, m, w, x, s))
    return r["summary"] if r is not None and r["status"] == "ok" else None


def cell_ratios(g, metric: str, other: str | None = None) -> dict:
    """(model, workload, multiple) -> {seed: TokenStack metric / other's}; other = AttAcc's best split."""
    p = g.plan
    out = {}
    for m in p.models:
        for w in p.workloads:
            rival = other or (attacc_label(g.splits[(m, w)]) if g.splits.get((m, w)) is not None else None)
            if rival is None:
                continue
            for x in p.multiples:
                per = {}
                for s in range(p.seeds):
                    a, b = _summary(g, tp.TOKENSTACK, m, w, x, s), _summary(g, rival, m, w, x, s)
                    if a is not None and b is not None:
                        per[s] = stats.ratio(a.get(metric), b.get(metric))
                out[(m, w, x)] = per
    return out


def capacity_ratios(g) -> dict:
    """(model, workload) -> {seed: TokenStack capacity / AttAcc's} (searches that ended 'ok' only)."""
    out = {}
    for (m, w), split in g.splits.items():
        if split is None:
            continue
        per = {}
        for s in range(g.plan.seeds):
            a, b = g.capacity.get((tp.TOKENSTACK, m, w, s)), g.capacity.get((attacc_label(split), m, w, s))
            if _ok(a) and _ok(b):
                per[s] = stats.ratio(a.capacity_qps, b.capacity_qps)
        out[(m, w)] = per
    return out


def _ok(res) -> bool:
    return res is not None and not isinstance(res, Exception) and res.status == "ok"


def _failing_term(res) -> str | None:
    """Which SLO term the runs at the first failing rate miss more (p90 over its target): TTFT or TPOT."""
    if not _ok(res):
        return None
    at = [r.summary for r in res.runs if r.params.get("qps") == res.failing_qps and r.summary]
    if not at:
        return None
    ttft = _mean(s.get("ttft_s_p90") for s in at) / tp.SLO["slo_ttft_s"]
    tpot = _mean(s.get("tpot_s_p90") for s in at) / tp.SLO["slo_tpot_s"]
    return "TTFT" if ttft >= tpot else "TPOT"


def _energy_components(g, label, m, w, x) -> dict:
    """Component -> mJ per output token, mean over seeds."""
    out = {}
    for c in COMPONENTS:
        vals = []
        for s in range(g.plan.seeds):
            r = g.runs.get((label, m, w, x, s))
            if r is not None and r["status"] == "ok" and r["summary"].get("output_tokens"):
                vals.append(1e3 * r["energy_j"].get(c, 0.0) / r["summary"]["output_tokens"])
        out[c] = _mean(vals)
    return out


def throughput_gap(g, tput: dict) -> str:
    """Splits the cells into those where both systems meet the SLO (they serve the offered load) and
    the rest (a system saturated), and gives the geometric-mean ratio of each group."""
    p = g.plan
    served, sat = {}, {}
    for (m, w, x), per in tput.items():
        aa = attacc_label(g.splits[(m, w)])
        slo = [(_summary(g, sy, m, w, x, s) or {}).get("slo_attainment", math.nan)
               for sy in (tp.TOKENSTACK, aa) for s in range(p.seeds)]
        (served if all(a >= 0.9 for a in slo) else sat)[(m, w, x)] = per
    n = len(tput)
    text = f"In {len(served)} of {n} cells both systems meet the SLO for >= 90% of requests, so both serve the offered load"
    if served:
        text += (f"; the ratio there, {_ratio_text(stats.summary(served))}, reflects only how soon the window's last "
                 "requests finish (throughput = output tokens / (last finish - first arrival) of the middle 80% of "
                 "requests), not a higher sustainable rate.")
    else:
        text += "."
    if sat:
        text += (f" In the other {len(sat)} cell{'s' if len(sat) != 1 else ''} a system misses the SLO (it is "
                 "saturated) and the ratio is "
                 f"{_ratio_text(stats.summary(sat))}; the paper's multi-QPS runs may weight saturated rates more than "
                 f"{', '.join(f'{x:g}x' for x in p.multiples)} of each trace's own rate do here.")
    else:
        text += " No cell saturates either system at these rates."
    return text


def capacity_gap(g) -> str:
    """Per model: which SLO term the runs at the first failing rate miss more, and what that means."""
    terms: dict = {}
    for (label, m, _, _), res in g.capacity.items():
        t = _failing_term(res)
        if t:
            terms.setdefault(m, []).append(t)
    if not terms:
        return "No capacity search finished with a bracket, so no gap can be explained."
    parts = []
    for m, t in terms.items():
        ttft = t.count("TTFT")
        bound = ("prefill and queueing on the GPU, which both designs share (PIM units serve decode attention "
                 "only)") if ttft >= len(t) / 2 else ("the decode step time, where the designs differ (TokenStack "
                                                      "keeps all 8 stacks' bandwidth for the weights; AttAcc gives "
                                                      "stacks to PIM)")
        parts.append(f"for {m} the first failing rate missed TTFT more than TPOT in {ttft} of {len(t)} searches, "
                     f"so its capacity is set by {bound}")
    same = sum(1 for (label, m, w, sd), res in g.capacity.items() if label == tp.TOKENSTACK and _ok(res)
               and g.splits.get((m, w)) is not None
               and _ok(aa := g.capacity.get((attacc_label(g.splits[(m, w)]), m, w, sd)))
               and (res.capacity_qps, res.failing_qps) == (aa.capacity_qps, aa.failing_qps))
    pairs = sum(1 for (label, _, _, _), res in g.capacity.items() if label == tp.TOKENSTACK and _ok(res))
    parts.append(f"in {same} of {pairs} (model, workload, seed) pairs both searches ended in the same bracket, so "
                 f"the two capacities are within the {100 * g.plan.capacity_tolerance:g}% bracket width of each other "
                 "and the ratio reads 1.00")
    text = "; ".join(parts)
    return (text[0].upper() + text[1:] + ". Where TTFT binds, a ratio near 1 follows from the shared GPU work; "
            "where TPOT binds, a difference smaller than the bracket does not show.")


def energy_gap(g, energy: dict) -> str:
    """Per cell, each component's difference (TokenStack minus AttAcc) as a share of AttAcc's energy per
    token, averaged over the cells: where TokenStack saves and where it pays."""
    shares = {c: [] for c in COMPONENTS}
    for (m, w, x) in energy:
        aa = attacc_label(g.splits[(m, w)])
        a, b = _energy_components(g, tp.TOKENSTACK, m, w, x), _energy_components(g, aa, m, w, x)
        total = sum(v for v in b.values() if math.isfinite(v))
        if total > 0:
            for c in COMPONENTS:
                shares[c].append(100 * (a[c] - b[c]) / total)
    mean = {c: _mean(v) for c, v in shares.items()}
    mean = {c: v for c, v in mean.items() if math.isfinite(v) and abs(v) >= 0.05}
    if not mean:
        return "No cell has energy from both systems."
    saves = sorted((k for k, v in mean.items() if v < 0), key=lambda k: mean[k])
    pays = sorted((k for k, v in mean.items() if v > 0), key=lambda k: -mean[k])
    fmt = lambda ks: ", ".join(f"`{k}` {mean[k]:+.1f}" for k in ks) or "nothing"  # noqa: E731
    text = (f"TokenStack minus AttAcc per output token, as a share of AttAcc's and averaged over the cells, is "
            f"{sum(mean.values()):+.1f}%: it saves in {fmt(saves)} and pays in {fmt(pays)} (percentage points).")
    if saves:
        text += f" The largest saving, `{saves[0]}`, is {COMPONENTS[saves[0]]}"
        text += f"; the largest extra cost, `{pays[0]}`, is {COMPONENTS[pays[0]]}." if pays else "."
    return text + (" TokenStack's PIM dies sit in its GPU stacks, so their background power counts under "
                   "`gpu_stacks`, where AttAcc's PIM stacks count under `pim`; static power is charged over each "
                   "run's span, so a design that finishes the same requests sooner pays less of it.")


def headline(g) -> dict:
    tput = cell_ratios(g, "output_tokens_per_s")
    energy = cell_ratios(g, "energy_per_output_token_j")
    cap = capacity_ratios(g)
    return {"throughput": (stats.summary(tput), tput), "capacity": (stats.summary(cap), cap),
            "energy": (stats.summary(energy), energy)}


def markdown(g, *, command: str, wall_s: float, host: str, root_text: str | None = None) -> str:
    from tokenstack_sim.sweep.progress import hms

    p = g.plan
    h = headline(g)
    (rt, tput), (rc, _), (re_, energy) = h["throughput"], h["capacity"], h["energy"]
    lines = [f"# TokenStack vs AttAcc: reproduction, mode `{p.name}`", "",
             f"Written by `{command}` in {hms(wall_s)} on {host} ({', '.join(f'{k} {hms(v)}' for k, v in g.wall_s.items())}; "
             f"points finished by an earlier call are reused). The points' own run times sum to "
             f"{hms(sum(g.compute_s.values()))} ({', '.join(f'{k} {hms(v)}' for k, v in g.compute_s.items())}). "
             f"This is the **{p.name}** subset: {p.describe()}.", "",
             "Systems at equal resources (8 x b200-class GPUs, 8 stack sites x 12 HBM4 dies per GPU; "
             "arch_configs/systems): `tokenstack-hbm4` with its KV management (kv/policy.py defaults), "
             "`attacc-hbm4` at its best split of PIM stacks (below), `uniform-pim-hbm4` and `gpu-hbm4`; the rivals "
             "run their own KV policy (sim/engine.py rival_policy). Engine defaults (characterized stack costs). "
             f"SLO: TTFT <= {tp.SLO['slo_ttft_s']:g} s and TPOT <= {1e3 * tp.SLO['slo_tpot_s']:g} ms for >= 90% of "
             "requests. Ratios: TokenStack / AttAcc, paired by seed, geometric mean over cells, then mean and "
             "[95% Student-t interval] over seeds.", "",
             "| metric | published (claims.md) | this run | cells |", "|---|---|---|---:|",
             f"| throughput ratio | {tp.PUBLISHED['throughput']} | {_ratio_text(rt)} | {rt.cells} |",
             f"| SLO-capacity ratio | {tp.PUBLISHED['capacity']} | {_ratio_text(rc)} | {rc.cells} |",
             f"| energy per token ratio | {tp.PUBLISHED['energy']} | {_ratio_text(re_, pct=True)} | {re_.cells} |",
             "", "## The gaps", "",
             f"- Throughput: {throughput_gap(g, tput)}",
             f"- SLO capacity: {capacity_gap(g)}",
             f"- Energy: {energy_gap(g, energy)}"]
    if g.errors:
        lines += ["", f"**{len(g.errors)} failure(s)** (rerun the command to retry; finished points are kept):", ""]
        lines += [f"- {e}" for e in g.errors[:20]]
    lines += ["", "## Per cell (means over seeds)", "",
              "| model | workload | rate | req/s | AttAcc split | TS tok/s | AttAcc tok/s | ratio | TS SLO | AttAcc SLO "
              "| TS mJ/tok | AttAcc mJ/tok | energy ratio |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (m, w, x), per in tput.items():
        aa = attacc_label(g.splits[(m, w)])
        a = [_summary(g, tp.TOKENSTACK, m, w, x, s) or {} for s in range(p.seeds)]
        b = [_summary(g, aa, m, w, x, s) or {} for s in range(p.seeds)]
        col = lambda rows, k: _mean(r.get(k) for r in rows)  # noqa: E731
        lines.append(f"| {m} | {w} | {x:g}x | {x * g.native.get(w, math.nan):.4g} | {g.splits[(m, w)]} | "
                     f"{_f(col(a, 'output_tokens_per_s'), ',.0f')} | {_f(col(b, 'output_tokens_per_s'), ',.0f')} | "
                     f"{_f(stats.geomean(per.values()))} | {_f(100 * col(a, 'slo_attainment'), '.0f', '%')} | "
                     f"{_f(100 * col(b, 'slo_attainment'), '.0f', '%')} | "
                     f"{_f(1e3 * col(a, 'energy_per_output_token_j'), ',.0f')} | "
                     f"{_f(1e3 * col(b, 'energy_per_output_token_j'), ',.0f')} | "
                     f"{_f(stats.geomean(energy.get((m, w, x), {}).values()))} |")
    lines += ["", "## TokenStack over the other rivals (geometric mean over all cells, [95% CI] over seeds)", "",
              "| rival | throughput ratio | energy per token ratio |", "|---|---|---|"]
    for rival in tp.RIVALS:
        lines.append(f"| {rival} | {_ratio_text(stats.summary(cell_ratios(g, 'output_tokens_per_s', rival)))} | "
                     f"{_ratio_text(stats.summary(cell_ratios(g, 'energy_per_output_token_j', rival)), pct=True)} |")
    lines += split_section(g) + capacity_section(g) + ablation_section(g)
    lines += ["", "## Rerun and cost", "",
              "Sweep folders (one HDF5 file per point, `index.json`; `tokenstack report FOLDER` plots one) are under "
              f"`{root_text or g.root}`. Rerunning the same command skips every finished point and capacity probe. Modes: "
              + "; ".join(f"`--mode {k}` ({v.summary})" for k, v in tp.PLANS.items()) + "."]
    return "\n".join(lines) + "\n"


def split_section(g) -> list[str]:
    p = g.plan
    lines = ["", "## AttAcc's split (PIM stacks per GPU of 8 sites)", "",
             "Goodput score per split = output tok/s x SLO attainment, geometric mean over the rates and seeds "
             "(higher is better; ties within 0.5% go to the lower TPOT p50). The best split is used for every ratio.", "",
             "| model | workload | " + " | ".join(f"p={k}" for k in p.splits) + " | best |",
             "|---|---|" + "---:|" * len(p.splits) + "---:|"]
    for (m, w), scores in g.split_scores.items():
        cells = [_f(scores[k][0], ",.0f") if k in scores else "–" for k in p.splits]
        lines.append(f"| {m} | {w} | " + " | ".join(cells) + f" | {g.splits.get((m, w))} |")
    return lines


def capacity_section(g) -> list[str]:
    p = g.plan
    lines = ["", "## SLO capacity (req/s; one search per seed, mean over seeds)", "",
             f"Searches start at each workload's own rate, double or halve until bracketed, then bisect to "
             f"{100 * p.capacity_tolerance:g}% (a probe at rate r serves ceil(r x {p.capacity_duration_s:g} s) "
             f"requests, at most {p.capacity_request_cap}). With two seeds the 95% Student-t interval is wide "
             "(t = 12.7 for one degree of freedom).", "",
             "| model | workload | TokenStack | AttAcc (split) | ratio [95% CI] | first failing SLO term (TS / AttAcc) |",
             "|---|---|---:|---:|---|---|"]
    for (m, w), split in g.splits.items():
        if split is None:
            continue
        ts = [g.capacity.get((tp.TOKENSTACK, m, w, s)) for s in range(p.seeds)]
        aa = [g.capacity.get((attacc_label(split), m, w, s)) for s in range(p.seeds)]
        per = {s: stats.ratio(a.capacity_qps, b.capacity_qps) for s, (a, b) in enumerate(zip(ts, aa))
               if _ok(a) and _ok(b)}
        note = lambda rs: "/".join(sorted({_failing_term(r) or (getattr(r, 'status', None) or 'error') for r in rs}))  # noqa: E731
        lines.append(f"| {m} | {w} | {_f(_mean(r.capacity_qps for r in ts if _ok(r)), '.3g')} | "
                     f"{_f(_mean(r.capacity_qps for r in aa if _ok(r)), '.3g')} (p={split}) | "
                     f"{_ratio_text(stats.summary({(m, w): per}))} | {note(ts)} / {note(aa)} |")
    return lines


def ablation_section(g) -> list[str]:
    p = g.plan
    a = p.ablation
    defaults = {"pim-dies": 4, "quant": "int8", "replication": 0.05, "eviction": "workload-aware"}
    base = [_summary(g, tp.TOKENSTACK, a.model, a.workload, a.multiple, s) for s in range(p.seeds)]
    mig = _mean((r or {}).get("kv_migrations_per_s") for r in base)
    note = []
    if math.isfinite(mig) and mig == 0:
        note = ["", "No block migrated in the default runs: the PIM tier never filled at this rate, so eviction, "
                "quantization on demotion and the migration timing have nothing to act on here; a higher rate or "
                "longer contexts are needed to see them."]
    lines = ["", f"## Ablations: TokenStack on {a.model}, {a.workload} at {a.multiple:g}x its rate", "",
             "One knob at a time, the others at the design's defaults (the default row is the grid's run). "
             "PIM dies per stack: `--set gpu_stack.layout.pim_dies=N` (hbm4-12h-tokenstack: 4 = SID 2; 0 = no PIM, "
             "12 = every die); quantization: `--kv demote_format=` (int8 default, fp16 = off); replication: "
             "`--kv replication_budget=`; eviction: `--kv eviction=`. Means over seeds.", "",
             "| knob | value | output tok/s | TPOT p50 ms | TTFT p99 s | SLO met | mJ/tok | PIM share of attention "
             "| migrations/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for knob in tp.ABLATIONS:
        values = [defaults[knob]] + sorted({k[1] for k in g.ablations if k[0] == knob}, key=str)
        for v in values:
            if v == defaults[knob]:
                rows = [_summary(g, tp.TOKENSTACK, a.model, a.workload, a.multiple, s) for s in range(p.seeds)]
                v_txt = f"{v} (default)"
            else:
                recs = [g.ablations.get((knob, v, s)) for s in range(p.seeds)]
                rows = [r["summary"] if r and r["status"] == "ok" else None for r in recs]
                v_txt = str(v)
            rows = [r for r in rows if r]
            col = lambda k: _mean(r.get(k) for r in rows)  # noqa: E731
            lines.append(f"| {knob} | {v_txt} | {_f(col('output_tokens_per_s'), ',.0f')} | "
                         f"{_f(1e3 * col('tpot_s_p50'), '.1f')} | {_f(col('ttft_s_p99'), '.2f')} | "
                         f"{_f(100 * col('slo_attainment'), '.0f', '%')} | "
                         f"{_f(1e3 * col('energy_per_output_token_j'), ',.0f')} | "
                         f"{_f(100 * col('pim_attention_share'), '.0f', '%')} | {_f(col('kv_migrations_per_s'), ',.0f')} |")
    best = []
    for knob in tp.ABLATIONS:
        vals = {}
        for (k, v, sd), r in g.ablations.items():
            if k == knob and r["status"] == "ok":
                vals.setdefault(v, []).append(r["summary"].get("output_tokens_per_s"))
        base_t = _mean((r or {}).get("output_tokens_per_s") for r in base)
        means = {v: _mean(t) for v, t in vals.items()}
        means = {v: t for v, t in means.items() if math.isfinite(t)}
        if means and math.isfinite(base_t) and base_t > 0:
            v = max(means, key=means.get)
            best.append(f"{knob} {v}: {100 * (means[v] / base_t - 1):+.1f}%")
    if best:
        note += ["", "Best variant of each knob by output throughput, against the default: " + "; ".join(best) + "."]
    return lines + note
