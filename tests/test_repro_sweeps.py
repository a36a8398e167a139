"""The reproductions' sweep plumbing: specs written from Python, several sweeps through one shared pool,
and SLO-capacity searches whose probes are sweep points.

Tiny real runs: gpu-hbm4 serving Llama-3.1-8B (roofline stream timing, so nothing is characterized),
2 simulated seconds of azure-conv-like per point.
- `spec_text` round-trips through the sweep spec reader (dims, fixed run keys, a [params] list).
- Two sweeps run at once through `SharedLocal(1)` give the same summaries as each run alone by
  `run_sweep`, and a second call runs nothing.
- A capacity search through sweep points equals `capacity_search` run in process on the same seed
  (same probes, same capacity), and searching again runs no point (every probe is found finished).
- The plans: every mode's ablation cell is a grid cell, and `specs` writes loadable specs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenstack_sim.repro.pool import SharedLocal, run_sweeps
from tokenstack_sim.repro.sweep_io import records, spec_text, write_spec
from tokenstack_sim.sweep.runner import run_sweep
from tokenstack_sim.sweep.spec import load_sweep_spec

pytestmark = pytest.mark.unit

RUN = {"duration_s": 2.0, "slo_ttft_s": 2.0, "slo_tpot_s": 0.1}
ENGINE = {"memory_timing": "roofline"}


def _fields(name, qps, **extra):
    return dict(name=name, description="t", systems=["gpu-hbm4"], models=["llama-3.1-8b"],
                workloads=["azure-conv-like"], qps=qps, seeds=[0], run=RUN, engine=ENGINE, **extra)


def test_spec_text_round_trips(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(spec_text(**_fields("x", [1.5, 3.0], params={"gpu_stacks_per_gpu": [4, 8]},
                                     kv={"eviction": "lru"})))
    spec = load_sweep_spec(p)
    assert spec.name == "x" and spec.systems == ("gpu-hbm4",) and spec.seeds == (0,)
    assert spec.run == {"duration_s": 2.0, "slo_ttft_s": 2.0, "slo_tpot_s": 0.1}
    assert spec.dim("qps").values == (1.5, 3.0)
    assert spec.dim("params.gpu_stacks_per_gpu").values == (4, 8)
    assert spec.dim("kv.eviction").values == ("lru",) and spec.dim("engine.memory_timing").values == ("roofline",)


def _summaries(folder):
    return {r["id"]: json.dumps(r["summary"], sort_keys=True) for r in records(folder)}


def test_two_sweeps_through_one_shared_pool_equal_each_run_alone(tmp_path, opcost_cache):
    a = write_spec(tmp_path / "a" / "spec.toml", **_fields("a", [2.0]))
    b = write_spec(tmp_path / "b" / "spec.toml", **_fields("b", [4.0]))
    ex = SharedLocal(1)
    out = run_sweeps([(a, tmp_path / "a"), (b, tmp_path / "b")], ex)
    assert all(o.counts == {"ok": 1} for o in out.values())
    for name, spec in (("a", a), ("b", b)):
        alone = tmp_path / f"{name}-alone"
        run_sweep(load_sweep_spec(tmp_path / name / "spec.toml"), alone)
        assert _summaries(tmp_path / name) == _summaries(alone)
    again = run_sweeps([(a, tmp_path / "a"), (b, tmp_path / "b")], ex)
    assert all(o.skipped == 1 and not o.counts for o in again.values())
    ex.close()


def test_capacity_search_through_sweep_points_equals_the_in_process_search(tmp_path, opcost_cache):
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.repro.sweep_capacity import CapacityTask, search, search_all
    from tokenstack_sim.sim.capacity import capacity_search
    from tokenstack_sim.sim.engine import RunSpec, prepare
    from tokenstack_sim.sim.step_cost import EngineOptions

    run = {**RUN, "duration_s": 1.0, "slo_ttft_s": 0.06}  # a tight TTFT target: capacity ~256-512 req/s
    task = CapacityTask("gpu-hbm4", "llama-3.1-8b", "azure-conv-like", 0, run=run, engine=ENGINE,
                        qps_start=128.0, tolerance=0.5)
    ex = SharedLocal(1)
    folder = tmp_path / "cap"
    res = search_all({folder: task}, ex)[folder]
    assert not isinstance(res, Exception), res
    prep = prepare(load_config("gpu-hbm4", kind="system"), "llama-3.1-8b",
                   options=EngineOptions(memory_timing="roofline"))
    ref = capacity_search(prep, RunSpec("azure-conv-like", qps=128.0, seed=0, **run), qps_start=128.0, tolerance=0.5)
    assert res.status == ref.status and res.capacity_qps == ref.capacity_qps and res.failing_qps == ref.failing_qps
    assert [p.qps for p in res.probes] == [p.qps for p in ref.probes]
    assert [p.mean for p in res.probes] == pytest.approx([p.mean for p in ref.probes])
    files = {str(p): p.stat().st_mtime_ns for p in folder.glob("q*/points/*.h5")}
    assert len(files) == len(res.probes)
    again = search(task, folder, ex)
    assert again.capacity_qps == res.capacity_qps
    assert {str(p): p.stat().st_mtime_ns for p in folder.glob("q*/points/*.h5")} == files  # nothing reran
    ex.close()


def test_a_probe_serves_rate_times_duration_requests():
    from tokenstack_sim.repro.sweep_capacity import CapacityTask, probe_folder
    from tokenstack_sim.repro.tokenstack_plan import MIN_REQUESTS, requests_at

    task = CapacityTask("gpu-hbm4", "m", "w", 0, run={"slo_ttft_s": 1.0}, duration_s=10.0, request_cap=500)
    assert task.run_at(7.25) == {"slo_ttft_s": 1.0, "max_requests": 73}  # ceil(72.5)
    assert task.run_at(100.0)["max_requests"] == 500  # the cap
    assert task.run_at(0.1)["max_requests"] == MIN_REQUESTS
    assert requests_at(3.0, 10.0, 1000) == 30
    assert CapacityTask("s", "m", "w", 0, run={"duration_s": 2.0}).run_at(99.0) == {"duration_s": 2.0}
    assert probe_folder(Path("x"), 11.0625) == Path("x") / "q11.0625"


def test_every_plan_is_consistent_and_writes_loadable_specs(tmp_path):
    from tokenstack_sim.repro import tokenstack_plan as tp

    for plan in tp.PLANS.values():
        tp.check(plan)
        assert set(plan.models) <= set(tp.ALL_MODELS) and set(plan.workloads) <= set(tp.ALL_WORKLOADS)
    tasks = tp.specs(tp.PLANS["quick"], tmp_path)
    names = {f.name for _, f in tasks}
    assert {"grid-azure-conv-like-4x", "attacc-mooncake-conv-like-4x", "ablation-pim-dies", "ablation-eviction"} <= names
    attacc = next(s for s, f in tasks if f.name == "attacc-azure-conv-like-4x")
    assert attacc.dim(f"params.{tp.SPLIT_PARAM}").values == tp.PLANS["quick"].splits
    q = 4.0 * tp.native_rate("azure-conv-like")
    assert attacc.dim("qps").values == (q,)
    assert attacc.run["max_requests"] == tp.requests_at(q, tp.PLANS["quick"].duration_s, tp.PLANS["quick"].request_cap)
