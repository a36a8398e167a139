"""tokenstack_sim/repro/stats.py and the report's ratio pipeline, on hand-made numbers.

- geometric mean and ratio edge cases (missing, zero, NaN values are left out);
- per-seed geometric means over cells, their mean and the 95% Student-t half-width over seeds, checked
  against a hand computation;
- AttAcc's best split: highest goodput, ties within 0.5% to the lower TPOT, missing scores skipped;
- the TokenStack report on a synthetic gathered plan: the best split per (model, workload) and the
  headline ratios equal a hand computation, and the markdown names the mode and the published figures.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tokenstack_sim.repro import stats
from tokenstack_sim.runtime.metrics import t_quantile

pytestmark = pytest.mark.unit


def test_geomean_and_ratio_leave_out_bad_values():
    assert stats.geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert stats.geomean([2.0, None, float("nan"), 0.0, -1.0, 8.0]) == pytest.approx(4.0)
    assert math.isnan(stats.geomean([]))
    assert stats.ratio(3.0, 2.0) == 1.5
    for a, b in ((1.0, 0.0), (None, 1.0), (1.0, float("nan")), ("x", 1.0)):
        assert math.isnan(stats.ratio(a, b))


def test_summary_is_the_mean_of_per_seed_geomeans_with_a_t_interval():
    cells = {"c1": {0: 1.0, 1: 2.0, 2: 1.5}, "c2": {0: 4.0, 1: 2.0, 2: 1.5}, "c3": {0: 1.0, 1: float("nan")}}
    r = stats.summary(cells)
    g0, g1, g2 = (1.0 * 4.0 * 1.0) ** (1 / 3), 2.0, 1.5  # seed 1 drops c3's NaN; seed 2 has no c3
    assert r.per_seed == pytest.approx({0: g0, 1: g1, 2: g2})
    mean = (g0 + g1 + g2) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in (g0, g1, g2)) / 2)
    assert r.mean == pytest.approx(mean)
    assert r.ci95 == pytest.approx(t_quantile(0.975, 2) * sd / math.sqrt(3))
    assert r.cells == 3 and r.left_out == 2  # c3 in seed 1 (NaN) and in seed 2 (absent)
    assert r.low == pytest.approx(mean - r.ci95) and r.high == pytest.approx(mean + r.ci95)
    one = stats.summary({"c": {0: 2.0}})
    assert one.mean == 2.0 and one.ci95 is None  # no interval from one seed


def test_best_split_ties_and_missing():
    assert stats.best_split({2: (100.0, 0.02), 4: (120.0, 0.03), 6: (90.0, 0.01)}) == 4
    # 4 and 6 tie (within 0.5%): the lower TPOT wins
    assert stats.best_split({2: (100.0, 0.02), 4: (120.0, 0.03), 6: (119.9, 0.01)}) == 6
    assert stats.best_split({2: (100.0, 0.02), 4: (100.0, 0.02)}) == 2  # a full tie: the smaller split
    assert stats.best_split({2: (float("nan"), 0.01), 4: (50.0, float("nan"))}) == 4
    assert stats.best_split({}) is None


def _rec(tok, slo, energy, tpot=0.02):
    return {"status": "ok", "summary": {"output_tokens_per_s": tok, "slo_attainment": slo, "tpot_s_p50": tpot,
                                        "tpot_s_p90": tpot, "ttft_s_p90": 0.5, "ttft_s_p99": 1.0,
                                        "energy_per_output_token_j": energy, "output_tokens": 1000,
                                        "pim_attention_share": 1.0, "kv_migrations_per_s": 0.0},
            "energy_j": {"gpu": energy * 500, "gpu_stacks": energy * 500}}


def _gathered():
    """One model x one workload x two rates x two seeds; AttAcc splits 2 (better) and 4."""
    from tokenstack_sim.repro import tokenstack_plan as tp
    from tokenstack_sim.repro.tokenstack_run import Gathered, attacc_label, choose_splits

    plan = tp.Plan("t", "test", models=("m",), workloads=("w",), multiples=(1.0, 4.0), seeds=2, duration_s=1.0,
                   request_cap=10, splits=(2, 4), capacity_duration_s=1.0, capacity_request_cap=10,
                   capacity_tolerance=0.1, ablation=tp.Ablation("m", "w", 1.0, (), (), (), ()))
    g = Gathered(plan, root=None, native={"w": 2.0})
    ts = {(1.0, 0): 100.0, (1.0, 1): 100.0, (4.0, 0): 300.0, (4.0, 1): 330.0}
    aa = {(1.0, 0): 100.0, (1.0, 1): 100.0, (4.0, 0): 200.0, (4.0, 1): 220.0}
    for (x, s), v in ts.items():
        g.runs[(tp.TOKENSTACK, "m", "w", x, s)] = _rec(v, 1.0 if x == 1.0 else 0.5, 0.5)
        g.runs[(attacc_label(2), "m", "w", x, s)] = _rec(aa[(x, s)], 1.0 if x == 1.0 else 0.4, 1.0)
        g.runs[(attacc_label(4), "m", "w", x, s)] = _rec(aa[(x, s)] / 2, 1.0, 1.0)
    choose_splits(g)

    def cap(q, fail):
        return SimpleNamespace(status="ok", capacity_qps=q, failing_qps=fail,
                               runs=[SimpleNamespace(params={"qps": fail}, summary={"ttft_s_p90": 5.0, "tpot_s_p90": 0.01})])

    for s, (a, b) in enumerate(((10.0, 5.0), (12.0, 8.0))):
        g.capacity[(tp.TOKENSTACK, "m", "w", s)] = cap(a, 2 * a)
        g.capacity[(attacc_label(2), "m", "w", s)] = cap(b, 2 * b)
    return g


def test_report_ratios_equal_a_hand_computation():
    from tokenstack_sim.repro.tokenstack_report import headline, markdown, throughput_gap

    g = _gathered()
    # split 2: goodput geomean over (1x, 4x) x seeds = (100, 100, 80, 88); split 4: (50, 50, 100, 110)
    assert g.splits[("m", "w")] == 2
    assert g.split_scores[("m", "w")][2][0] == pytest.approx((100 * 100 * 80 * 88) ** 0.25)
    h = headline(g)
    tput, _ = h["throughput"]
    # seed 0: cells 1x (1.0) and 4x (300/200); seed 1: 1.0 and 330/220 -> both geomean sqrt(1.5)
    assert tput.per_seed == pytest.approx({0: 1.5 ** 0.5, 1: 1.5 ** 0.5})
    assert tput.mean == pytest.approx(1.5 ** 0.5) and tput.ci95 == pytest.approx(0.0)
    cap, _ = h["capacity"]
    assert cap.per_seed == pytest.approx({0: 2.0, 1: 1.5}) and cap.mean == pytest.approx(1.75)
    assert cap.ci95 == pytest.approx(t_quantile(0.975, 1) * (0.25 * 2 ** 0.5) / 2 ** 0.5)
    energy, _ = h["energy"]
    assert energy.mean == pytest.approx(0.5)
    text = throughput_gap(g, h["throughput"][1])
    assert "In 1 of 2 cells" in text  # the 1x cell is load-bound; the 4x cell is not
    md = markdown(g, command="cmd", wall_s=1.0, host="h")
    assert "mode `t`" in md and "1.62x" in md and "1.70x" in md and "-30% to -47%" in md
    assert "| m | w | 4x |" in md
