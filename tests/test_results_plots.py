"""results/plots.py: each plot writes a PNG atomically and returns its path."""

from __future__ import annotations

import struct

import pytest

from test_results_synth import make_does_not_fit, make_run
from tokenstack_sim.results import plots

pytestmark = pytest.mark.unit


def _runs():
    return [make_run(system=sy, qps=q, seed=s) for sy in ("tokenstack-hbm4", "gpu-hbm4")
            for q in (1.0, 2.0, 4.0) for s in range(2)] + [make_does_not_fit()]


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("fn", [plots.throughput_vs_qps, plots.latency_cdfs, plots.energy_breakdown,
                                plots.kv_blocks_over_time])
def test_each_plot_writes_a_png(tmp_path, fn):
    out = fn(_runs(), tmp_path / "sub" / "p.png")
    assert out == tmp_path / "sub" / "p.png"
    w, h = _png_size(out)
    assert w > 300 and h > 200
    assert [p.name for p in out.parent.iterdir()] == ["p.png"]  # no temporary left behind


def test_no_ok_run_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no run"):
        plots.latency_cdfs([make_does_not_fit()], tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_energy_per_token_sums_to_summary():
    run = make_run()
    mj = plots.energy_per_token_mj(run)
    assert sum(mj.values()) == pytest.approx(run.summary["energy_per_output_token_j"] * 1e3)
    assert mj[("gpu", "static")] == pytest.approx(2.0e11 * 1e-9 / run.summary["output_tokens"])


def test_energy_segments_merged(tmp_path):
    out = plots.energy_breakdown([make_run()], tmp_path / "e.png", max_segments=3)
    assert _png_size(out)[0] > 300


def test_bad_metric(tmp_path):
    with pytest.raises(ValueError, match="metric"):
        plots.throughput_vs_qps(_runs(), tmp_path / "p.png", metric="ttft")
