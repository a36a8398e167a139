"""Energy of a stack run: counted actions x an energy table, plus static power x time.

Actions carry their unit in the name. Keeping counts and table apart lets a sweep over energy technology
reuse the timing: the characterized op costs store action counts, not joules (docs/energy.md).

Every bit moved is counted once per SEGMENT of the path it crosses (FGDRAM's breakdown via AttAcc,
hardware.md §2), and the table holds pJ/bit per segment:

    cell --cell_rw--> column decoder --bank_to_bankgroup--> bank-group mux --bankgroup_to_global-->
    global I/O mux --tsv--> base die --interposer (PHY)--> GPU

| action                   | what is counted                                     | pJ per action: config key          |
|--------------------------|-----------------------------------------------------|------------------------------------|
| dram_act                 | ACT (+ its PRE) of one bank by the request queues   | act_pre_pj                         |
| cell_rw_bits             | bits read from or written into a cell array         | cell_rw_pj_per_bit                 |
| bank_to_bankgroup_bits   | bits between a column decoder and a bank-group mux  | bank_to_bankgroup_pj_per_bit       |
| bankgroup_to_global_bits | bits between a bank-group mux and the global I/O mux| bankgroup_to_global_pj_per_bit     |
| tsv_bits                 | bits through the TSVs (core die <-> base die)       | tsv_pj_per_bit                     |
| gpu_read_bits            | bits the GPU reads through the PHY / interposer     | interposer_pj_per_bit              |
| gpu_write_bits           | bits the GPU writes through the PHY / interposer    | interposer_pj_per_bit              |
| pim_bank_acts            | banks opened by all-bank ACTs                       | act_pre_pj                         |
| pim_macs                 | FP16 MACs in PIM units                              | pim_energy.mac_pj                  |
| quant_elements           | elements quantized or dequantized                   | pim_energy.quant_pj_per_element    |
| softmax_elements         | scores through the base-die softmax                 | pim_energy.softmax_pj_per_element  |
| refresh_ab / refresh_pb  | REFab / REFpb commands                              | ref_ab_pj / ref_pb_pj              |

Unmarked keys are the DRAM preset's [energy]; `pim_energy.*` the stack's [pim_energy].

Only the GPU's traffic crosses the interposer, so its segment is counted per direction under the names
`gpu_read_bits` / `gpu_write_bits`. `PATHS` says which actions each kind of traffic crosses: a GPU read
or write crosses all of them; a DMA is its read (cell..TSV on the source die) plus its write (TSV..cell
on the destination die); PIM array reads cross the cell segment (bank, bank-pair units), plus
bank->bank-group (bank-group units), or everything up to the TSVs (base-die units); transfers between
near-bank units and the base die cross the segments between the unit and the base die. `count_path`
adds bits along a path, `path_vector` gives the same as a vector in `ACTIONS` order, `path_pj_per_bit`
the energy per bit of a path.

Static: `energy.background_mw_per_channel` x channels x time; refresh: counted REFs, or `refresh_power_mw`
x time for costs that carry no refresh counts. Left out: the PHY's idle power and the base-die logic's
leakage (not in any cited table).
"""

from __future__ import annotations

import numpy as np

ACTIONS = ("dram_act", "cell_rw_bits", "bank_to_bankgroup_bits", "bankgroup_to_global_bits", "tsv_bits",
           "gpu_read_bits", "gpu_write_bits", "pim_bank_acts", "pim_macs", "quant_elements", "softmax_elements",
           "refresh_ab", "refresh_pb")

# Segment actions between a cell and the base die, in path order.
_TO_BASE_DIE = ("cell_rw_bits", "bank_to_bankgroup_bits", "bankgroup_to_global_bits", "tsv_bits")
SEGMENTS = _TO_BASE_DIE + ("gpu_read_bits", "gpu_write_bits")  # every per-bit action

# Which per-bit actions one bit of each kind of traffic crosses.
PATHS: dict[str, tuple[str, ...]] = {
    "gpu_read": _TO_BASE_DIE + ("gpu_read_bits",),
    "gpu_write": _TO_BASE_DIE + ("gpu_write_bits",),
    "dma_read": _TO_BASE_DIE,  # source die -> base die
    "dma_write": _TO_BASE_DIE,  # base die -> destination die
    # PIM array reads, by unit placement
    "pim_read_bank": ("cell_rw_bits",),
    "pim_read_bank_pair": ("cell_rw_bits",),
    "pim_read_bank_group": ("cell_rw_bits", "bank_to_bankgroup_bits"),
    "pim_read_base_die": _TO_BASE_DIE,
    # operands and results between near-bank units and the base die (broadcasts and gathers)
    "unit_transfer_bank": ("bank_to_bankgroup_bits", "bankgroup_to_global_bits", "tsv_bits"),
    "unit_transfer_bank_pair": ("bank_to_bankgroup_bits", "bankgroup_to_global_bits", "tsv_bits"),
    "unit_transfer_bank_group": ("bankgroup_to_global_bits", "tsv_bits"),
    "unit_transfer_base_die": (),  # the units sit on the base die
}


def count_path(actions: dict[str, float], path: str, bits: float) -> dict[str, float]:
    """Add `bits` to each action `path` crosses (in place); returns `actions`."""
    for a in PATHS[path]:
        actions[a] = actions.get(a, 0.0) + float(bits)
    return actions


def path_vector(path: str) -> np.ndarray:
    """Counts of one bit along `path`, in `ACTIONS` order (1.0 on each action it crosses)."""
    v = np.zeros(len(ACTIONS))
    for a in PATHS[path]:
        v[ACTIONS.index(a)] = 1.0
    return v


def path_pj_per_bit(stack, path: str) -> float:
    """Energy of one bit along `path`: the sum of its segments' entries in this stack's table, pJ."""
    table = energy_table_pj(stack)
    return float(sum(table[a] for a in PATHS[path]))


def energy_table_pj(stack) -> dict[str, float]:
    """pJ per action for this stack."""
    e = stack.dram.config.energy
    pe = stack.config.pim_energy
    return {"dram_act": e.act_pre_pj,
            "cell_rw_bits": e.cell_rw_pj_per_bit,
            "bank_to_bankgroup_bits": e.bank_to_bankgroup_pj_per_bit,
            "bankgroup_to_global_bits": e.bankgroup_to_global_pj_per_bit,
            "tsv_bits": e.tsv_pj_per_bit,
            "gpu_read_bits": e.interposer_pj_per_bit, "gpu_write_bits": e.interposer_pj_per_bit,
            "pim_bank_acts": e.act_pre_pj, "pim_macs": pe.mac_pj,
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
