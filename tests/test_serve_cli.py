"""`tokenstack run | capacity | report | timeline` through the console-script entry point
(`tokenstack_sim.cli.main`, in process): bad input is one line on stderr with exit status 2 and no
traceback; a pair whose weights do not fit is a table row with its reason; a short run, its report with
plots and its timeline work end to end; a capacity search returns a bracket that brackets.

Runs use Llama-3.1-8B with --memory-timing roofline on gpu-hbm4 (no characterized costs needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokenstack_sim.results.h5 import read_runs
from tokenstack_sim.sim.engine import RunSpec, run
from tokenstack_sim.sim.step_cost import EngineOptions
from _cli import one_line_error, tokenstack  # tests/_cli.py

pytestmark = pytest.mark.unit

FAST = ("--model", "llama-3.1-8b", "--memory-timing", "roofline")


def tiny_system(tmp_path) -> Path:
    """gpu-hbm4 cut to one GPU with one stack of which it may use a quarter (12.9 GB): neither Llama-3.1-70B's
    nor Llama-3.1-8B's weights (16.1 GB) fit."""
    tiny = tmp_path / "tiny-gpu.toml"
    tiny.write_text('schema_version = 1\nkind = "system"\nbase = "gpu-hbm4"\nname = "tiny-gpu"\n'
                    "gpus = 1\ntp = 1\ngpu_stacks_per_gpu = 1\nmemory_utilization = 0.25\n")
    return tiny


# ------------------------------------------------------------------------------------------ errors

def test_unknown_names_list_the_known_ones(capsys):
    msg = one_line_error(capsys, "run", "no-such-system", *FAST, "--duration", "2")
    assert "no-such-system" in msg
    for known in ("gpu-hbm4", "tokenstack-hbm4", "attacc-hbm4"):
        assert known in msg
    msg = one_line_error(capsys, "run", "gpu-hbm4", "--model", "no-such-model", "--memory-timing", "roofline",
                         "--duration", "2")
    assert "no-such-model" in msg and "llama-3.1-8b" in msg and "llama-3.1-70b" in msg
    msg = one_line_error(capsys, "run", "gpu-hbm4", *FAST, "--workload", "no-such-workload", "--duration", "2")
    assert "no-such-workload" in msg and "azure-conv-like" in msg and "mooncake-conv-like" in msg
    msg = one_line_error(capsys, "run", "gpu-hbm4", *FAST, "--sched", "unknown=1", "--duration", "2")
    assert "unknown" in msg and "max_num_batched_tokens" in msg and "max_num_seqs" in msg
    # a preset of another kind is refused by kind
    msg = one_line_error(capsys, "run", "llama-3.1-8b", *FAST, "--duration", "2")
    assert "system" in msg


@pytest.mark.parametrize("args,words", [
    (("--qps", "-1"), ("--qps", "-1")),
    (("--qps", "0"), ("--qps", "> 0")),
    (("--duration", "0"), ("--duration", "> 0")),
    (("--duration", "soon"), ("--duration", "soon")),
    (("--seeds", "0"), ("--seeds", "at least 1")),
    (("--requests", "0"), ("--requests", "at least 1")),
    (("--sched", "max_num_seqs=0"), ("max_num_seqs", ">= 1")),
    (("--sched", "block_size=abc"), ("block_size", "abc")),
    (("--sched", "max_num_seqs"), ("max_num_seqs",)),
    (("--slo-ttft", "abc"), ("--slo-ttft", "abc")),
    (("--slo-tpot", "-5ms"), ("--slo-tpot", "-5ms")),
    (("--warmup", "1.5"), ("warmup", "1.5")),
    (("--warmup", "0.6", "--drain", "0.5"), ("warmup", "drain")),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) and v and v[0].startswith("--") else None)
def test_bad_values_are_one_line_errors(capsys, args, words):
    msg = one_line_error(capsys, "run", "gpu-hbm4", *FAST, "--duration", "2", *args)
    for w in words:
        assert w in msg, msg


def test_non_boolean_prefix_caching_is_refused(capsys):
    msg = one_line_error(capsys, "run", "gpu-hbm4", *FAST, "--duration", "2", "--sched",
                         "enable_prefix_caching=maybe")
    assert "enable_prefix_caching" in msg


@pytest.mark.parametrize("value", ["0", "-5"])
def test_non_positive_kv_blocks_is_refused(capsys, value):
    msg = one_line_error(capsys, "run", "gpu-hbm4", *FAST, "--duration", "2", "--kv-blocks", value)
    assert "--kv-blocks" in msg or "kv_blocks" in msg


def test_a_pool_too_small_for_one_request_is_an_error(capsys):
    msg = one_line_error(capsys, "run", "gpu-hbm4", *FAST, "--duration", "2", "--kv-blocks", "8")
    assert "KV blocks" in msg and "the pool has 8" in msg


def test_report_and_timeline_refuse_what_is_not_a_results_file(capsys, tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("not hdf5")
    assert "notes.h5" in one_line_error(capsys, "report", bad)
    assert "notes.h5" in one_line_error(capsys, "timeline", bad, "--out", tmp_path / "t.json")
    assert "missing.h5" in one_line_error(capsys, "report", tmp_path / "missing.h5")


# ------------------------------------------------------------------------------------ does not fit

def test_weights_that_do_not_fit_are_a_table_row_with_the_reason(capsys, tmp_path):
    tiny = tiny_system(tmp_path)
    out_h5 = tmp_path / "fit.h5"
    code, out, err = tokenstack(capsys, "run", tiny, "gpu-hbm4", "--model", "llama-3.1-70b", "--memory-timing",
                                "roofline", "--duration", "3", "--out", out_h5)
    assert code == 0, err
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()
            if line.startswith("| ") and "system" not in line}
    assert set(rows) == {"tiny-gpu", "gpu-hbm4"}
    assert "does_not_fit" in rows["tiny-gpu"] and "exceed" in rows["tiny-gpu"] and "weights" in rows["tiny-gpu"]
    assert "| ok " in rows["gpu-hbm4"]
    runs = {r.params["system"]: r for r in read_runs(out_h5)}
    assert runs["tiny-gpu"].status == "does_not_fit" and "exceed" in runs["tiny-gpu"].reason
    assert runs["gpu-hbm4"].status == "ok"
    # JSON too
    code, out, _ = tokenstack(capsys, "report", out_h5, "--format", "json")
    assert code == 0
    table = json.loads(out[out.index("["):])
    fit = {r["system"]: r for r in table}
    assert fit["tiny-gpu"]["status"] == "does_not_fit"


# ------------------------------------------------------------------------------------------- smoke

def test_run_report_timeline_smoke(capsys, tmp_path):
    h5 = tmp_path / "f.h5"
    code, out, err = tokenstack(capsys, "run", "gpu-hbm4", *FAST, "--workload", "azure-conv-like", "--duration", "30",
                                "--qps", "4", "--seeds", "2", "--out", h5)
    assert code == 0, err
    assert h5.is_file() and "wrote 2 run(s)" in err
    runs = read_runs(h5)
    assert [r.params["seed"] for r in runs] == [0, 1] and all(r.status == "ok" for r in runs)
    assert [r.params["qps"] for r in runs] == [4.0, 4.0]
    assert "gpu-hbm4" in out and "llama-3.1-8b" in out and "±" in out  # per-run rows, then mean ± CI over seeds
    # the CLI's run is the API's run (same content apart from provenance)
    api = run("gpu-hbm4", "llama-3.1-8b", RunSpec("azure-conv-like", qps=4.0, duration_s=30.0),
              options=EngineOptions(memory_timing="roofline"))
    assert runs[0].same_content(api)

    plots = tmp_path / "plots"
    code, out, err = tokenstack(capsys, "report", h5, "--plots", plots)
    assert code == 0, err
    assert "gpu-hbm4" in out
    pngs = sorted(p.name for p in plots.iterdir())
    assert pngs == ["energy_breakdown.png", "kv_blocks.png", "kv_tiers.png", "latency_cdfs.png", "throughput_vs_qps.png"]
    for p in plots.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
    code, csv_out, _ = tokenstack(capsys, "report", h5, "--format", "csv")
    assert code == 0 and len([ln for ln in csv_out.splitlines() if ln.startswith("gpu-hbm4")]) >= 2

    trace = tmp_path / "t.json"
    code, out, err = tokenstack(capsys, "timeline", h5, "--out", trace)
    assert code == 0, err
    doc = json.loads(trace.read_text())
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    slices = [e for e in events if e.get("ph") == "X"]
    assert len(slices) >= len(runs[0].steps)
    tracks = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert {"steps", "GPU compute", "GPU link"} <= tracks
    # a bounded trace: the first 5 steps of a window, the cut said on stderr
    t0 = float(runs[0].steps["start_s"][10])
    code, _, err = tokenstack(capsys, "timeline", h5, "--out", tmp_path / "t5.json", "--max-steps", "5",
                              "--start", t0)
    assert code == 0, err
    assert "steps 10..14 of" in err and "--max-steps 5 left out" in err
    doc = json.loads((tmp_path / "t5.json").read_text())
    assert [e["name"] for e in doc["traceEvents"] if e.get("cat") == "step"] == [f"step {i}" for i in range(10, 15)]
    assert "--max-steps" in one_line_error(capsys, "timeline", h5, "--out", tmp_path / "t6.json", "--max-steps", "-1")
    assert "--end" in one_line_error(capsys, "timeline", h5, "--out", tmp_path / "t6.json", "--start", "2",
                                     "--end", "1")
    code, _, err = tokenstack(capsys, "timeline", h5, "--out", tmp_path / "t1.json", "--run", runs[1].name)
    assert code == 0, err
    assert "nope" in one_line_error(capsys, "timeline", h5, "--out", tmp_path / "t2.json", "--run", "nope")


def test_report_plots_of_a_native_rate_run(capsys, tmp_path):
    h5 = tmp_path / "f.h5"
    code, _, err = tokenstack(capsys, "run", "gpu-hbm4", *FAST, "--workload", "azure-conv-like", "--duration", "30",
                              "--out", h5)
    assert code == 0, err
    assert read_runs(h5)[0].params["qps"] is None
    code, _, err = tokenstack(capsys, "report", h5, "--plots", tmp_path / "plots")
    assert code == 0, err
    assert (tmp_path / "plots" / "throughput_vs_qps.png").is_file()


def test_capacity_returns_a_bracket(capsys, tmp_path):
    h5 = tmp_path / "cap.h5"
    tol = 0.5
    code, out, err = tokenstack(capsys, "capacity", "gpu-hbm4", tiny_system(tmp_path), *FAST,
                                "--workload", "azure-conv-like", "--duration", "6", "--slo-ttft", "20ms",
                                "--slo-tpot", "3ms", "--qps-start", "2", "--tolerance", tol, "--format", "json",
                                "--out", h5)
    assert code == 0, err
    row, tiny = json.loads(out[out.index("["):])
    assert row["status"] == "ok" and row["system"] == "gpu-hbm4"
    assert tiny["system"] == "tiny-gpu" and tiny["status"] == "does_not_fit" and tiny["runs"] == 0
    assert "exceed" in tiny["note"]
    lo, hi = row["capacity_qps"], row["first_failing_qps"]
    assert 0 < lo < hi <= lo * (1 + tol) * (1 + 1e-9)
    runs = read_runs(h5)
    assert row["runs"] == len(runs) >= 3
    by_qps = {r.params["qps"]: r.summary["slo_attainment"] for r in runs}
    assert by_qps[lo] >= 0.9 > by_qps[hi]
    assert row["slo_attainment_at_capacity"] == pytest.approx(by_qps[lo])
    assert all(r.params["slo_ttft_s"] == pytest.approx(0.02) and r.params["slo_tpot_s"] == pytest.approx(0.003)
               for r in runs)
    # every rate tried is recorded; the bracket's ends are among them
    assert {lo, hi} <= set(by_qps) and np.isfinite(list(by_qps.values())).all()
    # a capacity search needs a window
    assert "--duration" in one_line_error(capsys, "capacity", "gpu-hbm4", *FAST)


def test_capacity_over_seeds_reports_each_probe_with_its_ci(capsys, tmp_path):
    h5 = tmp_path / "cap.h5"
    code, out, err = tokenstack(capsys, "capacity", "gpu-hbm4", *FAST, "--workload", "azure-conv-like",
                                "--duration", "6", "--slo-ttft", "20ms", "--slo-tpot", "3ms", "--qps-start", "2",
                                "--tolerance", "0.5", "--seeds", "2", "--seed", "5", "--out", h5)
    assert code == 0, err
    runs = read_runs(h5)
    by_qps: dict = {}
    for r in runs:
        by_qps.setdefault(r.params["qps"], []).append(r)
    assert all(sorted(x.params["seed"] for x in g) == [5, 6] for g in by_qps.values())
    means = {q: np.mean([x.summary["slo_attainment"] for x in g]) for q, g in by_qps.items()}
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("| gpu-hbm4") and "ok" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    lo, hi = float(cells[3].replace(",", "")), float(cells[4].replace(",", ""))
    assert cells[5] == "2" and "±" in cells[6]
    lo_q = min(by_qps, key=lambda q: abs(q - lo))
    hi_q = min(by_qps, key=lambda q: abs(q - hi))
    assert means[lo_q] >= 0.9 > means[hi_q]  # the rule: mean over seeds
    # one probe line per rate tried, with its mean and CI, then the rule
    probe_lines = [line for line in lines if line.startswith("| gpu-hbm4") and line.rstrip(" |").endswith(("yes", "no"))]
    assert len(probe_lines) == len(by_qps)
    assert any(line.startswith("Rule: a rate meets the SLO when the mean SLO attainment") for line in lines)
    assert "--seeds" in one_line_error(capsys, "capacity", "gpu-hbm4", *FAST, "--duration", "6", "--seeds", "0")
