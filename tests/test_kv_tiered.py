"""KV management across PIM units and the capacity tier (kv/tiered.py): each switch moves its metric the
expected way on a crafted workload, conservation holds at every step, replication stays in its budget.

The crafted workloads use Llama-3.1-8B on tokenstack-hbm4 (TP 8, one KV head per shard, so 8 PIM units
of one stack each) with roofline memory timing; pressure on the PIM tier comes from a `kv_blocks`
override (the tiers split it in proportion to their capacity).
"""

from __future__ import annotations

import numpy as np
import pytest

from _kv_checks import check_tiers_every_step  # tests/_kv_checks.py
from tokenstack_sim.errors import InputError
from tokenstack_sim.kv.policy import KvPolicy
from tokenstack_sim.kv.tiered import capacity_ratio
from tokenstack_sim.sim.engine import RunSpec, prepare, run_prepared
from tokenstack_sim.sim.step_cost import EngineOptions
from tokenstack_sim.workload.table import RequestTable, empty_rows

pytestmark = pytest.mark.unit

MODEL = "llama-3.1-8b"
ROOFLINE = EngineOptions(memory_timing="roofline")


def crafted(n, prompt, outputs, gap_s=0.0, shared_blocks=0) -> RequestTable:
    """n requests `gap_s` apart; `shared_blocks` leading 16-token blocks of every prompt are the same."""
    rows = empty_rows(n)
    rows["arrival_s"] = np.arange(n) * gap_s
    rows["input_tokens"] = prompt
    rows["output_tokens"] = outputs
    if not shared_blocks:
        return RequestTable(rows)
    per = prompt // 16
    hs = [np.concatenate([np.arange(1, shared_blocks + 1), 10_000 + i * 1_000 + np.arange(per - shared_blocks)])
          for i in range(n)]
    off = np.concatenate([[0], np.cumsum([len(h) for h in hs])]).astype(np.int64)
    return RequestTable(rows, prefix_offsets=off, prefix_hashes=np.concatenate(hs).astype(np.uint64),
                        hash_block_tokens=16)


@pytest.fixture
def checked(monkeypatch):
    """Run TieredKv.check() (slots, replicas, holder counters) before every step."""
    return check_tiers_every_step(monkeypatch)


def serve(table, kv, kv_blocks=None, system="tokenstack-hbm4"):
    prep = prepare(system, MODEL, options=ROOFLINE, kv=kv, kv_blocks=kv_blocks)
    res = run_prepared(prep, RunSpec("crafted", warmup_frac=0.0, drain_frac=0.0, kv_blocks=kv_blocks), table=table)
    prep.step_model.kv.check()
    assert res.summary["output_tokens"] == int(table.rows["output_tokens"].sum())
    return res, prep.step_model.kv


def attention_s(res) -> float:
    return float((res.steps["attention_pim_s"] + res.steps["attention_gpu_s"]).sum())


def test_int8_block_is_half_plus_one_scale_per_group():
    assert capacity_ratio(KvPolicy(demote_format="int8", group=32), kv_bytes=2) == pytest.approx(0.5 + 1 / 32)
    assert capacity_ratio(KvPolicy(demote_format="int4", group=64), kv_bytes=2) == pytest.approx(0.25 + 1 / 64)
    assert capacity_ratio(KvPolicy(demote_format="fp16"), kv_bytes=2) == 1.0
    assert capacity_ratio(KvPolicy(demote_format="int8"), kv_bytes=1) == 1.0  # FP8 KV: no smaller


@pytest.mark.parametrize("raw,key", [({"placement": "random"}, "kv.placement"), ({"eviction": "mru"}, "kv.eviction"),
                                     ({"demote_format": "int3"}, "kv.demote_format"),
                                     ({"replication_budget": 1.5}, "kv.replication_budget"),
                                     ({"max_migrations_per_step": -1}, "kv.max_migrations_per_step")])
def test_bad_policy_names_its_key(raw, key):
    with pytest.raises(InputError) as e:
        prepare("tokenstack-hbm4", MODEL, options=ROOFLINE, kv=raw, bind=False)
    assert key in str(e.value)


def test_topology_aware_beats_round_robin_on_attention_time(opcost_cache, checked):
    table = crafted(64, 1024, 200)
    topo, _ = serve(table, {"placement": "topology-aware"})
    rr, _ = serve(table, {"placement": "round-robin"})
    assert attention_s(topo) < attention_s(rr)
    assert topo.steps["kv_gathers"].sum() < rr.steps["kv_gathers"].sum()
    assert checked


def test_workload_aware_eviction_keeps_pim_full_with_fewer_moves(opcost_cache, checked):
    """Half the requests finish after 20 tokens, half run 600; the PIM tier holds a fraction of the KV.
    Every running block is read at every decode step, so the PIM share of attention is set by how many
    running blocks PIM holds: eviction with promotion keeps it full under either key (the short requests'
    freed blocks make room that promotion refills), well above never migrating. The workload-aware key
    gets there with under half of LRU's moves: it demotes the blocks of requests about to finish, which
    are not promoted back, where LRU demotes the oldest blocks of long requests and promotes them again.
    (Before promotion could reclaim the slots of stale prefix-cache entries, workload-aware promoted
    nothing here and held 0.32 of the attention on PIM, LRU 0.32 with 31 promotions.)"""
    for gap_s in (0.0, 0.02):  # all at once, or arriving over the first 0.6 s
        table = crafted(32, 512, np.where(np.arange(32) % 2 == 0, 20, 600), gap_s=gap_s)
        share, moved = {}, {}
        for e in ("workload-aware", "lru", "none"):
            res, kv = serve(table, {"eviction": e}, kv_blocks=2000)
            share[e] = res.summary["pim_attention_share"]
            moved[e] = kv.counters["demotions"] + kv.counters["promotions"]
        assert share["workload-aware"] == pytest.approx(share["lru"], rel=0.01), gap_s
        assert share["lru"] > share["none"] + 0.04, gap_s
        assert moved["none"] == 0 and moved["workload-aware"] < 0.6 * moved["lru"], gap_s


def test_stale_prefix_cache_entries_give_their_pim_slots_to_later_requests(opcost_cache, checked):
    """A first wave of 32 requests fills the PIM tier and finishes; its blocks stay as prefix-cache entries
    in their PIM slots. A second wave 20 s later must get the same share of its attention on PIM as the
    first: placement counts a slot held by a cached free block as room (it is demoted or dropped when
    needed) and promotion reclaims it. Before, every unit looked full, every new request was homed on
    unit 0, the rest spilled to the capacity tier and nothing was promoted back: the second wave got 10%
    of its attention on PIM against the first wave's 56%."""
    table = crafted(64, 1024, 100)
    table.rows["arrival_s"] = np.where(np.arange(64) < 32, 0.0, 20.0)
    res, kv = serve(table, {}, kv_blocks=6000)
    st = res.steps
    shares = []
    for first in (True, False):
        m = ((st["start_s"] < 20.0) == first) & (st["decode_seqs"] > 0)
        shares.append(st["kv_tokens_attended_pim"][m].sum() / st["kv_tokens_attended"][m].sum())
    pim_slots = int(kv.P[: kv.U].sum())
    assert pim_slots < 32 * (1024 + 100) / 16  # a wave does not fit: PIM is full in both waves
    assert shares[0] > 0.45 and shares[1] == pytest.approx(shares[0], rel=0.05)
    assert kv.counters["promotions"] > 0


def test_cached_slots_are_room_that_gives_way_without_losing_entries():
    """Two PIM units of 2 slots, a capacity tier of 2, every block hashed (kept as a prefix-cache entry
    when freed). A unit full of cached blocks is room: a new request is homed there and each of its blocks
    demotes the oldest cached one, the request's tail first. Where that would drop an entry (the capacity
    tier full) and another unit has a free slot, the block goes there. Promotion goes to a free slot before
    reclaiming, and never drops an entry to promote."""
    from types import SimpleNamespace

    from tokenstack_sim.kv.tiered import TieredKv

    pool = SimpleNamespace(num_blocks=6, has_hash=np.ones(6, bool), uncache=lambda b: None)
    sched = SimpleNamespace(pool=pool, num_tokens=np.full(8, 32), output_tokens=np.full(8, 10),
                            generated=np.zeros(8, np.int64))
    kv = TieredKv(pim_units=2, pim_slots=4, capacity_slots=2, policy=KvPolicy(), n_requests=8)
    kv.bind(sched)
    kv.allocated([0, 0], [0, 1])  # request 0 homed on unit 0
    kv.allocated([1], [2])  # request 1 on unit 1, which has the free slot
    assert list(kv.loc[:3]) == [0, 0, 1]
    kv.released(0, [0, 1])  # cached where they are: unit 0 holds nothing a request reads
    assert kv.pim_used[0] == 2 and kv.reclaim[0] == 2 and kv._most_free() == 0
    kv.allocated([2], [3])  # homed on unit 0 (room 2 > 1): block 1, the tail, is demoted for it
    assert kv.loc[3] == 0 and kv.loc[1] == kv.CAP and kv.loc[0] == 0 and kv.counters["demotions"] == 1
    kv.allocated([2], [4])
    assert kv.loc[4] == 0 and kv.loc[0] == kv.CAP and kv.cap_used == kv.C  # both entries kept, in capacity
    kv.released(2, [3, 4])  # unit 0 full of cached blocks again, the capacity tier full of them
    kv.allocated([3], [5])  # unit 0 has more room, but making it would drop an entry: unit 1's free slot
    assert kv.loc[5] == 1 and kv.counters["dropped_cached"] == 0
    kv.check()
    kv.attached(4, [0])  # a prefix hit on block 0, in the capacity tier: in use there
    kv.begin_step()  # no free slot; unit 0's cached blocks cannot be demoted (capacity full): no drop
    assert kv.loc[0] == kv.CAP and kv.counters["promotions"] == 0 and kv.counters["dropped_cached"] == 0
    pool.has_hash[5] = False
    kv.released(3, [5])  # unit 1's slot is free now
    kv.begin_step()  # promoted into the free slot, although unit 0 has more room
    assert kv.loc[0] == 1 and kv.counters["promotions"] == 1 and kv.counters["dropped_cached"] == 0
    kv.check()


def test_replication_cuts_cross_stack_gathers_within_budget(opcost_cache, checked):
    table = crafted(64, 512, 64, gap_s=0.002, shared_blocks=16)
    off, _ = serve(table, {"replication_budget": 0.0})
    on, kv = serve(table, {"replication_budget": 0.05})
    assert off.steps["kv_replicated_blocks"].sum() == 0
    assert on.steps["kv_replicated_blocks"].sum() > 0
    assert on.steps["kv_gathers"].sum() < 0.5 * off.steps["kv_gathers"].sum()
    assert on.steps["kv_replica_blocks"].max() <= kv.replica_cap


def test_replicas_without_eviction_need_no_dma_table(opcost_cache, checked):
    """eviction = none never migrates, so the base-die DMA costs are not loaded; replication still copies
    shared blocks (it used to fail looking up the DMA table: KeyError 'dma-pim-capacity-int8g32')."""
    table = crafted(64, 512, 64, gap_s=0.002, shared_blocks=16)
    res, kv = serve(table, {"eviction": "none", "replication_budget": 0.05})
    assert res.steps["kv_replicated_blocks"].sum() > 0
    assert kv.counters["demotions"] == kv.counters["promotions"] == 0


def test_tiny_replication_budget_is_never_exceeded(opcost_cache, checked):
    table = crafted(64, 512, 64, gap_s=0.002, shared_blocks=16)
    res, kv = serve(table, {"replication_budget": 3 / 400}, kv_blocks=2000)
    assert 0 < kv.replica_cap <= 3
    assert res.steps["kv_replica_blocks"].max() <= kv.replica_cap


def test_quantized_demotion_adds_capacity_and_cuts_migration_bytes(opcost_cache, checked):
    prep16 = prepare("tokenstack-hbm4", MODEL, options=ROOFLINE, kv={"demote_format": "fp16"})
    prep8 = prepare("tokenstack-hbm4", MODEL, options=ROOFLINE, kv={"demote_format": "int8"})
    from tokenstack_sim.sim.engine import tiered_kv

    k16, k8 = tiered_kv(prep16, 1), tiered_kv(prep8, 1)
    assert int(k16.P.sum()) == int(k8.P.sum())  # PIM blocks stay FP16
    assert k8.C == int(k16.C / (0.5 + 1 / 32))  # the capacity tier holds INT8 blocks
    # the same demotions move fewer bytes: the DMA writes 0.5 + 1/G of what it reads
    table = crafted(32, 512, np.where(np.arange(32) % 2 == 0, 20, 600))
    r16, kv16 = serve(table, {"demote_format": "fp16"}, kv_blocks=2000)
    r8, kv8 = serve(table, {"demote_format": "int8"}, kv_blocks=2000)
    assert kv8.counters["demotions"] == kv16.counters["demotions"] > 0
    q8 = float(r8.actions["gpu_stacks"]["quant_elements"].sum())
    assert q8 > 0 and float(r16.actions["gpu_stacks"]["quant_elements"].sum()) == 0
    # the GPU reads the demoted KV in its stored form
    assert attention_s(r8) < attention_s(r16)


@pytest.mark.parametrize("system", ["attacc-hbm4", "uniform-pim-hbm4", "gpu-hbm4"])
def test_rivals_never_migrate(opcost_cache, checked, system):
    table = crafted(64, 512, np.where(np.arange(64) % 2 == 0, 20, 200), gap_s=0.002, shared_blocks=16)
    res, kv = serve(table, {}, kv_blocks=1200, system=system)
    assert kv.counters["demotions"] == kv.counters["promotions"] == kv.counters["replicas_made"] == 0
    assert float(res.steps["kv_migration_s"].sum()) == 0.0
    assert res.params["kv"]["eviction"] == "none" and res.params["kv"]["replication_budget"] == 0.0
    if system == "gpu-hbm4":
        assert kv.U == 0 and res.summary["pim_attention_share"] == 0
    else:
        assert kv.C == 0 and res.summary["pim_attention_share"] > 0.9


def test_kv_report_columns_and_plot(opcost_cache, tmp_path):
    from tokenstack_sim.results import plots
    from tokenstack_sim.results.report import KV_COLUMNS, runs_table

    table = crafted(32, 512, np.where(np.arange(32) % 2 == 0, 20, 600))
    res, _ = serve(table, {}, kv_blocks=2000)
    assert res.summary["kv_migrations_per_s"] > 0 and res.summary["kv_demotions"] > 0
    md = runs_table([res], columns=KV_COLUMNS)
    assert "KV moves (blocks/s)" in md and "gathers/decode seq" in md
    png = plots.kv_tiers_over_time([res], tmp_path / "kv.png")
    from matplotlib.image import imread

    assert imread(png).shape[0] > 100
