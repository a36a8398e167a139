"""results/timeline.py: the Chrome / Perfetto trace of a run's steps, one track per unit."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from test_results_synth import make_does_not_fit, make_run
from tokenstack_sim.errors import InputError
from tokenstack_sim.results import timeline
from tokenstack_sim.results.result import STEP_PARTS

pytestmark = pytest.mark.unit


def _load(tmp_path, run, **kw):
    path = timeline.write_chrome_trace(run, tmp_path / "t.json", **kw)
    return json.loads(path.read_text())


def _track_names(events) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}


def _with_parts(run, extra: dict[str, float]):
    """`run` with extra step parts (share of each step): the other parts shrink so all still sum to the step."""
    names = run.steps.dtype.names
    dtype = run.steps.dtype.descr + [(p, np.float64) for p in extra if p not in names]
    steps = np.zeros(len(run.steps), dtype)
    for f in names:
        steps[f] = run.steps[f]
    dur = steps["end_s"] - steps["start_s"]
    rest = [p for p in STEP_PARTS if p not in extra]
    scale = (1.0 - sum(extra.values())) * dur / sum(steps[p] for p in rest)
    for p in rest:
        steps[p] *= scale
    for p, share in extra.items():
        steps[p] = share * dur
    run.steps = steps
    return run, tuple(dict.fromkeys([*STEP_PARTS, *extra]))


def test_valid_json_and_slices_nest_within_their_step(tmp_path):
    run = make_run(n_steps=30)
    trace = _load(tmp_path, run)
    events = trace["traceEvents"]
    assert {e["ph"] for e in events} == {"M", "X", "C"}
    steps = [e for e in events if e["ph"] == "X" and e["cat"] == "step"]
    parts = [e for e in events if e["ph"] == "X" and e["cat"] != "step"]
    assert len(steps) == 30
    by_step = defaultdict(list)
    for e in parts:
        by_step[e["args"]["step"]].append(e)
    chain = [p.removesuffix("_s") for p in STEP_PARTS]
    for i, s in enumerate(steps):
        assert s["name"] == f"step {i}"
        assert s["ts"] == pytest.approx(run.steps["start_s"][i] * 1e6)
        assert s["dur"] == pytest.approx((run.steps["end_s"][i] - run.steps["start_s"][i]) * 1e6)
        slices = sorted(by_step[i], key=lambda e: e["ts"])
        # nested in their step, end to end, filling it, in chain order
        for e in slices:
            assert s["ts"] - 1e-6 <= e["ts"] and e["ts"] + e["dur"] <= s["ts"] + s["dur"] + 1e-6
        assert sum(e["dur"] for e in slices) == pytest.approx(s["dur"], rel=1e-9)
        assert slices[0]["ts"] == pytest.approx(s["ts"])
        for a, b in zip(slices, slices[1:]):
            assert b["ts"] == pytest.approx(a["ts"] + a["dur"])
        order = [chain.index(e["cat"]) for e in slices]
        assert order == sorted(order)
    # steps without PIM work draw no PIM slices
    assert not any(e["args"]["step"] == 0 and e["cat"] == "attention_pim" for e in parts)
    assert all(e["dur"] > 0 for e in parts)


def test_one_track_per_unit(tmp_path):
    run = make_run(n_steps=5)
    events = _load(tmp_path, run)["traceEvents"]
    names = _track_names(events)
    expect = ["steps", "GPU compute", "PIM units", "PIM link", "GPU link"]
    if "kv_migration_s" in STEP_PARTS:
        expect.append("DMA")
    assert list(names.values()) == expect + [t for t in timeline.tracks_of(STEP_PARTS) if t not in expect]
    # each part's slices sit on its unit's track
    unit = {"gemm": "GPU compute", "attention_gpu": "GPU compute", "other": "GPU compute",
            "attention_pim": "PIM units", "pim_link": "PIM link", "allreduce": "GPU link", "kv_migration": "DMA"}
    for e in events:
        if e["ph"] == "X" and e["cat"] in unit:
            assert names[e["tid"]] == unit[e["cat"]]


def test_counters(tmp_path):
    run = make_run(n_steps=5)
    events = _load(tmp_path, run)["traceEvents"]
    counters = defaultdict(list)
    for e in events:
        if e["ph"] == "C":
            counters[e["name"]].append(next(iter(e["args"].values())))
    assert counters["batch size"] == run.steps["batch_size"].tolist()
    assert counters["KV blocks in use"] == run.steps["kv_blocks_in_use"].tolist()
    assert counters["waiting requests"] == run.steps["num_waiting"].tolist()


def test_a_dma_part_feeds_the_dma_track_and_an_unknown_part_gets_its_own(tmp_path):
    run, parts = _with_parts(make_run(n_steps=12), {"kv_migration_s": 0.1, "mystery_s": 0.05})
    trace = timeline.chrome_trace(run, parts=parts)
    events = trace["traceEvents"]
    names = _track_names(events)
    assert list(names.values())[-2:] == ["DMA", "mystery"]
    on = defaultdict(list)
    for e in events:
        if e["ph"] == "X" and e["cat"] != "step":
            on[names[e["tid"]]].append(e)
    assert len(on["DMA"]) == 12 and {e["name"] for e in on["DMA"]} == {"KV migration (base-die DMA)"}
    assert len(on["mystery"]) == 12 and {e["name"] for e in on["mystery"]} == {"mystery"}
    # chain order: the new parts come after the known ones, still inside the step
    steps = {e["name"]: e for e in events if e.get("cat") == "step"}
    for e in on["mystery"]:
        s = steps[f"step {e['args']['step']}"]
        assert e["ts"] + e["dur"] == pytest.approx(s["ts"] + s["dur"])
    assert trace["otherData"]["parts"]["mystery_s"] == "mystery"


def test_max_steps_and_window_bound_the_output(tmp_path):
    run = make_run(n_steps=30)
    trace = _load(tmp_path, run, max_steps=7)
    assert sum(1 for e in trace["traceEvents"] if e.get("cat") == "step") == 7
    od = trace["otherData"]
    assert (od["steps_shown"], od["steps_in_window"], od["steps_total"], od["truncated"]) == (7, 30, 30, True)
    t = run.steps["start_s"]
    trace = _load(tmp_path, run, start_s=float(t[10]), end_s=float(t[20]))
    names = [e["name"] for e in trace["traceEvents"] if e.get("cat") == "step"]
    assert names == [f"step {i}" for i in range(10, 20)]
    assert trace["otherData"]["first_step"] == 10 and not trace["otherData"]["truncated"]
    trace = _load(tmp_path, run, max_steps=3, start_s=float(t[10]))
    assert [e["name"] for e in trace["traceEvents"] if e.get("cat") == "step"] == ["step 10", "step 11", "step 12"]
    assert trace["otherData"]["steps_in_window"] == 20
    # 0 means no cap
    assert _load(tmp_path, run, max_steps=0)["otherData"]["steps_shown"] == 30


def test_a_long_run_is_capped_by_default_cap(tmp_path):
    run = make_run(n_steps=timeline.DEFAULT_MAX_STEPS + 500)
    path = timeline.write_chrome_trace(run, tmp_path / "t.json", max_steps=timeline.DEFAULT_MAX_STEPS)
    od = json.loads(path.read_text())["otherData"]
    assert od["steps_shown"] == timeline.DEFAULT_MAX_STEPS and od["truncated"]
    assert path.stat().st_size < 2000 * timeline.DEFAULT_MAX_STEPS  # ~1 kB per step


@pytest.mark.parametrize("kw,where", [({"max_steps": -1}, "--max-steps"), ({"start_s": 2.0, "end_s": 1.0}, "--end"),
                                      ({"start_s": 1e6}, "--start"), ({"end_s": float("nan")}, "--end")])
def test_bad_bounds_are_refused_by_option(kw, where):
    with pytest.raises(InputError) as exc:
        timeline.chrome_trace(make_run(n_steps=5), **kw)
    assert exc.value.where == where


def test_does_not_fit_has_no_slices():
    trace = timeline.chrome_trace(make_does_not_fit())
    assert all(e["ph"] == "M" for e in trace["traceEvents"])
    assert "short by" in trace["otherData"]["reason"]


def test_inconsistent_parts_refused():
    run = make_run(n_steps=4)
    run.steps["gemm_s"][2] += 1.0
    with pytest.raises(ValueError, match="step 2"):
        timeline.chrome_trace(run)


def test_every_step_part_has_a_track():
    for p in STEP_PARTS:
        track, name = timeline.unit_of(p)
        assert track and name
    assert {timeline.unit_of(p)[0] for p in ("gemm_s", "attention_gpu_s", "attention_pim_s", "pim_link_s",
                                                "allreduce_s", "other_s", "kv_migration_s")} == set(timeline.UNITS)
