"""results/timeline.py: the Chrome / Perfetto trace of a run's steps."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from test_results_synth import make_does_not_fit, make_run
from tokenstack_sim.results import timeline
from tokenstack_sim.results.result import STEP_PARTS

pytestmark = pytest.mark.unit


def _load(tmp_path, run, **kw):
    path = timeline.write_chrome_trace(run, tmp_path / "t.json", **kw)
    return json.loads(path.read_text())


def test_valid_json_and_parts_fill_each_step(tmp_path):
    run = make_run(n_steps=30)
    trace = _load(tmp_path, run)
    events = trace["traceEvents"]
    assert {e["ph"] for e in events} == {"M", "X", "C"}
    steps = [e for e in events if e["ph"] == "X" and e["cat"] == "step"]
    parts = [e for e in events if e["ph"] == "X" and e["cat"] == "part"]
    assert len(steps) == 30
    by_step = defaultdict(list)
    for e in parts:
        by_step[e["args"]["step"]].append(e)
    for i, s in enumerate(steps):
        assert s["ts"] == pytest.approx(run.steps["start_s"][i] * 1e6)
        assert s["dur"] == pytest.approx((run.steps["end_s"][i] - run.steps["start_s"][i]) * 1e6)
        slices = sorted(by_step[i], key=lambda e: e["ts"])
        assert sum(e["dur"] for e in slices) == pytest.approx(s["dur"], rel=1e-9)
        # consecutive, in chain order, inside the step
        assert slices[0]["ts"] == pytest.approx(s["ts"])
        for a, b in zip(slices, slices[1:]):
            assert b["ts"] == pytest.approx(a["ts"] + a["dur"])
        order = [list(timeline.PART_TRACKS.values()).index(e["name"]) for e in slices]
        assert order == sorted(order)
    # steps without PIM work draw no PIM slices
    assert not any(e["args"]["step"] == 0 and e["name"] == "PIM attention" for e in parts)
    assert all(e["dur"] > 0 for e in parts)


def test_tracks_and_counters(tmp_path):
    run = make_run(n_steps=5)
    events = _load(tmp_path, run)["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"steps", "GPU GEMM", "GPU attention", "PIM attention", "PIM link", "all-reduce", "other"}
    counters = defaultdict(list)
    for e in events:
        if e["ph"] == "C":
            counters[e["name"]].append(next(iter(e["args"].values())))
    assert counters["batch size"] == run.steps["batch_size"].tolist()
    assert counters["KV blocks in use"] == run.steps["kv_blocks_in_use"].tolist()
    assert counters["waiting requests"] == run.steps["num_waiting"].tolist()


def test_max_steps(tmp_path):
    trace = _load(tmp_path, make_run(n_steps=30), max_steps=7)
    assert sum(1 for e in trace["traceEvents"] if e.get("cat") == "step") == 7
    assert trace["otherData"]["steps_shown"] == 7 and trace["otherData"]["steps_total"] == 30


def test_does_not_fit_has_no_slices():
    trace = timeline.chrome_trace(make_does_not_fit())
    assert all(e["ph"] == "M" for e in trace["traceEvents"])
    assert "short by" in trace["otherData"]["reason"]


def test_inconsistent_parts_refused():
    run = make_run(n_steps=4)
    run.steps["gemm_s"][2] += 1.0
    with pytest.raises(ValueError, match="step 2"):
        timeline.chrome_trace(run)


def test_part_tracks_follow_step_parts():
    assert tuple(timeline.PART_TRACKS) == STEP_PARTS
