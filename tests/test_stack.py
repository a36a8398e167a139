"""HBM4 stacks of capacity and PIM dies, PIM attention, DMA and the power budget — against the kernel.

Expectations are behaviours of the simulated commands (what changes when one knob moves), lower bounds
from bus arithmetic, and the independent protocol checker; no test restates a cost formula.
"""

from __future__ import annotations

import numpy as np
import pytest

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.dram.command_log import LOG_DTYPE
from tokenstack_sim.hw.dram.protocol_checker import check_log
from tokenstack_sim.hw.stack import quantize
from tokenstack_sim.hw.stack.dma import DmaJob, GpuStream
from tokenstack_sim.hw.stack.layout import TierMap
from tokenstack_sim.hw.stack.pim import PimUnits, attention_programs
from tokenstack_sim.hw.stack.run import run_stack
from tokenstack_sim.hw.stack.translation import Translator

TS = "hbm4-12h-tokenstack"
LLAMA70 = dict(kv_heads=8, gqa=8, head_dim=128)  # Llama-3.1-70B (model_shapes.csv)


@pytest.fixture(scope="module", autouse=True)
def _warm(dram_warm):
    return dram_warm


def stack(*overrides, name=TS):
    return load_config(name, list(overrides), kind="stack")


def attention_ns(st, tokens, **kw):
    shape = {**LLAMA70, **kw}
    r = run_stack(st, programs=attention_programs(st, tokens=tokens, **shape))
    return r.op_time_ns[0]


def structured(raw):
    out = np.zeros(len(raw), LOG_DTYPE)
    for k, name in enumerate(LOG_DTYPE.names):
        out[name] = raw[:, k]
    return out


# ---------------------------------------------------------------- dies, SIDs, tiers

@pytest.mark.unit
def test_presets_and_capacity_of_tiers():
    ts, plain, uni = stack(), stack(name="hbm4-12h-plain"), stack(name="hbm4-12h-uniform-pim")
    gib = 2**30
    assert plain.capacity_bytes == 48 * gib  # 12 dies x 32 Gb
    # 4 of 12 dies keep half their capacity: (12 - 0.5 x 4) / 12 of plain (hardware.md §3)
    assert ts.capacity_bytes == plain.capacity_bytes * (12 - 0.5 * 4) // 12
    assert ts.tier_capacity_bytes("pim") == 8 * gib
    assert uni.capacity_bytes == plain.capacity_bytes // 2
    assert not plain.has_pim and ts.has_pim
    a = stack(name="hbm3-attacc-pim")
    assert a.capacity_bytes == 16 * gib  # AttAcc: 16 GB per PIM stack, full capacity (hardware.md §7)


@pytest.mark.unit
def test_partial_sid_is_modelled_per_channel():
    st = stack("layout.pim_dies=2")  # 2 PIM dies: half of SID 2 (dies 10 and 11 serve channels 16..31)
    pim = st.tier_units("pim")
    assert {s for _, s in pim} == {2}
    assert sorted(c for c, _ in pim) == list(range(16, 32))
    assert (0, 2) in st.tier_units("capacity")
    full = stack()
    assert st.tier_capacity_bytes("pim") == full.tier_capacity_bytes("pim") // 2
    # half the PIM units: attention over the same KV takes longer
    assert attention_ns(st, 1024) > 1.5 * attention_ns(full, 1024)


@pytest.mark.unit
def test_wide_pim_scope_refuses_mixed_channels():
    with pytest.raises(InputError, match="mode_scope"):
        stack('pim.mode_scope="channel"')
    # every die PIM: a channel-wide scope is fine
    assert stack('pim.mode_scope="channel"', "layout.pim_dies=12").has_pim


@pytest.mark.unit
def test_bad_die_lists_name_the_key(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('schema_version = 1\nkind = "stack"\nname = "x"\ndram = "hbm4-ramulator21"\n'
                 "[layout]\ndies = 2\nsids = 1\n"
                 '[[dies]]\nkind = "pim"\nsid = 0\nchannels = [0, 1]\n'
                 '[[dies]]\nkind = "capacity"\nsid = 0\nchannels = [1]\n')
    with pytest.raises(InputError, match="already served") as e:
        load_config(str(p))
    assert "dies[1].channels" in str(e.value)
    with pytest.raises(InputError, match="equal size"):
        stack("layout.dies=10")
    with pytest.raises(InputError) as e:
        stack('pim.placement="bank_triple"')
    assert "pim.placement" in str(e.value)


@pytest.mark.unit
def test_tier_maps_are_separate_regions():
    st = stack()
    cap, pim = TierMap.of(st, "capacity"), TierMap.of(st, "pim")
    lines = np.arange(4096)
    assert set(np.unique(cap.decode(lines)["sid"])) == {0, 1}
    assert set(np.unique(pim.decode(lines)["sid"])) == {2}
    d = pim.decode(np.arange(pim.lines, step=997))
    assert d["row"].max() < st.rows_of[0, 2]  # PIM dies have half the rows
    coords = np.stack([d[k] for k in ("ch", "pc", "sid", "bg", "ba", "row", "col")], 1)
    assert len(np.unique(coords, axis=0)) == len(coords)  # distinct lines map to distinct cells
    with pytest.raises(InputError):
        pim.decode(np.array([pim.lines]))


# ---------------------------------------------------------------- PIM attention

@pytest.mark.validation
def test_attention_scales_with_tokens_and_predicts_held_out_sizes():
    st = stack("power.budget_w=0")
    t1, t4 = attention_ns(st, 1024), attention_ns(st, 4096)
    # linear through the two points predicts held-out sizes that switch rows at other places
    for tokens in (1536, 2500, 3300):
        pred = t1 + (t4 - t1) * (tokens - 1024) / (4096 - 1024)
        assert attention_ns(st, tokens) == pytest.approx(pred, rel=0.08)


@pytest.mark.validation
def test_gqa8_is_compute_bound_on_bank_pim_and_mha_is_not():
    fast = 'pim.lanes=32'
    g8, g8_fast = attention_ns(stack("power.budget_w=0"), 2048), attention_ns(stack("power.budget_w=0", fast), 2048)
    g1 = attention_ns(stack("power.budget_w=0"), 2048, gqa=1)
    g1_fast = attention_ns(stack("power.budget_w=0", fast), 2048, gqa=1)
    assert g8_fast < 0.7 * g8  # more MAC lanes help: compute-bound
    assert g1_fast == pytest.approx(g1, rel=0.02)  # they do not: bound by the all-bank MAC rate
    # the compute bound is what the kernel shows: GQA-8 time at least MACs / peak MAC rate
    u = PimUnits.of(stack())
    macs = 2 * 2048 * 8 * 128 * 8
    assert g8 >= macs / (u.peak_tflops * 1e3 / 2)


@pytest.mark.validation
def test_bank_beats_bank_group_beats_base_die():
    times = {p: attention_ns(stack("power.budget_w=0", f'pim.placement="{p}"'), 2048, gqa=1)
             for p in ("bank", "bank_pair", "bank_group", "base_die")}
    assert times["bank"] < times["bank_pair"] < times["bank_group"] < times["base_die"]


@pytest.mark.validation
def test_refresh_interrupts_pim_rows_and_costs_time():
    on = stack("power.budget_w=0")
    off = stack("power.budget_w=0", 'dram_set=["refresh.mode=\\"none\\""]')
    progs = attention_programs(on, tokens=8192, **LLAMA70)
    r_on = run_stack(on, programs=progs)
    r_off = run_stack(off, programs=attention_programs(off, tokens=8192, **LLAMA70))
    assert r_on.op_time_ns[0] > r_off.op_time_ns[0]
    assert r_on.command_counts["REFab"] > 0 and r_off.command_counts["REFab"] == 0
    # a refresh closes the PIM row mid-way; the program reopens it (more ACTab than rows it sweeps)
    assert r_on.command_counts["ACTab"] > r_off.command_counts["ACTab"]


@pytest.mark.validation
def test_gather_and_broadcast_use_the_shared_bus():
    st = stack("power.budget_w=0")
    alone = attention_ns(st, 2048)
    progs = attention_programs(st, tokens=2048, **LLAMA70)
    # saturating GPU reads on the capacity SIDs of the same pseudo-channels
    r = run_stack(st, programs=progs, gpu=GpuStream(24 << 20))
    assert r.op_time_ns[0] > alone  # transfers wait for the data bus
    assert r.command_counts["PRD"] > 0 and r.command_counts["PWR"] > 0
    base = run_stack(st, gpu=GpuStream(24 << 20))
    assert r.gpu_bw_GBps < base.gpu_bw_GBps  # and the GPU loses bus time to them


@pytest.mark.validation
def test_concurrent_access_switch_blocks_other_sids():
    on, off = stack("power.budget_w=0"), stack("power.budget_w=0", "pim.concurrent_access=false")
    gpu = GpuStream(16 << 20)
    r_on = run_stack(on, programs=attention_programs(on, tokens=8192, **LLAMA70), gpu=gpu)
    r_off = run_stack(off, programs=attention_programs(off, tokens=8192, **LLAMA70), gpu=gpu)
    assert r_off.gpu_time_ns > 1.2 * r_on.gpu_time_ns


@pytest.mark.validation
def test_translation_misses_then_hits():
    st = stack("power.budget_w=0")
    tr = Translator.of(st)
    attention_programs(st, tokens=4096, translation=tr, **LLAMA70)
    misses = tr.misses
    assert misses > 0 and tr.hits == 0
    attention_programs(st, tokens=4096, translation=tr, **LLAMA70)  # the same KV again
    assert tr.misses == misses and tr.hits == misses
    cold = run_stack(st, programs=attention_programs(st, tokens=4096, translation=Translator.of(st), **LLAMA70))
    warm = run_stack(st, programs=attention_programs(st, tokens=4096, translation=tr, **LLAMA70))
    assert cold.op_time_ns[0] > warm.op_time_ns[0]


# ---------------------------------------------------------------- DMA

@pytest.mark.validation
def test_dma_between_two_sids_of_one_channel_costs_a_read_plus_a_write():
    st = stack("power.budget_w=0")
    n_bytes = 64 << 10
    job = DmaJob(n_bytes, src="capacity", dst="capacity", src_sids=(0,), dst_sids=(1,), channels=(0,), pcs=(0,))
    r = run_stack(st, dma=[job], command_log=True)
    lines = n_bytes // st.dram.access_bytes
    n = st.dram.n
    bus_ns = 2 * lines * max(n["nBL"], n["nCCD_S"]) * st.dram.tck_ns  # every read and every write burst
    assert r.dma_time_ns >= bus_ns
    assert r.command_counts["RD"] == lines and r.command_counts["WR"] == lines
    log = structured(r.log)
    col = log[np.isin(log["command"], [3, 4, 5, 6])]
    assert set(col["channel"]) == {0} and set(col["pseudo_channel"]) == {0}
    assert set(col["sid"][col["command"] == 3]) == {0} and set(col["sid"][col["command"] == 4]) == {1}
    # the same reads and writes issued by the GPU take about as long: the DMA has no free path
    reads_only = run_stack(st, dma=[], gpu=GpuStream(n_bytes, channels=(0,), sids=(0,)))
    assert r.dma_time_ns > 1.7 * reads_only.gpu_time_ns
    assert check_log(log, st.dram, r.cycles).ok


@pytest.mark.unit
def test_quantized_sizes():
    assert quantize.size_ratio("int8", 32) == pytest.approx(0.5 + 1 / 32)
    assert quantize.size_ratio("int4", 64) == pytest.approx(0.25 + 1 / 64)
    assert quantize.size_ratio("fp16", 32) == 1.0
    with pytest.raises(InputError):
        quantize.size_ratio("int3", 32)


@pytest.mark.validation
def test_quantizing_dma_writes_less_and_charges_the_quantizer():
    st = stack("power.budget_w=0")
    plain = run_stack(st, dma=[DmaJob(1 << 20)])
    q = run_stack(st, dma=[DmaJob(1 << 20, fmt="int8", group=32)])
    assert q.command_counts["WR"] == pytest.approx(plain.command_counts["WR"] * (0.5 + 1 / 32), rel=0.01)
    assert q.energy_pj["quant_elements"] > 0 and plain.energy_pj["quant_elements"] == 0
    assert q.energy_pj["tsv_bits"] < plain.energy_pj["tsv_bits"]
    # a DMA's energy is its reads plus its writes: each crosses cell..TSV, none the interposer
    moved = (plain.command_counts["RD"] + plain.command_counts["WR"]) * 256
    for a in ("cell_rw_bits", "bank_to_bankgroup_bits", "bankgroup_to_global_bits", "tsv_bits"):
        assert plain.actions[a] == moved
    assert plain.actions["gpu_read_bits"] == plain.actions["gpu_write_bits"] == 0
    # a slow quantizer becomes the bottleneck
    slow = stack("power.budget_w=0", "basedie.quant_units_per_channel=1", "basedie.quant_lanes=1",
                 "basedie.quant_clock_ghz=0.1")
    assert run_stack(slow, dma=[DmaJob(1 << 20, fmt="int8")]).dma_time_ns > 3 * q.dma_time_ns


# ---------------------------------------------------------------- power

@pytest.mark.validation
def test_power_budget_throttles_when_exceeded():
    def run(budget):
        st = stack(f"power.budget_w={budget}", "power.window_ns=200")
        return st, run_stack(st, programs=attention_programs(st, tokens=4096, **LLAMA70),
                             gpu=GpuStream(16 << 20))
    _, free = run(0)
    _, roomy = run(1000)
    st, tight = run(15)
    assert free.throttled_commands == 0 and roomy.throttled_commands == 0
    assert tight.throttled_commands > 0 and tight.throttled_cycles > 0
    assert tight.time_ns > free.time_ns
    assert roomy.time_ns == free.time_ns
    # average power stays within the budget (the bucket's first window may exceed it)
    energy = sum(v for k, v in tight.energy_pj.items() if k not in ("softmax_elements", "quant_elements"))
    avg_w = energy / tight.time_ns / 1e3  # pJ / ns = mW
    assert avg_w <= 15 * (1 + 200 / tight.time_ns) * 1.01


# ---------------------------------------------------------------- protocol

@pytest.mark.validation
@pytest.mark.parametrize("placement", ["bank", "bank_group", "base_die"])
def test_protocol_checker_passes_with_pim_dma_and_gpu(placement):
    st = stack(f'pim.placement="{placement}"', "power.budget_w=30")
    progs = attention_programs(st, tokens=1024, **LLAMA70)
    r = run_stack(st, programs=progs, gpu=GpuStream(2 << 20, write_fraction=0.3),
                  dma=[DmaJob(256 << 10, fmt="int8")], command_log=True)
    rep = check_log(structured(r.log), st.dram, r.cycles)
    assert rep.ok, str(rep)


@pytest.mark.validation
def test_protocol_checker_passes_on_attacc_channel_scope():
    st = stack(name="hbm3-attacc-pim")
    r = run_stack(st, programs=attention_programs(st, tokens=2048, kv_heads=96, gqa=1, head_dim=128),
                  command_log=True)
    rep = check_log(structured(r.log), st.dram, r.cycles)
    assert rep.ok, str(rep)
    assert r.command_counts["MACab"] > 0


@pytest.mark.unit
def test_checker_catches_a_mac_on_a_closed_scope():
    st = stack("power.budget_w=0")
    r = run_stack(st, programs=attention_programs(st, tokens=256, **LLAMA70), command_log=True)
    log = structured(r.log)
    first_act = np.nonzero(log["command"] == 9)[0][0]
    broken = np.delete(log, first_act)  # drop one ACTab: its MACs now hit closed banks
    assert "bank_state" in check_log(broken, st.dram).counts_by_rule


@pytest.mark.validation
def test_wider_tsvs_speed_up_dma_and_base_die_pim():
    narrow, wide = stack("power.budget_w=0"), stack("power.budget_w=0", "basedie.tsv_width_mult=2")
    job = [DmaJob(1 << 20)]
    r_n, r_w = run_stack(narrow, dma=job), run_stack(wide, dma=job)
    assert r_w.command_counts["RD"] == r_n.command_counts["RD"] // 2
    assert r_w.dma_time_ns < 0.75 * r_n.dma_time_ns
    bd = ('pim.placement="base_die"', "pim.base_die_lanes=512")
    t_n = attention_ns(stack("power.budget_w=0", *bd), 2048, gqa=1)
    t_w = attention_ns(stack("power.budget_w=0", "basedie.tsv_width_mult=2", *bd), 2048, gqa=1)
    assert t_w < 0.75 * t_n


@pytest.mark.validation
def test_dma_waits_for_address_translation():
    st = stack("power.budget_w=0")
    job = [DmaJob(1 << 20)]
    free = run_stack(st, dma=job)
    cold_tr = Translator.of(st)
    cold = run_stack(st, dma=job, translator=cold_tr)
    assert cold_tr.misses == 2 * (1 << 20) // st.config.basedie.tlb_page_bytes  # source and destination pages
    assert cold.dma_time_ns > free.dma_time_ns
    warm = run_stack(st, dma=job, translator=cold_tr)  # the same pages again: all hits
    assert warm.dma_time_ns < cold.dma_time_ns
    slow_tr = Translator(1024, 2, 5000)
    assert run_stack(st, dma=job, translator=slow_tr).dma_time_ns > 2 * cold.dma_time_ns


@pytest.mark.unit
def test_promotion_dequantizes():
    st = stack("power.budget_w=0")
    r = run_stack(st, dma=[DmaJob(1 << 20, src="capacity", dst="pim", fmt="int8", dequantize=True)])
    lines = (1 << 20) // st.dram.access_bytes
    assert r.command_counts["WR"] == lines  # FP16 written back
    assert r.command_counts["RD"] == pytest.approx(lines * (0.5 + 1 / 32), rel=0.01)
    assert r.energy_pj["quant_elements"] > 0


@pytest.mark.unit
def test_refresh_phase_moves_the_first_refresh():
    st = stack("power.budget_w=0")
    n = st.dram.n["nREFI"]
    early = run_stack(st, gpu=GpuStream(64 << 10), refresh_phase_cycles=n - 10)
    late = run_stack(st, gpu=GpuStream(64 << 10), refresh_phase_cycles=0)
    assert late.command_counts["REFab"] == 0 < early.command_counts["REFab"]
    assert early.gpu_time_ns > late.gpu_time_ns


@pytest.mark.unit
def test_a_run_that_starts_inside_a_refresh_waits_for_the_rest_of_it():
    """refresh_in_progress: the refresh that opened the interval was issued `refresh_phase_cycles` before
    the start, so within tRFC of it the op waits for what is left; past tRFC nothing changes."""
    st = stack("power.budget_w=0")
    rfc = st.dram.n["nRFC"]
    tck = st.dram.tck_ns

    def t(phase, in_progress):
        return run_stack(st, gpu=GpuStream(64 << 10), refresh_phase_cycles=phase,
                         refresh_in_progress=in_progress).gpu_time_ns

    free = t(0, False)
    assert t(rfc // 4, False) == free  # without the flag a phase only moves the next refresh
    waits = [t(p, True) - free for p in (0, rfc // 4, rfc // 2)]
    assert waits[0] > waits[1] > waits[2] > 0
    assert waits[0] == pytest.approx(rfc * tck, abs=20 * tck)  # the whole tRFC (rows open a few cycles later)
    assert waits[1] - waits[2] == pytest.approx(rfc // 4 * tck, abs=4 * tck)
    assert t(rfc + 10, True) == t(rfc + 10, False) == free


@pytest.mark.unit
def test_refresh_can_be_switched_off_and_a_run_can_stop_at_the_ops_end():
    st = stack()
    n = st.dram.n["nREFI"]
    on = run_stack(st, gpu=GpuStream(256 << 10), refresh_phase_cycles=n - 10)
    off = run_stack(st, gpu=GpuStream(256 << 10), refresh_phase_cycles=n - 10, refresh=False)
    assert on.command_counts["REFab"] > 0 == off.command_counts["REFab"] and off.gpu_time_ns < on.gpu_time_ns
    # under an open-loop background, stopping once the DMA is done changes neither the DMA nor what was
    # served up to then, and leaves the background's later requests out
    ch = (0,)
    job = [DmaJob(64 << 10, src="pim", dst="capacity", fmt="int8", channels=ch)]
    kw = dict(dma=job, gpu=GpuStream(1 << 20, tier="capacity", channels=ch, rate_GBps=20.0, random=True,
                                     poisson=True, seed=3))
    full = run_stack(st, **kw)
    short = run_stack(st, **kw, stop_after_op=True)
    assert short.dma_time_ns == full.dma_time_ns and short.background_last_arrival_ns == full.background_last_arrival_ns
    assert short.time_ns < full.time_ns and sum(short.command_counts.values()) < sum(full.command_counts.values())
    with pytest.raises(ValueError, match="open-loop"):
        run_stack(st, dma=job, stop_after_op=True)
