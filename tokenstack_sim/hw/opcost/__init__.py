"""Characterized op costs: the cycle kernel's answers for whole ops (stream N bytes from a tier, PIM
attention over K tokens, a DMA with or without quantization), under a background load share, fitted
on a grid, validated at held-out points, cached on disk and looked up vectorized."""

from tokenstack_sim.hw.opcost.characterize import OpCosts, characterize
from tokenstack_sim.hw.opcost.simulate import OpSpec
from tokenstack_sim.hw.opcost.table import OpTable

__all__ = ["OpCosts", "OpSpec", "OpTable", "characterize"]
