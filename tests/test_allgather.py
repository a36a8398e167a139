"""All-Gather round workloads (workload/allgather.py) and the pic / tokendance runtimes (runtime/collective.py)."""

import numpy as np
import pytest

from _cli import tokenstack  # tests/_cli.py
from tokenstack_sim.errors import InputError
from tokenstack_sim.runtime.collective import (ChunkKeys, DiffStore, RoundPlan, recompute_tokens, round_metrics,
                                               round_rows, round_storage)
from tokenstack_sim.workload.allgather import AllGatherParams, build, load_allgather


def small(agents=5, rounds=3, **kw):
    base = dict(agents=agents, rounds=rounds, shared_tokens=64, persona_tokens=(100, 200), output_tokens=(40, 120),
                template_tokens=32)
    base.update(kw)
    return build(AllGatherParams(**base), seed=3)


@pytest.fixture(scope="module")
def prep():
    from tokenstack_sim.sim.engine import prepare
    from tokenstack_sim.sim.step_cost import EngineOptions

    return prepare("h100-tokencake", "qwen2.5-14b", options=EngineOptions(memory_timing="roofline"))


def serve(prep, table, runtime, kv_blocks=None):
    from tokenstack_sim.runtime.agent_loop import AgentLoop
    from tokenstack_sim.runtime.agent_runtime import AgentRuntimeParams
    from tokenstack_sim.runtime.params import SchedulerParams
    from tokenstack_sim.sim.step_cost import StepRecords

    sm = prep.step_model
    sm.records = StepRecords()
    sm.kv = None
    sp = SchedulerParams(num_kv_blocks=kv_blocks or 4000, **prep.scheduler)
    loop = AgentLoop(table, sp, sm, runtime=runtime, runtime_params=AgentRuntimeParams())
    return loop, loop.run()


def test_prompt_layout_and_barrier_graph():
    t = small()
    ag, dag = t.ag, t.dag
    n = 5
    for r in range(len(t)):
        a, rd = int(ag.agent[r]), int(ag.round[r])
        assert t.rows["input_tokens"][r] == ag.hist_tokens[r] + ag.region_tokens[r] + ag.template_tokens[r]
        assert ag.hist_tokens[r] % 16 == 0 and ag.region_tokens[r] % 16 == 0  # block-aligned outputs
        if rd == 0:
            assert ag.region_tokens[r] == 0 and t.rows["parent_id"][r] == -1
        else:
            src = ag.chunks(r)
            assert src[0] == ag.prev[r]  # its own newest output first, then every other agent's
            assert sorted(ag.agent[src[1:]].tolist()) == [v for v in range(n) if v != a]
            assert (ag.round[src] == rd - 1).all()
    # round t's calls wait on one barrier that waits on every call of round t-1
    for rd in (1, 2):
        for r in ag.round_calls[rd].tolist():
            (b,) = dag.preds(int(dag.request_node[r])).tolist()
            assert dag.kind[b] == 1 and dag.duration_s[b] == 0
            assert sorted(dag.request[dag.preds(b)].tolist()) == ag.round_calls[rd - 1].tolist()


def test_neighbours_and_shuffle():
    t = build(AllGatherParams(agents=40, rounds=2, visible=6, rewire_p=0.2, order="shuffle"), seed=1)
    for a, nb in enumerate(t.ag.neighbours):
        assert len(nb) == 6 and a not in nb.tolist()
    same = build(AllGatherParams(agents=40, rounds=2, visible=6, rewire_p=0.2, order="shuffle"), seed=1)
    assert np.array_equal(t.ag.chunk_src, same.ag.chunk_src)


def test_bad_inputs_are_input_errors():
    with pytest.raises(InputError, match="--requests"):
        load_allgather("generative-agents-like", qps=2.0)
    with pytest.raises(InputError, match="order"):
        AllGatherParams(agents=4, rounds=2, order="random")
    with pytest.raises(InputError, match="block"):
        ChunkKeys(small().ag, 32, 0.15)  # outputs padded to 16 tokens do not fill 32-token blocks


def test_selection_rule_diffs_at_boundaries():
    """Shared order, every agent visible: agent a's chunks differ from the master's only where their
    predecessor does (its own output after its history, the first output after it, the one after the
    gap where its own output would be); the diff recompute is those chunks' leading tokens."""
    t = small()
    keys = ChunkKeys(t.ag, 16, 0.15)
    plan = RoundPlan(keys, 1)
    n_rec = recompute_tokens(t.ag.out_tokens, 0.15)
    assert n_rec.tolist() == np.ceil(0.15 * t.ag.out_tokens).astype(int).tolist()
    prod = t.ag.round_calls[0]
    for r in plan.calls.tolist():
        a = int(t.ag.agent[r])
        boundary = {a, 0 if a != 0 else 1}  # own; first of the others (master's first follows the start)
        if 0 < a < 4:
            boundary.add(a + 1)  # after the gap
        if a == 0:
            boundary = {0}  # [0, 1, 2, 3, 4]: only its own output follows its history
        assert plan.diff_recompute[r] == int(n_rec[prod[sorted(boundary)]].sum())
        assert plan.pic_recompute[r] == int(n_rec[prod].sum())  # pic recomputes every chunk, per request


def test_diff_store_exact_and_restores_block_tables():
    t = small(agents=6, order="shuffle")
    plan = RoundPlan(ChunkKeys(t.ag, 16, 0.15), 2)
    store = DiffStore(plan.master)
    for r, keys in plan.region.items():
        store.add(r, keys)
    assert store.stored_blocks == len(plan.master) + sum(len(d) for d in store.diffs.values())
    assert store.logical_blocks == sum(len(k) for k in plan.region.values())
    in_master = set(plan.master)
    for r, keys in plan.region.items():
        assert store.restore(r) == keys  # bit-identical block table
        assert store.diffs[r] == [k for k in keys if k not in in_master]
    assert store.compression() > 1


def test_tokendance_run_block_tables_are_master_plus_diffs(prep):
    """In a served run, each call's R blocks (the scheduler's block table at admission) are the pool
    blocks of the DiffStore's restore: master blocks shared, diffs its own."""
    t = small(agents=6)
    from tokenstack_sim.runtime import collective

    seen = {}
    orig = collective._ReuseRuntime.admitted

    def spy(self, rs, tm):
        for r in rs:
            if t.ag.round[r] >= 1 and int(t.ag.round[r]) in self.stores:
                h0 = self.hist_blocks(r)
                nb = int(t.ag.region_tokens[r]) // self.bs
                table = self.sched.block_tables[r][h0:h0 + nb]
                keys = self.stores[int(t.ag.round[r])].restore(r)
                seen[r] = (table, [self.pool._cached[k] for k in keys])
        orig(self, rs, tm)

    collective._ReuseRuntime.admitted = spy
    try:
        loop, res = serve(prep, t, "tokendance")
    finally:
        collective._ReuseRuntime.admitted = orig
    assert len(seen) == 12
    for table, restored in seen.values():
        assert table == restored
    c = res.counters["agent"]
    assert c["stored_region_blocks"] == c["master_blocks"] + c["diff_blocks"]
    assert c["fallback_calls"] == 0 and c["compression"] > 1


def test_round_barrier_semantics(prep):
    t = small(agents=4, rounds=3)
    loop, res = serve(prep, t, "vllm")
    req = res.requests
    for rd in (1, 2):
        prev_end = float(req["finish_s"][t.ag.round_calls[rd - 1]].max())
        calls = t.ag.round_calls[rd]
        assert np.allclose(req["arrival_s"][calls], prev_end)  # released when the last agent finished
        assert (req["first_token_s"][calls] > prev_end).all()
    m = round_metrics(t, req)
    assert m["round_prefill_s"] > 0 and m["round_span_s"] >= m["round_prefill_s"]


def test_collective_cost_grows_slower_than_pic(prep):
    """The reuse work the engine charges per round, tokendance vs pic, as agents grow (same round
    structure, a pool large enough that nothing falls back)."""
    cost = {}
    for rt in ("pic", "tokendance"):
        for n in (4, 8, 16):
            t = small(agents=n, rounds=2)
            _, res = serve(prep, t, rt, kv_blocks=20000)
            c = res.counters["agent"]
            assert c["fallback_calls"] == 0 and c["reuse_step_s"] > 0
            cost[rt, n] = (c["reuse_step_s"], c["recompute_tokens"])
    for n in (4, 8, 16):
        assert cost["tokendance", n][1] < cost["pic", n][1]
    growth_td = cost["tokendance", 16][1] / cost["tokendance", 4][1]
    growth_pic = cost["pic", 16][1] / cost["pic", 4][1]
    assert growth_td < growth_pic  # pic: every agent recomputes every chunk (~n^2); tokendance: boundaries
    assert cost["tokendance", 16][0] < cost["pic", 16][0]


def test_charged_step_is_the_step_model_difference(prep):
    """ChargingCost adds StepModel.step(batch + reuse tokens) - step(batch) + the correction stream."""
    from tokenstack_sim.runtime.collective import ChargingCost
    from tokenstack_sim.runtime.scheduler import Batch
    from tokenstack_sim.sim.step_cost import StepRecords

    sm = prep.step_model
    sm.records = StepRecords()
    sm.kv = None

    class Rt:
        stream_tier = sm.weight_tier
        c = {"reuse_step_s": 0.0}

        def take_charge(self, batch):
            return np.array([300]), np.array([2000]), 1e6

    b = Batch(np.array([0]), np.array([1]), np.array([500]), np.array([True]), 0, 0, 10, 1, 0)
    plain = float(sm.step_time_s(b))
    charged = ChargingCost(sm, Rt()).step_time_s(b)
    t0 = sm.step(np.array([1]), np.array([500]), np.array([True]), 10)[0]
    t1 = sm.step(np.array([1, 300]), np.array([500, 2000]), np.array([True, False]), 10)[0]
    stream = 2 * 1e6 / (sm.system.gpu_bw_GBps * 1e9 * sm._eta_bw)
    assert charged == pytest.approx(plain + (t1 - t0) + stream, rel=1e-9)
    assert sm.records.parts[-1].sum() > sm.records.parts[-2].sum()  # recorded in the step's parts


def test_storage_counts(prep):
    t = small(agents=8)
    priv = round_storage(t, 16, "private")
    td = round_storage(t, 16, "tokendance")
    assert priv[0] == td[0]  # round 0 reuses nothing
    assert all(d["blocks"] < p["blocks"] for p, d in zip(priv[1:], td[1:]))


def test_cli_runs_allgather(capsys):
    code, out, err = tokenstack(capsys, "run", "h100-tokencake", "--model", "qwen2.5-14b", "--workload",
                                "generative-agents-like", "--requests", "4", "--runtime", "vllm", "--runtime",
                                "tokendance", "--memory-timing", "roofline")
    assert code == 0, err
    assert "tokendance" in out
    code, out, err = tokenstack(capsys, "run", "h100-tokencake", "--model", "qwen2.5-14b", "--workload",
                                "codewriter-like", "--requests", "2", "--runtime", "pic", "--memory-timing", "roofline")
    assert code == 2 and "All-Gather" in err


@pytest.mark.parametrize("runtime", ["pic", "tokendance"])
def test_tight_pool_finishes_without_reuse_where_it_must(prep, runtime):
    """A pool that cannot hold every agent's private copy (pic) or every history at once: the runtime lets
    go of what it holds (counted) instead of stalling, and every call finishes."""
    t = small(agents=8, rounds=4)
    _, res = serve(prep, t, runtime, kv_blocks=160)
    assert np.isfinite(res.requests["finish_s"]).all()
    c = res.counters["agent"]
    assert c["released_histories"] > 0 or c["relieved"] > 0 or c["fallback_calls"] > 0


@pytest.fixture(scope="module")
def crowded(prep):
    """40 agents, 4 visible each, in a pool of 400 blocks: fewer than the histories of one round (548
    blocks), more than the master of the round plus its diffs does not leave room for (354 of 400)."""
    t = small(agents=40, rounds=2, visible=4)
    return t, {rt: serve(prep, t, rt, kv_blocks=400)[1] for rt in ("vllm", "pic", "tokendance")}


def test_held_reuse_gives_way_to_calls_in_line(crowded):
    """Pins of finished calls (the next round's histories and chunk sources) are let go when a call of
    this round does not fit, so round 0 runs as vLLM's does (it used to serialize: 14x at 1,000 agents)."""
    t, res = crowded
    rows = {rt: round_rows(t, r.requests) for rt, r in res.items()}
    for rt in ("pic", "tokendance"):
        assert rows[rt][0]["prefill_s"] <= 1.02 * rows["vllm"][0]["prefill_s"]
        c = res[rt].counters["agent"]
        assert c["released_histories"] > 0 and c["fallback_calls"] == 0
        assert c["reuse_calls"] == len(t.ag.round_calls[1])  # every round-1 call still reuses
        assert c["history_recompute_tokens"] > 0  # ... its evicted history recomputed on admission
        if c["lost_chunks"]:
            assert c["lost_chunk_tokens"] > 0  # a chunk whose source was let go is recomputed whole


def test_collector_works_in_passes_when_the_master_does_not_fit(crowded):
    """The round's master and diffs would leave no room for a call: the collector covers calls in passes
    (each chunk collected once, let go when its last reader holds it) and round 1 beats prefilling all."""
    t, res = crowded
    c = res["tokendance"].counters["agent"]
    assert c["collective_steps"] > 1
    assert c["stored_region_blocks"] == c["master_blocks"] + c["diff_blocks"]
    rows = {rt: round_rows(t, r.requests) for rt, r in res.items()}
    assert rows["tokendance"][1]["prefill_s"] < rows["vllm"][1]["prefill_s"]
    assert np.isfinite(res["tokendance"].requests["finish_s"]).all()
