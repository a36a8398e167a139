"""The agent serving loop and runtimes (runtime/agent_loop.py, agent_runtime.py, tokencake.py).

- Dependent arrivals: a call is released when its predecessors are done (a tool's real duration after
  its call; a join after all branches); app makespan is arrival to its last node; the fast path gives
  the same run as step by step.
- vllm: a call after a tool hits its predecessor's prompt+output blocks while memory lasts.
- tokencake, temporal: one long tool call predicted right: the agent's KV leaves GPU memory during the
  call and comes back before the return (no wait, all of it hit); predicted wrong: an early return
  waits exactly the upload time (counted late), a late return holds the uploaded KV (counted early,
  with its block-seconds); mispredictions counted.
- tokencake, spatial: under contention a reserved pool keeps a critical agent's held KV (its next call
  hits all of it); without the reservation, or under vllm, the KV is lost and recomputed.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.runtime.agent_loop import AgentLoop, serve_agents
from tokenstack_sim.runtime.agent_runtime import AgentRuntimeParams
from tokenstack_sim.runtime.kv_transfer import TransferPath
from tokenstack_sim.runtime.params import SchedulerParams
from tokenstack_sim.workload import agents
from tokenstack_sim.workload.agent_apps import instantiate
from tokenstack_sim.workload.tool_time import Fixed
from _cli import tokenstack as _cli  # tests/_cli.py
from _kv_checks import check_tiers_every_step  # tests/_kv_checks.py

pytestmark = pytest.mark.unit

BS = 16


class Cost:
    """10 ms per step plus 10 us per token."""

    def step_time_s(self, batch):
        return 0.01 + 1e-5 * float(batch.new_tokens.sum())


def path(ms_per_block: float = 1.0) -> TransferPath:
    return TransferPath("host", lambda n: n * ms_per_block * 1e-3, 1.0, 1.0, 1)


def chain(tool_s: float, estimate_s: float, *, initial: int = 1000, out: int = 50, name: str = "chain") -> nx.DiGraph:
    g = nx.DiGraph(name=name, initial_tokens=initial, shared_tokens=0)
    g.add_node("a", kind="llm", output_tokens=out, template_tokens=32, importance=1.0)
    g.add_node("t", kind="tool", tool="tool", duration=Fixed(tool_s), estimate_s=estimate_s, result_tokens=32)
    g.add_node("b", kind="llm", output_tokens=out, template_tokens=32, importance=1.0)
    g.add_edges_from([("a", "t"), ("t", "b")])
    agents.check_template(g)
    return g


def run(table, runtime="vllm", blocks=2000, opts=None, fast=True, loop_hook=None, p=None):
    params = SchedulerParams(num_kv_blocks=blocks, block_size=BS)
    rp = AgentRuntimeParams(**(opts or {}))
    loop = AgentLoop(table, params, Cost(), runtime=runtime, runtime_params=rp,
                     path=p or (path() if runtime != "vllm" else None), fast_forward=fast)
    if loop_hook:
        loop_hook(loop)
    res = loop.run()
    return loop, res


def test_release_after_tool_and_join():
    g = nx.DiGraph(name="join", initial_tokens=200, shared_tokens=0)
    for v in ("a", "b", "c", "d"):
        g.add_node(v, kind="llm", output_tokens=20, template_tokens=16, importance=0.0)
    g.add_node("t1", kind="tool", tool="x", duration=Fixed(3.0), estimate_s=3.0, result_tokens=16)
    g.add_node("t2", kind="tool", tool="x", duration=Fixed(7.0), estimate_s=7.0, result_tokens=16)
    g.add_edges_from([("a", "t1"), ("a", "t2"), ("t1", "b"), ("t2", "c"), ("b", "d"), ("c", "d")])
    t = instantiate(g, 2, 0.05, seed=0, arrival="even")
    loop, res = run(t)
    req, d = res.requests, t.dag
    name = {int(d.request[i]): d.names[i] for i in range(d.n_nodes) if d.kind[i] == 0}
    by = {(int(t.rows["app_id"][r]), name[r]): r for r in range(len(t))}
    for app in (0, 1):
        a, b, c, dd = (by[(app, v)] for v in "abcd")
        assert req["arrival_s"][a] == pytest.approx(d.app_arrival_s[app])
        assert req["arrival_s"][b] == pytest.approx(req["finish_s"][a] + 3.0)
        assert req["arrival_s"][c] == pytest.approx(req["finish_s"][a] + 7.0)
        assert req["arrival_s"][dd] == pytest.approx(max(req["finish_s"][b], req["finish_s"][c]))
        assert loop.app_done_s[app] == pytest.approx(req["finish_s"][dd])
    mk = loop.app_done_s - d.app_arrival_s
    agent = res.counters["agent"]
    assert agent["app_makespan_mean_s"] == pytest.approx(mk.mean())
    assert agent["app_makespan_max_s"] == pytest.approx(mk.max())


def test_fast_path_is_exact():
    t = instantiate(agents.codewriter(initial_tokens=600, template_tokens=32), 3, 0.5, seed=1)
    for rt in ("vllm", "tokencake"):
        _, slow = run(t, rt, blocks=1500, fast=False)
        _, fast = run(t, rt, blocks=1500, fast=True)
        for f in slow.requests.dtype.names:
            np.testing.assert_array_equal(fast.requests[f], slow.requests[f], err_msg=f"{rt} {f}")
        for f in slow.steps.dtype.names:
            np.testing.assert_allclose(fast.steps[f], slow.steps[f], rtol=1e-12, err_msg=f"{rt} {f}")
        assert fast.counters["agent"] == pytest.approx(slow.counters["agent"])


def test_vllm_successor_hits_predecessor_output():
    t = instantiate(chain(5.0, 5.0), 1, 1.0, seed=0)
    _, res = run(t)
    a, b = 0, 1
    full = (t.rows["input_tokens"][a] + t.rows["output_tokens"][a] - 1) // BS * BS  # computed full blocks
    assert res.requests["prefix_hit_tokens"][b] == full


def with_flood(g: nx.DiGraph):
    """The app of `g` at 0 s, then at 2 s a one-token call with a 1,800-token prompt that, in a 130-block
    pool, evicts most of the first app's KV left in the prefix cache."""
    flood = nx.DiGraph(name="flood", initial_tokens=1800, shared_tokens=0)
    flood.add_node("f", kind="llm", output_tokens=1, template_tokens=32, importance=0.0)
    graphs = iter([g, flood])
    return instantiate(lambda rng: next(graphs), 2, 0.5, seed=0, arrival="even")


FLOOD_BLOCKS = 130


def _stall_probe(loop, when_s, out):
    """Record pool use and pins at an absolute time."""
    def probe(t):
        store = getattr(loop.rt, "store", None)
        out.update(in_use=loop.sched.pool.num_in_use, pins=loop.pins.total, t=t,
                   stored=len(store) if store is not None else 0)
    loop.call_at(when_s, probe)


def test_right_prediction_frees_memory_and_uploads_in_time():
    t = with_flood(chain(30.0, 30.0))
    seen = {}
    loop, res = run(t, "tokencake", blocks=FLOOD_BLOCKS, opts={"offload_gain": 0.0, "spatial": False},
                    loop_hook=lambda lp: _stall_probe(lp, 15.0, seen))
    c = res.counters["agent"]
    assert c["offloads"] == 1 and c["uploads"] == 1 and c["upload_bytes"] > 0  # evicted, then copied back
    assert seen["in_use"] == 0 and seen["pins"] == 0 and seen["stored"] > 0  # freed during the call
    assert c["late_uploads"] == 0 and c["early_uploads"] == 0 and c["mispredictions"] == 0
    assert c["upload_wait_s"] == 0.0
    req = res.requests
    assert req["arrival_s"][1] == pytest.approx(req["finish_s"][0] + 30.0)  # admitted at the return
    full = (t.rows["input_tokens"][0] + t.rows["output_tokens"][0] - 1) // BS * BS
    assert req["prefix_hit_tokens"][1] == full  # all of the agent's KV came back in time


def test_early_return_waits_the_upload_and_is_counted():
    t = with_flood(chain(5.0, 30.0))  # returns 25 s before the prediction, after the flood evicted its KV
    loop, res = run(t, "tokencake", blocks=FLOOD_BLOCKS, opts={"offload_gain": 0.0, "spatial": False},
                    p=path(2.0))
    c = res.counters["agent"]
    n = (t.rows["input_tokens"][0] + t.rows["output_tokens"][0] - 1) // BS
    assert c["mispredictions"] == 1 and c["late_uploads"] == 1 and c["early_uploads"] == 0
    assert c["uploads"] == 0 and c["loaded_blocks"] > 0  # nothing uploaded ahead: loaded when asked for
    assert c["upload_wait_s"] == 0.0 and c["kv_away_at_return"] == 0
    assert c["load_wait_s"] == pytest.approx(c["loaded_blocks"] * 2e-3)  # exactly the copy of what was lost
    req = res.requests
    b = 1 if t.rows["app_id"][1] == 0 else 2
    assert req["prefix_hit_tokens"][b] == n * BS
    assert req["first_token_s"][b] - req["arrival_s"][b] > c["load_wait_s"]  # the wait is in its TTFT


def test_late_return_holds_memory_and_is_counted():
    t = instantiate(chain(30.0, 10.0), 1, 1.0, seed=0)  # returns 20 s after the prediction
    loop, res = run(t, "tokencake", opts={"offload_gain": 0.0, "spatial": False, "upload_margin_s": 0.0})
    c = res.counters["agent"]
    n = (t.rows["input_tokens"][0] + t.rows["output_tokens"][0] - 1) // BS
    assert c["mispredictions"] == 1 and c["early_uploads"] == 1 and c["late_uploads"] == 0
    assert c["early_held_block_s"] == pytest.approx(n * 20.0, rel=0.02)
    assert res.requests["prefix_hit_tokens"][1] == n * BS


def _contention_table():
    """App 0: a critical agent a -> 20 s tool -> b. Apps 1..: a short call x (critical) and a long-prompt
    call z with 30 s of slack (non-critical) each, arriving during app 0's tool."""
    flood = nx.DiGraph(name="flood", initial_tokens=100, shared_tokens=0)
    flood.add_node("x", kind="llm", output_tokens=10, template_tokens=16, importance=0.0)
    flood.add_node("w", kind="tool", tool="wait", duration=Fixed(40.0), estimate_s=40.0, result_tokens=0)
    flood.add_node("y", kind="llm", output_tokens=10, template_tokens=16, importance=0.0)
    flood.add_node("z", kind="llm", output_tokens=200, template_tokens=1400, importance=0.0)
    flood.add_edges_from([("x", "w"), ("w", "y"), ("x", "z")])
    agents.check_template(flood)
    first = chain(20.0, 20.0, initial=1200, out=100)
    graphs = iter([first] + [flood] * 12)
    return instantiate(lambda rng: next(graphs), 13, 1.0, seed=0, arrival="even")


@pytest.mark.parametrize("runtime,opts,keeps", [
    ("tokencake", {"offload_gain": 1e9, "reserve_share": 0.5}, True),
    ("tokencake", {"offload_gain": 1e9, "reserve_share": 0.0}, False),
    ("vllm", {}, False),
])
def test_reserved_pool_keeps_critical_kv(runtime, opts, keeps):
    t = _contention_table()
    loop, res = run(t, runtime, blocks=300, opts=opts)
    a, b = 0, 1  # app 0's two calls
    full = (t.rows["input_tokens"][a] + t.rows["output_tokens"][a] - 1) // BS * BS
    hit = res.requests["prefix_hit_tokens"][b]
    assert (hit == full) == keeps, (hit, full)
    if runtime == "tokencake":
        c = res.counters["agent"]
        assert c["dropped_under_pressure"] >= 1  # contention was real: someone's held KV went


def test_errors_name_the_option():
    t = instantiate(chain(1.0, 1.0), 1, 1.0)
    with pytest.raises(InputError, match="unknown runtime") as e:
        run(t, "nope")
    assert e.value.where == "--runtime"
    from tokenstack_sim.config.schema import build
    with pytest.raises(InputError) as e:
        build(AgentRuntimeParams, {"offload_target": "disk"})
    assert e.value.where == "offload_target"
    with pytest.raises(InputError, match="agent workload"):
        from tokenstack_sim.workload.source import load_workload
        serve_agents(load_workload("azure-conv-like", max_requests=3), SchedulerParams(num_kv_blocks=100), Cost())


def test_cli_runtimes(capsys, tmp_path):
    base = ("run", "h100-tokencake", "--model", "qwen2.5-14b", "--memory-timing", "roofline",
            "--workload", "codewriter-like", "--qps", "1", "--requests", "1", "--warmup", "0", "--drain", "0")
    code, out, err = _cli(capsys, *base, "--runtime", "vllm", "--runtime", "tokencake", "--format", "csv",
                          "--out", tmp_path / "r.h5")
    assert code == 0, err
    assert "makespan mean s" in out and ",tokencake," in out and ",vllm," in out
    from tokenstack_sim.results.h5 import read_runs

    runs = read_runs(tmp_path / "r.h5")
    assert [r.params.get("runtime", "vllm") for r in runs] == ["vllm", "tokencake"]
    assert runs[1].summary["apps"] == 1 and runs[1].summary["app_makespan_mean_s"] > 0
    for extra, where in ((("--runtime", "nope"), "--runtime"), (("--runtime-opt", "reserve_share=2"), "--runtime-opt")):
        code, out, err = _cli(capsys, *base, *extra)
        assert code == 2 and err.startswith(f"error: {where}:"), err
    code, out, err = _cli(capsys, "run", "h100-tokencake", "--model", "qwen2.5-14b", "--memory-timing", "roofline",
                          "--workload", "azure-conv-like", "--requests", "2", "--runtime", "tokencake")
    assert code == 2 and "serves agent workloads" in err and err.startswith("error: --runtime:")


def test_tokenstack_offload_to_capacity_keeps_tiers_consistent(opcost_cache, monkeypatch):
    """TokenCake on tokenstack-hbm4 offloading to the capacity layers (base-die DMA): the tiers stay
    consistent at every step while agents' KV is pinned, offloaded and uploaded (TieredKv.check), the
    offload path is the capacity tier, and every call runs to its budget."""
    from tokenstack_sim.sim.engine import RunSpec, prepare, run_prepared
    from tokenstack_sim.sim.step_cost import EngineOptions

    checks = check_tiers_every_step(monkeypatch)
    t = instantiate(agents.codewriter(initial_tokens=800, template_tokens=64), 4, 2.0, seed=3)
    prep = prepare("tokenstack-hbm4", "llama-3.1-8b", options=EngineOptions(memory_timing="roofline"), kv_blocks=700)
    spec = RunSpec("codewriter-like", warmup_frac=0.0, drain_frac=0.0, kv_blocks=700, runtime="tokencake",
                   runtime_options={"offload_gain": 0.0})
    res = run_prepared(prep, spec, table=t)
    prep.step_model.kv.check()
    s = res.summary
    assert checks and s["output_tokens"] == int(t.rows["output_tokens"].sum())
    assert s["offloads"] > 0 and s["offload_bytes"] > 0
    # INT8 in the capacity layers: half an FP16 block plus one scale per 32 elements, per GPU, x 8 GPUs
    sm = prep.step_model
    n = s["offload_bytes"] / (sm.block_bytes * sm.capacity_ratio * 8)
    assert sm.capacity_ratio < 1 and n == pytest.approx(round(n), abs=1e-6)
    assert res.params["runtime"] == "tokencake"


@pytest.mark.parametrize("runtime", ["vllm", "vllm-offload", "tokencake"])
def test_presets_finish_under_memory_pressure(runtime):
    """Every preset finishes under every runtime in a pool a few calls wide (a 29k-token Deep-Research join
    once lost its prefill to loads again and again): all calls run to their budgets, apps end."""
    for factory in (agents.deep_research, lambda: agents.random_dag(np.random.default_rng(5))):
        t = instantiate(factory(), 3, 0.5, seed=2)
        need = int((-(-(t.rows["input_tokens"] + t.rows["output_tokens"]) // BS)).max())
        loop, res = run(t, runtime, blocks=need + 200)
        assert (res.requests["output_tokens"] == t.rows["output_tokens"]).all()
        assert np.isfinite(loop.app_done_s).all()


def test_noisy_predictions_are_mispredicted_and_seeded():
    """prediction_error > 0: the temporal scheduler's predictions are off by a lognormal factor, drawn from
    the workload's seed, so returns are counted as mispredictions (late or early, with their cost)."""
    t = instantiate(chain(30.0, 30.0), 4, 0.05, seed=7, arrival="even")
    opts = {"offload_gain": 0.0, "spatial": False}
    _, exact = run(t, "tokencake", opts=opts)
    assert exact.counters["agent"]["mispredictions"] == 0
    _, noisy = run(t, "tokencake", opts=opts | {"prediction_error": 0.5})
    _, again = run(t, "tokencake", opts=opts | {"prediction_error": 0.5})
    c = noisy.counters["agent"]
    assert c["mispredictions"] == 4  # every return is off its (noisy) prediction by more than 0.1 s
    assert c["late_uploads"] + c["early_uploads"] >= 1
    assert c["early_uploads"] == 0 or c["early_held_block_s"] > 0
    assert again.counters["agent"] == pytest.approx(c)


def test_app_slo_attainment():
    t = instantiate(chain(30.0, 30.0), 2, 0.05, seed=0, arrival="even")
    loop, res = run(t, opts={"slo_makespan_s": 1000.0})
    assert res.counters["agent"]["app_slo_attainment"] == 1.0
    mk = loop.app_done_s - t.dag.app_arrival_s
    cut = float(mk.mean())  # between the two makespans when they differ
    _, res = run(t, opts={"slo_makespan_s": 1.0})
    assert res.counters["agent"]["app_slo_attainment"] == 0.0
    _, res = run(t, opts={"slo_makespan_s": cut})
    assert res.counters["agent"]["app_slo_attainment"] == pytest.approx(float(np.mean(mk <= cut)))
    _, res = run(t)
    assert "app_slo_attainment" not in res.counters["agent"]


def test_store_without_room_is_not_used():
    """A store medium with room for fewer blocks than a stalled agent holds (a capacity tier the pool
    fills) takes no offload: the KV stays held."""
    t = with_flood(chain(30.0, 30.0))
    small = path()
    small.max_store_blocks = 1
    _, res = run(t, "tokencake", blocks=FLOOD_BLOCKS, opts={"offload_gain": 0.0, "spatial": False}, p=small)
    c = res.counters["agent"]
    assert c["store_blocks"] == 1 and c["offloads"] == 0 and c["offload_bytes"] == 0


def test_host_offload_energy_is_charged():
    """Host offloads and uploads: their bytes cross the host link (its pJ/bit, in the run's energy by
    component) and are read from / written into the GPU's stacks, in the step action vectors."""
    from tokenstack_sim.hw.link import link_energy_pj
    from tokenstack_sim.sim.engine import RunSpec, prepare, run_prepared
    from tokenstack_sim.sim.step_cost import EngineOptions

    t = instantiate(agents.codewriter(initial_tokens=800, template_tokens=64), 3, 2.0, seed=3)
    prep = prepare("h100-tokencake", "qwen2.5-14b", options=EngineOptions(memory_timing="roofline"), kv_blocks=600)
    spec = RunSpec("codewriter-like", warmup_frac=0.0, drain_frac=0.0, kv_blocks=600, runtime="tokencake",
                   runtime_options={"offload_gain": 0.0})
    res = run_prepared(prep, spec, table=t)
    s = res.summary
    moved = s["offload_bytes"] + s["upload_bytes"]
    assert s["offloads"] > 0 and moved > 0
    assert float(res.actions["host_link"]["link_bytes"].sum()) == pytest.approx(moved)
    e_host = float(link_energy_pj(prep.system.host_link, moved)) * 1e-12
    assert sum(res.energy_pj["host_link"].values()) * 1e-12 == pytest.approx(e_host)
    assert s["transfer_energy_j_host_link"] == pytest.approx(e_host)
    assert s["transfer_energy_j_gpu_stacks"] > 0  # the stacks' side of the copies
    assert s["energy_j_links"] == pytest.approx(e_host)  # one GPU: no GPU-link energy otherwise
    base = run_prepared(prep, RunSpec("codewriter-like", warmup_frac=0.0, drain_frac=0.0, kv_blocks=600), table=t)
    assert "host_link" not in base.energy_pj and float(base.actions["host_link"]["link_bytes"].sum()) == 0


def test_capacity_store_is_the_tiers_free_room():
    """On TokenStack the capacity-tier store gets the tier's stored-format slots the pool does not own:
    none when the pool is the system's own (auto then offloads to the host, capacity is refused)."""
    from tokenstack_sim.runtime.kv_transfer import capacity_store_blocks, choose_path
    from tokenstack_sim.sim.engine import prepare, tiered_kv
    from tokenstack_sim.sim.step_cost import EngineOptions

    o = EngineOptions(memory_timing="roofline")
    own = prepare("tokenstack-hbm4", "llama-3.1-8b", options=o, bind=False)
    kv = tiered_kv(own, 1)
    assert capacity_store_blocks(own, kv.C) == 0
    sm = own.step_model
    assert choose_path("auto", own.system, sm, sm.block_bytes, 0).name == "host"
    with pytest.raises(InputError, match="no room") as e:
        choose_path("capacity", own.system, sm, sm.block_bytes, 0)
    assert e.value.where == "offload_target"
    small = prepare("tokenstack-hbm4", "llama-3.1-8b", options=o, kv_blocks=700, bind=False)
    kv_small = tiered_kv(small, 1)
    free = capacity_store_blocks(small, kv_small.C)
    assert free == kv.C - kv_small.C > 0  # the tier's slots less the small pool's share of them


def test_json_output_is_one_document(capsys):
    import json

    code, out, err = _cli(capsys, "run", "h100-tokencake", "--model", "qwen2.5-14b", "--memory-timing", "roofline",
                          "--workload", "codewriter-like", "--qps", "1", "--requests", "1", "--warmup", "0",
                          "--drain", "0", "--runtime", "vllm", "--runtime", "tokencake", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"runs", "agent_apps"} and len(doc["runs"]) == len(doc["agent_apps"]) == 2
    assert [r["runtime"] for r in doc["agent_apps"]] == ["vllm", "tokencake"]


def test_capacity_runtime_options_are_checked(capsys):
    base = ("capacity", "h100-tokencake", "--model", "qwen2.5-14b", "--requests", "2")
    code, _, err = _cli(capsys, *base, "--workload", "azure-conv-like", "--slo-makespan", "100s")
    assert code == 2 and err.startswith("error: --slo-makespan:"), err
    code, _, err = _cli(capsys, *base, "--workload", "codewriter-like", "--slo-makespan", "soon")
    assert code == 2 and err.startswith("error: --slo-makespan:"), err
    code, _, err = _cli(capsys, *base, "--workload", "codewriter-like", "--runtime", "nope")
    assert code == 2 and err.startswith("error: --runtime:"), err


def test_capacity_search_on_app_slo_attainment():
    """capacity_search(metric=...) applies the rule to the named summary key (agent apps: the share of
    apps meeting the makespan SLO)."""
    from types import SimpleNamespace

    from tokenstack_sim.sim.capacity import capacity_search
    from tokenstack_sim.sim.engine import RunSpec

    prep = SimpleNamespace(fits=True, system=SimpleNamespace(name="s"), model=SimpleNamespace(config=SimpleNamespace(name="m")))
    spec = RunSpec("codewriter-like", max_requests=4, runtime="tokencake", runtime_options={"slo_makespan_s": 100.0})

    def serve(qps, seeds):  # apps meet the SLO up to 0.3 apps/s; the calls' SLO would always pass
        return [SimpleNamespace(params={"qps": qps}, summary={"app_slo_attainment": 1.0 if qps <= 0.3 else 0.5,
                                                                "slo_attainment": 1.0}) for _ in seeds]

    res = capacity_search(prep, spec, qps_start=1.0, tolerance=0.05, serve=serve, metric="app_slo_attainment")
    assert res.status == "ok" and res.capacity_qps <= 0.3 < res.failing_qps and res.failing_qps / res.capacity_qps <= 1.05


def test_vllm_hold_stalled_keeps_kv_until_pressure():
    """vllm with hold_stalled: a stalled agent's KV stays pinned during its tool call (its next call hits all
    of it); when a waiting call cannot fit beside it and nothing runs, the stall lets go."""
    t = instantiate(chain(30.0, 30.0), 1, 1.0, seed=0)
    seen = {}
    loop, res = run(t, "vllm", opts={"hold_stalled": True}, loop_hook=lambda lp: _stall_probe(lp, 15.0, seen))
    n = (t.rows["input_tokens"][0] + t.rows["output_tokens"][0] - 1) // BS
    assert seen["pins"] == n and loop.pins.total == 0  # held during the call, released at its end
    assert res.requests["prefix_hit_tokens"][1] == n * BS
    c = res.counters["agent"]
    assert c["stalls_held"] == 1 and c["stalls_let_go"] == 0
    flood = with_flood(chain(30.0, 30.0))
    _, res = run(flood, "vllm", blocks=FLOOD_BLOCKS, opts={"hold_stalled": True})
    assert res.counters["agent"]["stalls_let_go"] == 1
    assert (res.requests["output_tokens"] == flood.rows["output_tokens"]).all()
