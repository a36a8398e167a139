"""The GPU's compute: roofline (or measured-table) kernel timing, counted for energy.

Public API:
- `gemm_time_s(gpu, m, n, k, dtype, mem_bw_GBps, ...)`, `gemm_counts(...)`
- `attention_time_s(gpu, q_tokens, context_tokens, ..., mem_bw_GBps, kernel_of=None)`, `attention_counts(...)`
- `load_kernel_table(csv_path) -> KernelTable` (pass as `calibration=`; `fallback="roofline"` to opt in)
- `Gpu(spec, mem_bw_GBps)`: the counted component; `Gpu.stats.energy_pj(spec)`
"""

from tokenstack_sim.hw.gpu.calibration import KernelTable, load_kernel_table
from tokenstack_sim.hw.gpu.component import Gpu, GpuStats
from tokenstack_sim.hw.gpu.roofline import (attention_counts, attention_pairs, attention_time_s, gemm_compute_efficiency,
                                            gemm_counts, gemm_time_s, roofline_time_s)

__all__ = ["Gpu", "GpuStats", "KernelTable", "attention_counts", "attention_pairs", "attention_time_s",
           "gemm_compute_efficiency", "gemm_counts", "gemm_time_s", "load_kernel_table", "roofline_time_s"]
