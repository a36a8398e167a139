"""Energy of a stack run: counted actions x an energy table, plus static power x time.

Actions carry their unit in the name. Keeping counts and table apart lets a sweep over energy technology
reuse the timing: the characterized op costs store action counts, not joules.

| action                 | what is counted                                   | table entry (stack/DRAM config)  |
|------------------------|---------------------------------------------------|----------------------------------|
| dram_act               | ACT (+ its PRE) of one bank by the request queues | energy.act_pre_pj                |
| gpu_read_bits          | bits read to the stack's pins (cell..PHY)         | energy.rd_pj_per_bit             |
| gpu_write_bits         | bits written from the pins                        | energy.wr_pj_per_bit             |
| dma_bits               | bits a DMA reads or writes (cell..base die)       | pim_energy.base_die_read_pj_per_bit |
| pim_bank_acts          | banks opened by all-bank ACTs                     | energy.act_pre_pj                |
| pim_array_bits         | bits read from the arrays into PIM units          | pim_energy.<placement> pJ/bit    |
| pim_macs               | FP16 MACs in PIM units                            | pim_energy.mac_pj                |
| unit_transfer_bits     | bits moved between units and the base die         | pim_energy.unit_transfer_pj_per_bit |
| quant_elements         | elements quantized or dequantized                 | pim_energy.quant_pj_per_element  |
| softmax_elements       | scores through the base-die softmax               | pim_energy.softmax_pj_per_element |
| refresh_ab / refresh_pb| REFab / REFpb commands                            | energy.ref_ab_pj / ref_pb_pj     |

Static: `energy.background_mw_per_channel` x channels x time. A DMA is the sum of its read and its
write actions. Left out: the PHY's idle power and the base-die logic's leakage (not in any cited table).
"""

from __future__ import annotations

ACTIONS = ("dram_act", "gpu_read_bits", "gpu_write_bits", "dma_bits", "pim_bank_acts", "pim_array_bits",
           "pim_macs", "unit_transfer_bits", "quant_elements", "softmax_elements", "refresh_ab", "refresh_pb")


def energy_table_pj(stack) -> dict[str, float]:
    """pJ per action for this stack."""
    e = stack.dram.config.energy
    pe = stack.config.pim_energy
    placement = stack.config.pim.placement
    array = {"bank": pe.bank_read_pj_per_bit, "bank_pair": pe.bank_read_pj_per_bit,
             "bank_group": pe.bank_group_read_pj_per_bit, "base_die": pe.base_die_read_pj_per_bit}[placement]
    return {"dram_act": e.act_pre_pj, "gpu_read_bits": e.rd_pj_per_bit, "gpu_write_bits": e.wr_pj_per_bit,
            "dma_bits": pe.base_die_read_pj_per_bit, "pim_bank_acts": e.act_pre_pj, "pim_array_bits": array,
            "pim_macs": pe.mac_pj, "unit_transfer_bits": pe.unit_transfer_pj_per_bit,
            "quant_elements": pe.quant_pj_per_element, "softmax_elements": pe.softmax_pj_per_element,
            "refresh_ab": e.ref_ab_pj, "refresh_pb": e.ref_pb_pj}


def static_power_mw(stack) -> float:
    e = stack.dram.config.energy
    return e.background_mw_per_channel * stack.dram.org.channels


def refresh_power_mw(stack) -> float:
    """Average refresh power of the whole stack: one refresh per scope every tREFI (or per bank every
    tREFIpb x banks), for costs that carry no refresh counts of their own (characterized ops)."""
    d = stack.dram
    e, o, n = d.config.energy, d.org, d.n
    mode = d.config.refresh.mode
    if mode == "all_bank":
        scopes = o.channels * o.pseudo_channels * (o.sids if d.config.scopes.refresh == "sid" else 1)
        return scopes * e.ref_ab_pj / (n["nREFI"] * d.tck_ns)  # pJ / ns = mW
    if mode == "per_bank":
        return o.channels * o.pseudo_channels * e.ref_pb_pj / (n["nREFIpb"] * d.tck_ns)
    return 0.0


def energy_pj(stack, actions: dict[str, float], time_ns: float) -> dict[str, float]:
    """Energy by action and 'static' (background; plus average refresh power when `actions` carries no
    refresh counts), pJ."""
    table = energy_table_pj(stack)
    out = {a: float(actions.get(a, 0)) * table[a] for a in ACTIONS}
    out["static"] = static_power_mw(stack) * time_ns  # mW x ns = pJ
    if "refresh_ab" not in actions and "refresh_pb" not in actions:
        out["static"] += refresh_power_mw(stack) * time_ns
    return out
