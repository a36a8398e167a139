"""Serving metrics: throughput over the measurement window, SLO attainment, Student-t confidence intervals."""

import json
import math

import numpy as np
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.runtime import SchedulerParams, serve
from tokenstack_sim.runtime.metrics import ServeMetrics, confidence_interval, slo_met, summarize, t_quantile
from tokenstack_sim.runtime.serve_loop import REQUEST_RESULT_DTYPE, STEP_DTYPE
from tokenstack_sim.workload.table import RequestTable, empty_rows

pytestmark = pytest.mark.unit


def _requests(rows):
    """rows: (arrival, first, finish, input, output)."""
    req = np.zeros(len(rows), REQUEST_RESULT_DTYPE)
    req["request_id"] = np.arange(len(rows))
    for name, col in zip(("arrival_s", "first_token_s", "finish_s", "input_tokens", "output_tokens"), zip(*rows)):
        req[name] = col
    return req


def _steps(ends_and_outputs):
    st = np.zeros(len(ends_and_outputs), STEP_DTYPE)
    ends = np.array([e for e, _ in ends_and_outputs])
    st["end_s"] = ends
    st["start_s"] = np.concatenate([[0.0], ends[:-1]])
    st["output_tokens"] = [o for _, o in ends_and_outputs]
    st["new_tokens"] = st["output_tokens"]
    return st


# R0 (warm-up) samples at 1, 1.5, 2.5, 4.5, 5; R1 (the one included request) at 3 and 4; R2 (drain) at 6, 7.
THREE = _requests([(0.0, 1.0, 5.0, 10, 5), (2.0, 3.0, 4.0, 20, 2), (3.5, 6.0, 7.0, 30, 2)])
THREE_STEPS = _steps([(1.0, 1), (1.5, 1), (2.5, 1), (3.0, 1), (4.0, 1), (4.5, 1), (5.0, 1), (6.0, 1), (7.0, 1)])
ONLY_R1 = dict(warmup_frac=1 / 3, drain_frac=1 / 3)


def test_throughput_counts_every_token_produced_inside_the_window():
    # Window = (first included arrival, last included finish] = (2, 4], 2 s. R0 is excluded from the
    # statistics but still decodes inside the window, sharing the machine: its tokens count.
    m = summarize(THREE, steps=THREE_STEPS, **ONLY_R1)
    assert m.requests == 1 and m.duration_s == pytest.approx(2.0)
    assert m.window_output_tokens == 3  # steps ending at 2.5 (R0), 3 and 4 (R1)
    assert m.output_tokens_per_s == pytest.approx(3 / 2)
    assert m.window_input_tokens == 20  # R1's prompt completes at 3 (R0's at 1, R2's at 6)
    assert m.total_tokens_per_s == pytest.approx((20 + 3) / 2)
    assert m.window_tokens_from == "steps"


def test_without_steps_the_tokens_are_placed_from_the_request_times():
    # First and last tokens at their times, the ones between spread evenly: R0's 4 later tokens over (1, 5]
    # put 2 in (2, 4]; R1's 2; R2's none.
    m = summarize(THREE, **ONLY_R1)
    assert m.window_output_tokens == pytest.approx(4.0)
    assert m.output_tokens_per_s == pytest.approx(4 / 2)
    assert m.total_tokens_per_s == pytest.approx((20 + 4) / 2)
    assert m.window_tokens_from == "requests"


def test_whole_run_window_counts_every_token_either_way():
    rng = np.random.default_rng(3)
    n = 40
    rows = empty_rows(n)
    rows["input_tokens"] = rng.integers(1, 200, n)
    rows["output_tokens"] = rng.integers(0, 30, n)
    rows["arrival_s"] = np.sort(rng.uniform(0, 0.3, n))
    res = serve(RequestTable(rows), SchedulerParams(num_kv_blocks=400, max_num_batched_tokens=256), _Affine())
    out = res.requests["output_tokens"].sum()
    span = res.requests["finish_s"].max() - res.requests["arrival_s"].min()
    for steps in (None, res.steps):
        m = summarize(res.requests, steps=steps, warmup_frac=0.0, drain_frac=0.0)
        assert m.window_output_tokens == pytest.approx(out)
        assert m.output_tokens_per_s == pytest.approx(out / span)
        assert m.total_tokens_per_s == pytest.approx((out + res.requests["input_tokens"].sum()) / span)


class _Affine:
    def step_time_s(self, batch):
        return 0.01 + 0.0001 * int(batch.new_tokens.sum())


def test_steps_without_the_needed_fields_are_refused():
    with pytest.raises(InputError, match="output_tokens") as exc:
        summarize(THREE, steps=np.zeros(2, [("end_s", float)]), **ONLY_R1)
    assert exc.value.where == "steps"


# ---- SLO attainment ---------------------------------------------------------------------------------------
SLO_ROWS = _requests([
    (0.0, 0.5, 0.6, 10, 3),             # TTFT 0.5, TPOT 0.05: met
    (0.0, 2.0, 2.1, 10, 3),             # TTFT 2.0: missed
    (0.0, 0.5, 0.5, 10, 1),             # one output token: no TPOT, TTFT met
    (0.0, np.nan, np.nan, 10, 4),       # never produced a first token: missed
    (0.0, np.nan, 0.3, 10, 0),          # no output tokens, so no first token: missed
    (0.0, 0.2, 0.6, 10, 3),             # TPOT 0.2: missed
    (0.0, 1.0, 1.2, 10, 3),             # TTFT exactly the SLO, TPOT exactly the SLO: met
])


def test_slo_met_per_request():
    assert slo_met(SLO_ROWS, 1.0, 0.1).tolist() == [True, False, True, False, False, False, True]
    # None leaves that bound out
    assert slo_met(SLO_ROWS, None, 0.1).tolist() == [True, True, True, False, False, False, True]
    assert slo_met(SLO_ROWS, 1.0, None).tolist() == [True, False, True, False, False, True, True]
    for bad in (-1.0, float("nan"), 0.0):
        with pytest.raises(InputError) as exc:
            slo_met(SLO_ROWS, bad, 0.1)
        assert exc.value.where == "slo_ttft_s"


def test_slo_attainment_is_the_share_of_included_requests():
    m = summarize(SLO_ROWS, warmup_frac=0.0, drain_frac=0.0, slo_ttft_s=1.0, slo_tpot_s=0.1)
    assert m.slo_attainment == pytest.approx(3 / 7)
    assert (m.slo_ttft_s, m.slo_tpot_s) == (1.0, 0.1)
    assert math.isnan(summarize(SLO_ROWS, warmup_frac=0.0, drain_frac=0.0).slo_attainment)


# ---- Student-t confidence intervals -----------------------------------------------------------------------
@pytest.mark.parametrize("p, df, expected", [
    (0.975, 1, 12.706), (0.975, 4, 2.776), (0.975, 30, 2.042),  # the usual table
    (0.95, 2, 2.920), (0.995, 10, 3.169), (0.975, 100, 1.984), (0.975, 120, 1.980), (0.975, 1000, 1.962),
])
def test_t_quantile_matches_the_table(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_closed_forms_symmetry_and_the_large_df_branch():
    for p in (0.6, 0.9, 0.975, 0.999, 0.99999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
        assert t_quantile(1 - p, 7) == pytest.approx(-t_quantile(p, 7), rel=1e-12)
    assert t_quantile(0.5, 9) == 0.0
    # beyond df 100 the normal quantile with Cornish-Fisher terms: seamless with the exact inversion
    from tokenstack_sim.runtime.metrics import _t_quantile_exact

    for df in (101, 150, 400):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(_t_quantile_exact(p, df), rel=1e-7)
    assert t_quantile(0.975, 10**9) == pytest.approx(1.959963985, rel=1e-8)
    for bad_p, bad_df in ((0.0, 3), (1.0, 3), (0.9, 0), (0.9, 2.5)):
        with pytest.raises(InputError):
            t_quantile(bad_p, bad_df)


def test_confidence_interval():
    mean, half = confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    mean, half = confidence_interval(np.array([10.0, 12.0]), level=0.9)
    assert half == pytest.approx(6.3137515 * math.sqrt(2.0) / math.sqrt(2), rel=1e-6)
    m1, h1 = confidence_interval([4.0])
    assert m1 == 4.0 and math.isnan(h1)
    assert all(math.isnan(x) for x in confidence_interval([]))
    with pytest.raises(InputError) as exc:
        confidence_interval([1.0, 2.0], level=1.0)
    assert exc.value.where == "level"


# ---- as_dict ----------------------------------------------------------------------------------------------
def test_as_dict_is_complete_and_flat_friendly():
    from dataclasses import fields

    m = summarize(SLO_ROWS, warmup_frac=0.0, drain_frac=0.0, slo_ttft_s=1.0, slo_tpot_s=0.1)
    d = m.as_dict()
    assert set(d) == {f.name for f in fields(ServeMetrics)}
    assert d["ttft_s"]["p99"] == m.ttft_s.p99  # nested Stat dicts, as before
    flat = m.as_dict(flat=True)
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        for stat in ("mean", "p50", "p90", "p99", "count"):
            assert flat[f"{name}_{stat}"] == getattr(getattr(m, name), stat)
    assert flat["slo_attainment"] == pytest.approx(3 / 7) and flat["slo_ttft_s"] == 1.0
    assert all(v is None or isinstance(v, (int, float, str)) for v in flat.values())
    assert all(type(v) not in (np.float64, np.int64) for v in flat.values())
    json.dumps(flat)
    assert "slo_tpot_s" in summarize(SLO_ROWS, warmup_frac=0, drain_frac=0).as_dict(flat=True)
