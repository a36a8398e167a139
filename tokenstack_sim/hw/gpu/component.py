"""A GPU as a counted component: kernel timing plus the counts energy is computed from.

`Gpu` binds a GPU spec to the peak bandwidth of the memory attached to it (from the stacks) and an
optional calibration table; every kernel it times adds to `GpuStats` (kernels, FLOPs by data type,
DRAM bytes, busy time). Energy is counts x the GPU's energy table (`GpuStats.energy_pj`): FLOPs x pJ/FLOP
plus every DRAM byte once through L2. The DRAM energy of those bytes belongs to the stacks; static power
x time is left to the caller (it knows the wall-clock span, this component only knows busy time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tokenstack_sim.config.gpu import DTYPES, ResolvedGpu
from tokenstack_sim.hw.gpu import roofline


@dataclass
class GpuStats:
    kernels: int = 0
    flops: dict[str, float] = field(default_factory=lambda: {d: 0.0 for d in DTYPES})
    dram_bytes: float = 0.0
    busy_s: float = 0.0

    def energy_pj(self, gpu: ResolvedGpu) -> dict[str, float]:
        """Dynamic energy by part, pJ: compute (FLOPs x pJ/FLOP per dtype) and L2 (DRAM bytes x L2 pJ/B)."""
        e = gpu.config.energy
        compute = sum(self.flops[d] * getattr(e.pj_per_flop, d) for d in DTYPES)
        return {"compute_pj": compute, "l2_pj": self.dram_bytes * e.l2_pj_per_byte}


class Gpu:
    """A GPU attached to memory of `mem_bw_GBps` peak bandwidth, counting what it runs."""

    def __init__(self, spec: ResolvedGpu, mem_bw_GBps: float, *, calibration=None, fallback: str = "error"):
        self.spec = spec
        self.mem_bw_GBps = float(mem_bw_GBps)
        self.calibration = calibration
        self.fallback = fallback
        self.stats = GpuStats()

    def _count(self, t, flops, nbytes, dtype: str) -> None:
        t = np.asarray(t)
        self.stats.kernels += int(t.size)
        self.stats.busy_s += float(t.sum())
        self.stats.flops[dtype] += float(np.sum(flops))
        self.stats.dram_bytes += float(np.sum(nbytes))

    def gemm(self, m, n, k, dtype: str, *, weight_bytes=None, act_bytes=None):
        """Time of GEMM kernels (one per broadcast element), counted."""
        t = roofline.gemm_time_s(self.spec, m, n, k, dtype, self.mem_bw_GBps, weight_bytes=weight_bytes,
                                 act_bytes=act_bytes, calibration=self.calibration, fallback=self.fallback)
        flops, nbytes = roofline.gemm_counts(m, n, k, dtype, weight_bytes=weight_bytes, act_bytes=act_bytes)
        shape = np.shape(t)
        self._count(t, np.broadcast_to(flops, shape), np.broadcast_to(nbytes, shape), dtype)
        return t

    def attention(self, q_tokens, context_tokens, *, n_heads_q: int, n_heads_kv: int, head_dim: int, dtype: str,
                  kv_bytes=None, act_bytes=None, causal: bool = True, kernel_of=None, n_kernels=None):
        """Time of attention kernels (see roofline.attention_time_s), counted."""
        t = roofline.attention_time_s(self.spec, q_tokens, context_tokens, n_heads_q=n_heads_q,
                                      n_heads_kv=n_heads_kv, head_dim=head_dim, dtype=dtype,
                                      mem_bw_GBps=self.mem_bw_GBps, kv_bytes=kv_bytes, act_bytes=act_bytes,
                                      causal=causal, kernel_of=kernel_of, n_kernels=n_kernels,
                                      calibration=self.calibration, fallback=self.fallback)
        flops, nbytes, _ = roofline.attention_counts(q_tokens, context_tokens, n_heads_q=n_heads_q,
                                                     n_heads_kv=n_heads_kv, head_dim=head_dim, dtype=dtype,
                                                     kv_bytes=kv_bytes, act_bytes=act_bytes, causal=causal)
        self.stats.kernels += int(np.size(t))
        self.stats.busy_s += float(np.sum(t))
        self.stats.flops[dtype] += float(np.sum(flops))
        self.stats.dram_bytes += float(np.sum(nbytes))
        return t
