"""Issue 10, remaining parts: the agent-count capacity search (whole counts, "agents" in its tables) and
tokendance's placement roles on a tiered KV (master blocks in PIM units, diffs in the capacity tier)."""

from types import SimpleNamespace

import numpy as np
import pytest

from _cli import tokenstack
from tokenstack_sim.kv.policy import KvPolicy
from tokenstack_sim.kv.tiered import ROLE_CAPACITY, ROLE_MASTER, ROLE_NONE, TieredKv
from tokenstack_sim.sim.capacity import capacity_search, capacity_table, probes_table
from tokenstack_sim.workload.allgather import AllGatherParams, build


def _fake_search(limit, unit, integer, start):
    prep = SimpleNamespace(fits=True, system=SimpleNamespace(name="sys"), model=SimpleNamespace(
        config=SimpleNamespace(name="m")))
    served = []

    def serve(q, seeds):
        served.append(q)
        return [SimpleNamespace(summary={"slo_attainment": 1.0 if q <= limit else 0.5, "requests": 1,
                                                 "ttft_s_p99": 0.1, "tpot_s_p99": 0.01},
                                params={"qps": q, "max_requests": int(q)}) for _ in seeds]

    spec = SimpleNamespace(seed=0)
    return capacity_search(prep, spec, qps_start=start, tolerance=0.01, serve=serve, unit=unit,
                           integer=integer), served


def test_integer_search_probes_whole_counts_and_tables_say_the_unit():
    res, served = _fake_search(13, "agents", True, 8)
    assert all(q == int(q) for q in served) and len(set(served)) == len(served)  # no count probed twice
    assert (res.capacity_qps, res.failing_qps) == (13, 14)
    md = capacity_table([res])
    assert "capacity agents" in md and "fails at agents" in md and "req/s" not in md
    assert "| agents |" in probes_table([res]) and "req/s" not in probes_table([res])
    res, _ = _fake_search(0.3, "apps/s", False, 1.0)
    assert 0.3 / 1.01 <= res.capacity_qps <= 0.3 < res.failing_qps
    assert "capacity apps/s" in capacity_table([res]) and "req/s" not in capacity_table([res])


def test_cli_capacity_searches_agent_counts(capsys):
    code, out, err = tokenstack(capsys, "capacity", "h100-tokencake", "--model", "qwen2.5-14b", "--workload",
                                "generative-agents-like", "--runtime", "tokendance", "--slo-ttft", "1.5s",
                                "--slo-tpot", "3600s", "--warmup", "0.2", "--drain", "0", "--memory-timing",
                                "roofline", "--qps-start", "8", "--max-agents", "16")
    assert code == 0, err
    assert "capacity agents" in out and "req/s" not in out
    assert "above_range" in out and "16 agents" in err  # 8 and 16 pass, 32 is past the ceiling
    code, out, err = tokenstack(capsys, "capacity", "h100-tokencake", "--model", "qwen2.5-14b", "--workload",
                                "generative-agents-like", "--runtime", "pic", "--requests", "10")
    assert code != 0 and "--requests" in err and "Traceback" not in err


class _Pool:
    num_blocks = 12
    has_hash = np.zeros(12, bool)

    def uncache(self, b):
        pass


def _tiers():
    sched = SimpleNamespace(pool=_Pool(), num_tokens=np.full(8, 64), output_tokens=np.full(8, 10),
                            generated=np.zeros(8, np.int64))
    kv = TieredKv(pim_units=1, pim_slots=4, capacity_slots=8, policy=KvPolicy(placement="capacity-first"),
                  n_requests=8)
    kv.bind(sched)
    return kv


def test_tiered_roles_place_master_in_pim_and_capacity_blocks_out():
    kv = _tiers()
    kv.allocated(np.zeros(4, np.int64), np.arange(4))  # request 0 fills the one PIM unit
    assert (kv.loc[:4] == 0).all()
    kv.roles_used, kv.new_role = True, ROLE_MASTER
    kv.allocated([1], [4])  # a master block: written into PIM, a colder block demoted for it
    assert kv.loc[4] == 0 and kv.counters["demotions"] == 1
    kv.new_role = ROLE_CAPACITY
    kv.allocated([2], [5])  # a diff: written into the capacity tier, no migration
    assert kv.loc[5] == kv.CAP and kv.counters["demotions"] == 1
    kv.new_role = ROLE_NONE
    assert kv.prefer(range(4), ROLE_CAPACITY) == 3  # idle blocks leave PIM now (room, budget); one was out
    assert (kv.loc[:4] == kv.CAP).all() and kv.pim_used[0] == 1
    kv.begin_step()
    assert (kv.loc[:4] == kv.CAP).all() and kv.loc[5] == kv.CAP  # never promoted while marked
    kv.prefer(range(4), ROLE_NONE, move=False)
    kv.begin_step()  # unmarked: promoted into the free PIM slots again
    assert int((kv.loc[:4] == 0).sum()) == 3 and kv.loc[5] == kv.CAP
    kv.check()
    kv.released(1, [4])  # the role ends with the last holder
    assert kv.role[4] == ROLE_NONE
    with pytest.raises(ValueError):
        kv.prefer([0], 7)


@pytest.fixture(scope="module")
def ts_prep():
    from tokenstack_sim.sim.engine import prepare
    from tokenstack_sim.sim.step_cost import EngineOptions

    return prepare("tokenstack-hbm4-1gpu", "qwen2.5-14b", options=EngineOptions(memory_timing="roofline"))


def _ts_run(prep, mode):
    from tokenstack_sim.sim.engine import RunSpec, run_prepared

    table = build(AllGatherParams(agents=6, rounds=3, shared_tokens=64, persona_tokens=(100, 200),
                                  output_tokens=(40, 120), template_tokens=32), seed=3)
    spec = RunSpec(workload="generative-agents-like", max_requests=6, seed=3, warmup_frac=0.0, drain_frac=0.0,
                   runtime="tokendance", runtime_options={"placement_roles": mode})
    return run_prepared(prep, spec, table=table).summary


def test_tokendance_master_blocks_in_pim_diffs_in_capacity(ts_prep):
    eager = _ts_run(ts_prep, "eager")
    assert eager["master_placed_blocks"] > 0 and eager["diff_placed_blocks"] > 0
    assert eager["master_pim_blocks"] == eager["master_placed_blocks"]
    assert eager["master_pim_blocks_running"] == eager["master_placed_blocks"]
    assert eager["diff_capacity_blocks"] == eager["diff_placed_blocks"]
    off = _ts_run(ts_prep, "off")  # the KV policy alone: PIM has room, so the diffs stay there
    assert off["diff_capacity_blocks"] == 0 and off["master_placed_blocks"] == eager["master_placed_blocks"]
    lazy = _ts_run(ts_prep, "lazy")  # PIM has room: lazy places like the policy alone, masters marked
    assert lazy["master_pim_blocks"] == lazy["master_placed_blocks"] and lazy["diff_capacity_blocks"] == 0
    assert lazy["requests"] == off["requests"] == eager["requests"]
