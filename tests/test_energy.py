"""Energy per action (hw/stack/energy.py): every bit is counted on each segment of its path, the table holds
pJ/bit per segment (FGDRAM via AttAcc, hardware.md §2), and energy is linear in the counts."""

from dataclasses import replace

import numpy as np
import pytest

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.hw.opcost.simulate import OpSpec, simulate_op
from tokenstack_sim.hw.stack.dma import DmaJob, GpuStream
from tokenstack_sim.hw.stack.energy import (ACTIONS, PATHS, SEGMENTS, count_path, energy_pj, energy_table_pj,
                                            path_pj_per_bit, path_vector, refresh_power_mw, static_power_mw)
from tokenstack_sim.hw.stack.pim import PimUnits, attention_programs
from tokenstack_sim.hw.stack.run import run_stack

STACKS = ("hbm4-12h-tokenstack", "hbm4-12h-plain", "hbm4-12h-uniform-pim", "hbm3-attacc-pim")
TO_BASE_DIE = ("cell_rw_bits", "bank_to_bankgroup_bits", "bankgroup_to_global_bits", "tsv_bits")
LLAMA70 = {"kv_heads": 8, "gqa": 8, "head_dim": 128, "kv_bytes": 2}
# FGDRAM's breakdown via AttAcc (hardware.md §2), pJ/bit
FGDRAM = {"cell_rw_bits": 0.44, "bank_to_bankgroup_bits": 1.01, "bankgroup_to_global_bits": 1.23, "tsv_bits": 0.5,
          "gpu_read_bits": 0.3, "gpu_write_bits": 0.3}
FGDRAM_ACT_SHARE = 0.11  # cell ACT/PRE amortized per bit; here ACTs are counted instead


def stack(name="hbm4-12h-tokenstack", *overrides):
    return load_config(name, ["power.budget_w=0", *overrides], kind="stack")


def per_bit_energy(st, actions) -> float:
    """pJ of the per-bit actions only (no ACT, refresh, compute or static)."""
    table = energy_table_pj(st)
    return sum(actions.get(a, 0.0) * table[a] for a in SEGMENTS)


# ---------------------------------------------------------------- the table

@pytest.mark.unit
def test_actions_carry_units_and_the_engine_keys_stay():
    assert len(set(ACTIONS)) == len(ACTIONS)
    assert all(a.endswith(("_bits", "_acts", "_act", "_macs", "_elements")) or a.startswith("refresh_")
               for a in ACTIONS)
    assert "gpu_read_bits" in ACTIONS and "gpu_write_bits" in ACTIONS  # read by sim/step_cost.py
    assert set(SEGMENTS) <= set(ACTIONS)
    assert all(set(p) <= set(SEGMENTS) for p in PATHS.values())
    for name in STACKS:
        assert set(energy_table_pj(stack(name))) == set(ACTIONS)


@pytest.mark.unit
@pytest.mark.parametrize("name", STACKS)
def test_paths_are_sums_of_their_segments(name):
    st = stack(name)
    table = energy_table_pj(st)
    e = st.dram.config.energy
    full = sum(table[a] for a in TO_BASE_DIE) + e.interposer_pj_per_bit
    # a GPU read or write crosses every segment; the DRAM preset's read/write figure is that sum
    assert path_pj_per_bit(st, "gpu_read") == pytest.approx(full, rel=1e-12)
    assert path_pj_per_bit(st, "gpu_write") == pytest.approx(full, rel=1e-12)
    assert e.rd_pj_per_bit == pytest.approx(full, rel=1e-12) and e.wr_pj_per_bit == e.rd_pj_per_bit
    # a DMA: its read goes cell..TSV, its write TSV..cell, never the interposer
    dma = sum(table[a] for a in TO_BASE_DIE)
    assert path_pj_per_bit(st, "dma_read") + path_pj_per_bit(st, "dma_write") == pytest.approx(2 * dma)
    # PIM array reads by placement
    assert path_pj_per_bit(st, "pim_read_bank") == table["cell_rw_bits"]
    assert path_pj_per_bit(st, "pim_read_bank_pair") == table["cell_rw_bits"]
    assert path_pj_per_bit(st, "pim_read_bank_group") == pytest.approx(
        table["cell_rw_bits"] + table["bank_to_bankgroup_bits"])
    assert path_pj_per_bit(st, "pim_read_base_die") == pytest.approx(dma)
    assert path_pj_per_bit(st, "unit_transfer_bank") == pytest.approx(dma - table["cell_rw_bits"])
    assert path_pj_per_bit(st, "unit_transfer_base_die") == 0
    # the vector form used by the serving engine agrees
    tvec = np.array([table[a] for a in ACTIONS])
    for p in PATHS:
        assert path_vector(p) @ tvec == pytest.approx(path_pj_per_bit(st, p), rel=1e-12)


@pytest.mark.unit
def test_totals_match_the_cited_per_consumer_figures():
    # HBM3 (AttAcc's stack, FGDRAM unscaled): AttAcc's per-consumer totals = the path + FGDRAM's amortized
    # ACT/PRE share, which this model counts per ACT instead (hardware.md §2)
    st = stack("hbm3-attacc-pim")
    for a, v in FGDRAM.items():
        assert energy_table_pj(st)[a] == v
    cited = {"gpu_read": 3.59, "pim_read_bank": 0.55, "pim_read_bank_group": 1.56, "pim_read_base_die": 3.29}
    for path, total in cited.items():
        assert path_pj_per_bit(st, path) + FGDRAM_ACT_SHARE == pytest.approx(total, abs=1e-9)
    assert path_pj_per_bit(st, "unit_transfer_bank") == pytest.approx(2.74)  # AttAcc's PIM io path
    # HBM4 (hbm4-ramulator21): 2.44 pJ/bit cell -> pins, FGDRAM's segments scaled proportionally
    # HBM3E (hbm3e-micron-9.2): 3.9 pJ/bit (Samsung) less the ACT/PRE share = 3.79, scaled likewise
    for name, total in (("hbm4-ramulator21", 2.44), ("hbm4-samsung-11.7", 2.44), ("hbm3e-micron-9.2", 3.79),
                        ("hbm3-ramulator21", 3.48), ("hbm3-attacc-5.2", 3.48)):
        e = load_config(name, kind="dram").config.energy
        assert e.rd_pj_per_bit == pytest.approx(total, abs=1e-9)
        seg = {"cell_rw_bits": e.cell_rw_pj_per_bit, "bank_to_bankgroup_bits": e.bank_to_bankgroup_pj_per_bit,
               "bankgroup_to_global_bits": e.bankgroup_to_global_pj_per_bit, "tsv_bits": e.tsv_pj_per_bit,
               "gpu_read_bits": e.interposer_pj_per_bit}
        for a, v in seg.items():  # proportional to FGDRAM's, up to the 4-digit rounding
            assert v == pytest.approx(FGDRAM[a] * total / 3.48, abs=6e-5)
    assert path_pj_per_bit(stack("hbm4-12h-tokenstack"), "gpu_read") == pytest.approx(2.44, abs=1e-9)


@pytest.mark.unit
@pytest.mark.parametrize("name", ("hbm4-12h-tokenstack", "hbm3-attacc-pim"))
def test_power_budget_figures_are_the_paths_plus_the_act_share(name):
    # the *_pj_per_bit keys of [pim_energy] feed only the power budget (hw/stack/pim.py); they are the
    # cited per-consumer figures, i.e. the energy account's paths plus FGDRAM's ACT/PRE share, scaled alike
    st = stack(name)
    pe = st.config.pim_energy
    scale = st.dram.config.energy.rd_pj_per_bit / 3.48
    act = FGDRAM_ACT_SHARE * scale
    assert pe.bank_read_pj_per_bit == pytest.approx(path_pj_per_bit(st, "pim_read_bank") + act, rel=0.01)
    assert pe.bank_group_read_pj_per_bit == pytest.approx(path_pj_per_bit(st, "pim_read_bank_group") + act, rel=0.01)
    assert pe.base_die_read_pj_per_bit == pytest.approx(path_pj_per_bit(st, "pim_read_base_die") + act, rel=0.01)
    assert pe.unit_transfer_pj_per_bit == pytest.approx(path_pj_per_bit(st, "unit_transfer_bank"), rel=0.01)


# ---------------------------------------------------------------- counted runs

@pytest.mark.validation
@pytest.mark.parametrize("write_fraction", (0.0, 0.3))
def test_gpu_traffic_crosses_every_segment(write_fraction):
    st = stack("hbm4-12h-plain")
    r = run_stack(st, gpu=GpuStream(1 << 20, write_fraction=write_fraction))
    c = r.command_counts
    rd, wr = (c["RD"] + c["RDA"]) * 256, (c["WR"] + c["WRA"]) * 256
    assert rd + wr == r.gpu_bytes * 8
    for a in TO_BASE_DIE:
        assert r.actions[a] == rd + wr
    assert r.actions["gpu_read_bits"] == rd and r.actions["gpu_write_bits"] == wr
    # energy per bit moved = the sum of the segments
    assert per_bit_energy(st, r.actions) / (rd + wr) == pytest.approx(path_pj_per_bit(st, "gpu_read"), rel=1e-12)
    assert per_bit_energy(st, r.actions) == pytest.approx(
        rd * path_pj_per_bit(st, "gpu_read") + wr * path_pj_per_bit(st, "gpu_write"), rel=1e-12)


@pytest.mark.validation
@pytest.mark.parametrize("fmt", ("fp16", "int8"))
def test_dma_is_its_read_plus_its_write(fmt):
    st = stack()
    r = run_stack(st, dma=[DmaJob(256 << 10, fmt=fmt)])
    c = r.command_counts
    rd, wr = c["RD"] * 256, c["WR"] * 256
    assert rd == r.dma_read_bytes * 8 and wr == r.dma_write_bytes * 8
    for a in TO_BASE_DIE:
        assert r.actions[a] == rd + wr
    assert r.actions["gpu_read_bits"] == r.actions["gpu_write_bits"] == 0
    assert per_bit_energy(st, r.actions) == pytest.approx(
        rd * path_pj_per_bit(st, "dma_read") + wr * path_pj_per_bit(st, "dma_write"), rel=1e-12)


@pytest.mark.validation
@pytest.mark.parametrize("placement", ("bank", "bank_pair", "bank_group", "base_die"))
def test_pim_reads_cross_only_the_segments_below_their_units(placement):
    st = stack("hbm4-12h-tokenstack", f"pim.placement={placement}")
    r = run_stack(st, programs=attention_programs(st, tokens=2048, **LLAMA70))
    u = PimUnits.of(st)
    pg = r.command_counts
    array = (pg["PRD"] if placement == "base_die" else pg["MACab"]) * u.bytes_per_mac_cmd * 8
    assert array == sum(t["kv_bytes"] for t in r.pim_totals.values()) * 8
    xfer = 0 if placement == "base_die" else (pg["PRD"] + pg["PWR"]) * 256
    want = {"cell_rw_bits": array, "bank_to_bankgroup_bits": xfer, "bankgroup_to_global_bits": xfer,
            "tsv_bits": xfer, "gpu_read_bits": 0, "gpu_write_bits": 0}
    if placement == "bank_group":
        want["bank_to_bankgroup_bits"] = array
    if placement == "base_die":
        want.update(dict.fromkeys(TO_BASE_DIE, array))
    assert {a: r.actions[a] for a in SEGMENTS} == want
    assert per_bit_energy(st, r.actions) == pytest.approx(
        array * path_pj_per_bit(st, f"pim_read_{placement}") + xfer * path_pj_per_bit(st, f"unit_transfer_{placement}"),
        rel=1e-12)
    if placement == "bank":  # bank-level PIM per array bit = the cell segment only
        assert path_pj_per_bit(st, "pim_read_bank") == energy_table_pj(st)["cell_rw_bits"]


@pytest.mark.validation
def test_counted_acts_stand_in_for_fgdram_act_share():
    # AttAcc's bank-level PIM on HBM3: cell segment + the counted all-bank ACTs per array bit comes out
    # near AttAcc's 0.55 pJ/bit, which amortizes ACT/PRE at 0.11 pJ/bit (hardware.md §2)
    st = stack("hbm3-attacc-pim")
    r = run_stack(st, programs=attention_programs(st, tokens=4096, **LLAMA70))
    e = r.energy_pj
    assert (e["cell_rw_bits"] + e["pim_bank_acts"]) / r.actions["cell_rw_bits"] == pytest.approx(0.55, rel=0.1)


@pytest.mark.validation
def test_characterized_stream_counts_the_whole_gpu_read_path():
    st = stack("hbm4-12h-plain")
    _, acts, _ = simulate_op(st, OpSpec("stream", tier="capacity"), 65536.0, 0.0)
    for a in PATHS["gpu_read"]:
        assert acts[a] == pytest.approx(65536 * 8)
    assert per_bit_energy(st, acts) == pytest.approx(65536 * 8 * path_pj_per_bit(st, "gpu_read"))


# ---------------------------------------------------------------- linearity

def _with_table(st, factor):
    """The same stack with every DRAM energy figure x `factor` (an energy-technology sweep point)."""
    e = st.dram.config.energy
    e2 = replace(e, **{f: getattr(e, f) * factor for f in e.__dataclass_fields__})
    return replace(st, dram=replace(st.dram, config=replace(st.dram.config, energy=e2)))


@pytest.mark.validation
def test_energy_is_linear_in_counts_and_a_table_sweep_reuses_them():
    st = stack()
    a = run_stack(st, gpu=GpuStream(256 << 10)).actions
    b = run_stack(st, dma=[DmaJob(64 << 10)], programs=attention_programs(st, tokens=512, **LLAMA70)).actions
    both = {k: a.get(k, 0.0) + b.get(k, 0.0) for k in set(a) | set(b) if k in ACTIONS}
    ea, eb, eab = energy_pj(st, a, 100.0), energy_pj(st, b, 100.0), energy_pj(st, both, 100.0)
    for k in ACTIONS:
        assert eab[k] == pytest.approx(ea[k] + eb[k], rel=1e-12)
        assert energy_pj(st, {x: 3 * v for x, v in both.items()}, 100.0)[k] == pytest.approx(3 * eab[k], rel=1e-12)
    # another energy technology: the same counts, a new table
    st2 = _with_table(st, 0.5)
    e2 = energy_pj(st2, both, 100.0)
    table2 = energy_table_pj(st2)
    for k in ACTIONS:
        assert e2[k] == pytest.approx(both.get(k, 0.0) * table2[k], rel=1e-12)
    for k in ("dram_act", *SEGMENTS, "pim_bank_acts", "refresh_ab"):
        assert e2[k] == pytest.approx(0.5 * eab[k], rel=1e-12)
    assert e2["pim_macs"] == eab["pim_macs"]  # a stack-config figure, not swept here
    # count_path adds a path's bits to exactly its actions
    acc = count_path({}, "gpu_write", 8.0)
    assert acc == dict.fromkeys(PATHS["gpu_write"], 8.0)
    assert np.array_equal(path_vector("gpu_write") * 8.0, np.array([acc.get(x, 0.0) for x in ACTIONS]))


@pytest.mark.unit
def test_static_and_refresh_power():
    st = stack()
    e = st.dram.config.energy
    out = energy_pj(st, {}, 1000.0)
    assert set(ACTIONS) <= set(out) and all(out[a] == 0 for a in ACTIONS)
    assert static_power_mw(st) == e.background_mw_per_channel * st.dram.org.channels
    assert out["static"] == pytest.approx((static_power_mw(st) + refresh_power_mw(st)) * 1000.0)
    # counted refreshes replace the average refresh power
    counted = energy_pj(st, {"refresh_ab": 2.0}, 1000.0)
    assert counted["static"] == pytest.approx(static_power_mw(st) * 1000.0)
    assert counted["refresh_ab"] == 2 * e.ref_ab_pj


# ---------------------------------------------------------------- static power of the serving system

def _zero_actions(steps: int = 1) -> dict:
    from tokenstack_sim.sim.step_cost import COMPONENTS

    return {c: np.zeros(steps, np.dtype([(a, np.float64) for a in names])) for c, names in COMPONENTS.items()}


@pytest.mark.unit
@pytest.mark.parametrize("name", ["gpu-hbm4", "attacc-hbm4", "tokenstack-hbm4"])
def test_gpu_and_link_static_power_times_span(name):
    from tokenstack_sim.sim.engine import energy_pj as run_energy_pj

    s = load_config(name)
    span_s = 2.5
    e = run_energy_pj(s, _zero_actions(), span_s)
    # W x s = J = 1e12 pJ, per GPU; each its own "static" action of its component
    assert e["gpu"]["static"] == pytest.approx(s.gpu.config.static_power_w * s.gpus * span_s * 1e12, rel=1e-12)
    assert e["gpu_link"]["static"] == pytest.approx(s.gpu_link.config.static_power_w * s.gpus * span_s * 1e12,
                                                    rel=1e-12)
    assert e["gpu"]["static"] > 0 and e["gpu_link"]["static"] > 0
    if s.pim_link is not None:
        assert e["pim_link"]["static"] == pytest.approx(s.pim_link.config.static_power_w * s.gpus * span_s * 1e12,
                                                        rel=1e-12)
        assert e["pim_link"]["static"] > 0
    else:
        assert "pim_link" not in e
    # with no counts, only static terms are non-zero
    assert all(v == 0 for c in e.values() for a, v in c.items() if a != "static")
    # linear in the span
    e2 = run_energy_pj(s, _zero_actions(), 2 * span_s)
    for comp, acts in e.items():
        if "static" in acts:
            assert e2[comp]["static"] == pytest.approx(2 * acts["static"], rel=1e-12)


@pytest.mark.unit
def test_one_gpu_charges_no_gpu_link_static():
    from tokenstack_sim.sim.engine import energy_pj as run_energy_pj

    s = load_config("gpu-hbm4", ["gpus=1", "tp=1"])
    e = run_energy_pj(s, _zero_actions(), 1.0)
    assert "static" not in e["gpu_link"]
    assert e["gpu"]["static"] == pytest.approx(s.gpu.config.static_power_w * 1e12)


@pytest.mark.unit
def test_static_power_sweep_reuses_counts_and_span():
    """Another static power (or table) is another energy_pj call on the same counts and span: only the swept
    terms change."""
    from tokenstack_sim.sim.engine import energy_pj as run_energy_pj

    s = load_config("attacc-hbm4")
    acts = _zero_actions(3)
    acts["gpu"]["flops_bf16"] = [1e12, 2e12, 3e12]
    acts["gpu"]["l2_bytes"] = 5e9
    acts["gpu_stacks"]["gpu_read_bits"] = 8e9
    acts["gpu_link"]["link_bytes"] = 1e8
    acts["pim_link"]["link_bytes"] = 2e8
    base = run_energy_pj(s, acts, 4.0)
    swept = replace(s, gpu=load_config("b200", ["static_power_w=0"]),
                    gpu_link=load_config("nvlink5", ["static_power_w=1.0"]))
    e = run_energy_pj(swept, acts, 4.0)
    assert e["gpu"]["static"] == 0
    assert e["gpu_link"]["static"] == pytest.approx(1.0 * s.gpus * 4.0 * 1e12)
    for comp, a_pj in base.items():
        for a, pj in a_pj.items():
            if (comp, a) not in (("gpu", "static"), ("gpu_link", "static")):
                assert e[comp][a] == pj, (comp, a)


@pytest.mark.unit
def test_static_power_is_refused_negative():
    from tokenstack_sim.errors import InputError

    with pytest.raises(InputError, match="static_power_w"):
        load_config("b200", ["static_power_w=-1"])
    with pytest.raises(InputError, match="static_power_w"):
        load_config("nvlink4", ["static_power_w=-1"])
