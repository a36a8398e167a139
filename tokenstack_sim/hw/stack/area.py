"""Silicon area of a stack, so designs can be compared at equal area as well as at equal dies.

A PIM die is counted at the area of a plain die: Aquabolt-XL's PCUs replace half the cell arrays, so
the die keeps its footprint and loses capacity (hardware.md §3) — the cost shows up as capacity, not
area. Base-die logic (controller, DMA engine, translation, quantizers, base-die PIM units) is added from
the stack's [area] table; those values are estimates [E] and sweepable.
"""

from __future__ import annotations


def stack_area(stack) -> dict:
    cfg = stack.config
    a, o = cfg.area, stack.dram.org
    dies = len(stack.dies) * a.die_mm2
    logic = a.base_die_controller_mm2 + a.quantizer_mm2 * cfg.basedie.quant_units_per_channel * o.channels
    if stack.has_pim and cfg.pim.placement == "base_die":
        logic += a.base_die_pim_unit_mm2 * cfg.pim.base_die_units_per_pc * o.pseudo_channels * o.channels
    return {"dies_mm2": dies, "base_die_mm2": a.base_die_mm2, "base_die_logic_mm2": logic,
            "total_mm2": dies + a.base_die_mm2,
            "capacity_GiB_per_cm2": stack.capacity_bytes / 2**30 / ((dies + a.base_die_mm2) / 100)}
