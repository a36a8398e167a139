"""results/report.py: run and seed tables, the t quantile."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from test_results_synth import make_does_not_fit, make_run
from tokenstack_sim.results import report

pytestmark = pytest.mark.unit


def _runs():
    return [make_run(system=sy, qps=q, seed=s)
            for sy in ("tokenstack-hbm4", "gpu-hbm4") for q in (1.0, 4.0) for s in range(3)]


def test_markdown_runs_table_is_aligned_with_units():
    runs = _runs()[:3] + [make_does_not_fit()]
    text = report.runs_table(runs)
    lines = text.strip().split("\n")
    assert len(lines) == 2 + 4
    assert len({len(line) for line in lines}) == 1  # aligned
    header = lines[0]
    for unit in ("QPS (req/s)", "output (tok/s)", "TTFT p50 (ms)", "TPOT p99 (ms)", "E2E p50 (s)",
                 "SLO met (%)", "energy/out tok (mJ)", "GPU (mJ/tok)", "PIM attn (%)"):
        assert unit in header
    assert "does_not_fit" in lines[-1] and "short by 62.0 GB" in lines[-1]


def test_json_values_in_display_units():
    run = make_run()
    row = json.loads(report.runs_table([run], fmt="json"))[0]
    s = run.summary
    assert row["system"] == "tokenstack-hbm4" and row["seed"] == 0 and row["status"] == "ok"
    assert row["ttft_ms_p50"] == pytest.approx(s["ttft_s_p50"] * 1e3)
    assert row["tpot_ms_p99"] == pytest.approx(s["tpot_s_p99"] * 1e3)
    assert row["slo_pct"] == pytest.approx(100 * s["slo_attainment"])
    assert row["energy_mj_per_tok"] == pytest.approx(1e3 * s["energy_per_output_token_j"])
    split = [row[f"energy_mj_per_tok_{c}"] for c in report.ENERGY_CLASSES]
    assert sum(split) == pytest.approx(row["energy_mj_per_tok"])
    assert row["pim_attention_pct"] == pytest.approx(100 * s["pim_attention_share"])
    assert row["requests"] == s["requests"] and isinstance(row["requests"], int)


def test_csv_parses_back():
    runs = _runs()[:2] + [make_does_not_fit()]
    rows = list(csv.reader(io.StringIO(report.runs_table(runs, fmt="csv"))))
    assert len(rows) == 4 and len({len(r) for r in rows}) == 1
    header = rows[0]
    assert float(rows[1][header.index("output (tok/s)")]) == pytest.approx(runs[0].summary["output_tokens_per_s"])
    assert rows[3][header.index("TTFT p50 (ms)")] == ""
    assert "short by" in rows[3][header.index("note")]


def test_nan_summary_value_is_shown_missing():
    run = make_run()
    run.summary["tpot_s_p50"] = float("nan")
    assert json.loads(report.runs_table([run], fmt="json"))[0]["tpot_ms_p50"] is None
    assert "–" in report.runs_table([run]).split("\n")[2]


def test_missing_summary_key_is_named():
    run = make_run()
    del run.summary["kv_blocks_peak"]
    assert report.missing_summary_keys(run) == ["kv_blocks_peak"]
    with pytest.raises(ValueError, match="kv_blocks_peak"):
        report.runs_table([run])
    assert report.missing_summary_keys(make_does_not_fit()) == []


def test_bad_format():
    with pytest.raises(ValueError, match="markdown"):
        report.runs_table([make_run()], fmt="html")


def test_seed_groups_and_ci_by_hand():
    runs = _runs() + [make_does_not_fit(seed=0), make_does_not_fit(seed=1)]
    groups = report.seed_groups(runs)
    assert [len(g) for g in groups] == [3, 3, 3, 3, 2]
    rows = json.loads(report.seeds_table(runs, fmt="json"))
    assert len(rows) == 5
    x = np.array([r.summary["output_tokens_per_s"] for r in runs[:3]])
    half = 4.302652729749411 * x.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert rows[0]["n"] == 3
    assert rows[0]["output_tok_per_s"] == pytest.approx(x.mean())
    assert rows[0]["output_tok_per_s_ci95"] == pytest.approx(half, rel=1e-9)
    assert rows[4]["output_tok_per_s"] is None and "short by" in rows[4]["note"]

    text = report.seeds_table(runs)
    lines = text.strip().split("\n")
    assert len(lines) == 2 + 5 and len({len(line) for line in lines}) == 1
    assert "±" in lines[2] and "seeds" in lines[0]


def test_one_seed_has_no_interval():
    rows = json.loads(report.seeds_table([make_run()], fmt="json"))
    assert rows[0]["n"] == 1 and rows[0]["ttft_ms_p50_ci95"] is None
    assert "±" not in report.seeds_table([make_run()]).split("\n")[2]


def test_mean_ci_skips_nan():
    mean, half = report.mean_ci([1.0, float("nan"), 3.0])
    assert mean == 2.0 and half == pytest.approx(12.706204736174694)  # sem = sqrt(2) / sqrt(2)
    assert report.mean_ci([]) == (None, None)


@pytest.mark.parametrize("p, df, expected", [  # scipy.stats.t.ppf
    (0.975, 1, 12.706204736174694), (0.975, 2, 4.302652729749462), (0.975, 4, 2.7764451051977934),
    (0.975, 9, 2.262157162798205), (0.975, 29, 2.045229642132703), (0.995, 5, 4.032142983555228),
    (0.95, 1000, 1.6463788172854643), (0.025, 3, -3.1824463052837086), (0.5, 7, 0.0),
])
def test_t_quantile_used_by_the_report(p, df, expected):
    from tokenstack_sim.runtime.metrics import t_quantile

    assert t_quantile(p, df) == pytest.approx(expected, rel=1e-7, abs=1e-12)
