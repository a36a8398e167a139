"""sim/capacity.py: the SLO capacity search over several seeds per rate, on a stand-in engine.

The engine's run is replaced by a closed form (SLO attainment falls linearly with the rate, shifted per
seed), so the rule (mean attainment over seeds >= target), the 95% CI per probed rate and the bracket can
be checked exactly and fast. The search through the real engine and CLI is in tests/test_serve_cli.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.runtime.metrics import t_quantile
from tokenstack_sim.sim import capacity as cap
from tokenstack_sim.sim.engine import RunSpec

pytestmark = pytest.mark.unit

SHIFT = {0: +0.05, 1: -0.05, 2: 0.0}  # per-seed offset of the attainment; mean over seeds 0-2 is 0


def attainment(qps: float, seed: int) -> float:
    """1 at no load, falling 0.01 per req/s: the mean over seeds 0-2 meets 90% up to exactly 10 req/s."""
    return min(1.0, max(0.0, 1.0 - 0.01 * qps + SHIFT[seed]))


@pytest.fixture
def fake_engine(monkeypatch):
    calls = []

    def run_prepared(prep, spec):
        calls.append((spec.qps, spec.seed))
        return SimpleNamespace(params={"qps": spec.qps, "seed": spec.seed},
                               summary={"slo_attainment": attainment(spec.qps, spec.seed), "requests": 100,
                                        "output_tokens_per_s": 10.0 * spec.qps, "ttft_s_p99": 0.1, "tpot_s_p99": 0.01})

    import tokenstack_sim.sim.engine as engine

    monkeypatch.setattr(engine, "run_prepared", run_prepared)
    return calls


PREP = SimpleNamespace(fits=True, reason="", system=SimpleNamespace(name="sys"),
                       model=SimpleNamespace(config=SimpleNamespace(name="m")))
SPEC = RunSpec("w", duration_s=10.0)


def test_probe_rule_and_its_confidence_interval():
    p = cap.probe(4.0, [0.95, 0.85, 0.92], 0.9)
    mean = (0.95 + 0.85 + 0.92) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in (0.95, 0.85, 0.92)) / 2)
    assert p.qps == 4.0 and p.mean == pytest.approx(mean) and p.passes  # 0.9067 >= 0.9 though one seed fails
    assert p.ci95 == pytest.approx(t_quantile(0.975, 2) * sd / math.sqrt(3))
    assert not cap.probe(4.0, [0.95, 0.80, 0.92], 0.9).passes  # mean 0.89
    one = cap.probe(4.0, [0.93], 0.9)
    assert one.passes and one.ci95 is None  # no interval from one seed
    assert not cap.probe(4.0, [0.99, float("nan")], 0.9).passes  # a seed with no request in the statistics fails


def test_search_uses_the_mean_over_seeds(fake_engine):
    tol = 0.02
    res = cap.capacity_search(PREP, SPEC, qps_start=1.0, tolerance=tol, seeds=3)
    assert res.status == "ok" and res.seeds == 3
    # the mean crosses 90% at 10 req/s exactly
    assert res.capacity_qps <= 10.0 < res.failing_qps <= res.capacity_qps * (1 + tol) * (1 + 1e-12)
    # every probed rate ran seeds 0, 1, 2, and the runs are kept in probe order
    assert len(res.runs) == 3 * len(res.probes) == len(fake_engine)
    for i, p in enumerate(res.probes):
        assert [c[1] for c in fake_engine[3 * i:3 * i + 3]] == [0, 1, 2]
        assert {c[0] for c in fake_engine[3 * i:3 * i + 3]} == {p.qps}
        assert p.attainments == [attainment(p.qps, s) for s in (0, 1, 2)]
        assert p.passes == (p.mean >= 0.9)
        assert p.ci95 is not None and p.ci95 > 0
    assert res.probe_at(res.capacity_qps).passes and not res.probe_at(res.failing_qps).passes


def test_one_seed_follows_that_seed(fake_engine):
    res = cap.capacity_search(PREP, SPEC, qps_start=1.0, tolerance=0.02, seeds=1)
    # seed 0 alone is 0.05 above the mean: it meets 90% up to 15 req/s
    assert res.capacity_qps <= 15.0 < res.failing_qps
    assert all(p.ci95 is None and len(p.attainments) == 1 for p in res.probes)


def test_tables_carry_the_probes_the_ci_and_the_rule(fake_engine):
    import json

    res = cap.capacity_search(PREP, SPEC, qps_start=1.0, tolerance=0.1, seeds=3)
    row, = json.loads(cap.capacity_table([res], "json"))
    p = res.probe_at(res.capacity_qps)
    assert row["seeds"] == 3 and row["slo_attainment_at_capacity"] == pytest.approx(p.mean)
    assert row["slo_attainment_ci95_at_capacity"] == pytest.approx(p.ci95)
    assert row["output_tokens_per_s"] == pytest.approx(10.0 * res.capacity_qps)
    assert [q["qps"] for q in row["probes"]] == [q.qps for q in res.probes]
    assert "mean SLO attainment" in row["rule"]
    md = cap.capacity_table([res])
    assert "SLO met (95% CI)" in md and " ± " in md
    probes = cap.probes_table([res])
    assert len(probes.splitlines()) == 2 + len(res.probes) and "meets SLO" in probes
    assert cap.probes_table([res], "csv").splitlines()[0] == \
        "system,qps,unit,seeds,slo_attainment_mean,slo_attainment_ci95,meets_slo"
    assert "mean SLO attainment over its seeds" in cap.rule_line([res]) and "95%" in cap.rule_line([res])


@pytest.mark.parametrize("seeds", [0, -1, 1.5])
def test_bad_seed_counts_are_refused_by_name(fake_engine, seeds):
    with pytest.raises(InputError, match="seeds") as exc:
        cap.capacity_search(PREP, SPEC, seeds=seeds)
    assert exc.value.where == "--seeds"
    assert not fake_engine
