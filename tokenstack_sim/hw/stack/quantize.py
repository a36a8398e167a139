"""Inline KV quantization on the base die during migration, and dequantization on promotion.

FP16/BF16 -> FP8, INT8 or INT4 with one FP16 scale per group of G elements: the stored size relative
to FP16 is bits/16 + 1/G (INT8: 0.5 + 1/G, as the issue states). Throughput: `quant_units_per_channel`
pipelined units of `quant_lanes` elements per cycle at `quant_clock_ghz` (hardware.md §5: 16 lanes at
1 GHz, about 2 units per HBM4 channel keep up with line rate [E]); energy per element from the stack's
`pim_energy.quant_pj_per_element` (hardware.md §5: 0.2-0.4 pJ at 5/4 nm [E]).
"""

from __future__ import annotations

from tokenstack_sim.errors import InputError

BITS = {"fp16": 16, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4}


def size_ratio(fmt: str, group: int) -> float:
    """Stored bytes per FP16 byte after quantizing to `fmt` with one FP16 scale per `group` elements."""
    if fmt not in BITS:
        raise InputError(f"unknown KV format {fmt!r}; known: {', '.join(BITS)}", where="quant.format")
    if fmt in ("fp16", "bf16"):
        return 1.0
    if group < 1:
        raise InputError(f"group size must be >= 1, got {group}", where="quant.group")
    return BITS[fmt] / 16 + 1 / group


def elements_per_cycle(stack) -> float:
    """Quantizer throughput of the whole stack, elements per DRAM cycle."""
    b = stack.config.basedie
    per_channel = b.quant_units_per_channel * b.quant_lanes * b.quant_clock_ghz * stack.dram.tck_ns
    return per_channel * stack.dram.org.channels


def pipeline_cycles(stack) -> int:
    """Quantizer latency in DRAM cycles."""
    b = stack.config.basedie
    import math

    return math.ceil(b.quant_pipeline_cycles / b.quant_clock_ghz / stack.dram.tck_ns)
