"""Roofline timing of GPU kernels (GEMM and attention), vectorized over numpy arrays.

    time = launch_overhead + max(FLOPs / (eta_c(shape) * peak[dtype]), bytes / (eta_bw * mem_bw))

`mem_bw_GBps` is always an argument: it is the peak bandwidth of the memory the kernel streams from
(the stacks attached to the GPU), never a property of the GPU. eta_bw and the full-tile eta_c are the
AttAcc defaults 0.85 / 0.8 (hardware.md §4) unless the GPU config says otherwise.

GEMM compute efficiency falls for shapes that do not fill whole output tiles (tile quantization, NVIDIA
"Matrix Multiplication Background" guide, docs.nvidia.com/deeplearning/performance/dl-performance-matrix-
multiplication): eta_c(m, n) = eta_c * m*n / (ceil(m/tile_m)*tile_m * ceil(n/tile_n)*tile_n), and,
when `wave_quantization` is on, times tiles / (ceil(tiles/SMs) * SMs). Tile sizes are [E] parameters.

Attention FLOPs count QK^T and PV (4 * heads_q * head_dim per attended query-key pair, causal pairs for a
chunk appended to a cache); bytes are K and V read once per kernel plus Q read and O written. Left out:
softmax FLOPs, re-reads of KV by several query tiles (an L2 question), the KV-cache write of new tokens
(a separate kernel in vLLM), and overlap between consecutive kernels.
"""

from __future__ import annotations

import numpy as np

from tokenstack_sim.config.gpu import DTYPE_BYTES, ResolvedGpu
from tokenstack_sim.errors import InputError


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _out(x: np.ndarray, *inputs):
    """A float when every input was a scalar, else the array."""
    return float(x) if all(np.ndim(i) == 0 for i in inputs) else x


def _positive_bw(mem_bw_GBps) -> np.ndarray:
    bw = _f(mem_bw_GBps)
    if not np.all(bw > 0):
        raise InputError(f"memory bandwidth must be > 0 GB/s, got {np.min(bw):g}", where="mem_bw_GBps")
    return bw


def _bytes_per(dtype: str, override) -> float:
    if override is not None:
        return float(override)
    if dtype not in DTYPE_BYTES:
        raise InputError(f"unknown data type {dtype!r}; known: {', '.join(DTYPE_BYTES)}", where="dtype")
    return float(DTYPE_BYTES[dtype])


def roofline_time_s(flops, nbytes, *, peak_flops: float, eta_c, eta_bw: float, mem_bw_GBps,
                    launch_s: float) -> np.ndarray:
    """launch + max(compute time, memory time), elementwise; each element is one kernel."""
    t_c = _f(flops) / (_f(eta_c) * peak_flops)
    t_m = _f(nbytes) / (eta_bw * _positive_bw(mem_bw_GBps) * 1e9)
    return launch_s + np.maximum(t_c, t_m)


# --------------------------------------------------------------------------------------------- GEMM

def gemm_counts(m, n, k, dtype: str, *, weight_bytes: float | None = None, act_bytes: float | None = None):
    """(FLOPs, DRAM bytes) of C[m,n] = A[m,k] @ W[k,n]: A and C in activations, W streamed once."""
    m, n, k = _f(m), _f(n), _f(k)
    for name, x in (("m", m), ("n", n), ("k", k)):
        if not np.all(x >= 1):  # also refuses NaN
            raise InputError(f"GEMM dimensions must be >= 1, got {name} = {x[~(x >= 1)].flat[0]:g}", where=name)
    wb, ab = _bytes_per(dtype, weight_bytes), _bytes_per(dtype, act_bytes)
    return 2.0 * m * n * k, (m * k + m * n) * ab + k * n * wb


def gemm_compute_efficiency(gpu: ResolvedGpu, m, n) -> np.ndarray:
    """eta_c(m, n): the full-tile efficiency times tile (and optionally wave) quantization."""
    e = gpu.config.efficiency
    m, n = _f(m), _f(n)
    tiles_m, tiles_n = np.ceil(m / e.tile_m), np.ceil(n / e.tile_n)
    eta = e.gemm_compute * (m * n) / (tiles_m * e.tile_m * tiles_n * e.tile_n)
    if e.wave_quantization:
        tiles = tiles_m * tiles_n
        sms = gpu.config.sm_count
        eta = eta * tiles / (np.ceil(tiles / sms) * sms)
    return eta


def gemm_roofline_time_s(gpu: ResolvedGpu, m, n, k, dtype: str, mem_bw_GBps, *,
                         weight_bytes: float | None = None, act_bytes: float | None = None):
    flops, nbytes = gemm_counts(m, n, k, dtype, weight_bytes=weight_bytes, act_bytes=act_bytes)
    t = roofline_time_s(flops, nbytes, peak_flops=gpu.peak_flops(dtype), eta_c=gemm_compute_efficiency(gpu, m, n),
                        eta_bw=gpu.config.efficiency.memory_bw, mem_bw_GBps=mem_bw_GBps,
                        launch_s=gpu.launch_overhead_s)
    return _out(t, m, n, k, mem_bw_GBps)


def gemm_time_s(gpu: ResolvedGpu, m, n, k, dtype: str, mem_bw_GBps, *, weight_bytes: float | None = None,
                act_bytes: float | None = None, calibration=None, fallback: str = "error"):
    """Time of GEMM kernels C[m,n] = A[m,k] @ W[k,n] (arrays broadcast; one kernel per element).

    With `calibration` (a `KernelTable`), times come from measured kernels interpolated in log space, from
    the table measured on this GPU at this `mem_bw_GBps` (another GPU or bandwidth is refused); a shape
    outside the measured grid raises InputError unless `fallback="roofline"`."""
    if calibration is None:
        return gemm_roofline_time_s(gpu, m, n, k, dtype, mem_bw_GBps, weight_bytes=weight_bytes,
                                    act_bytes=act_bytes)
    M, N, K, BW = np.broadcast_arrays(_f(m), _f(n), _f(k), _f(mem_bw_GBps))

    def roof(mask):
        return gemm_roofline_time_s(gpu, M[mask], N[mask], K[mask], dtype, BW[mask], weight_bytes=weight_bytes,
                                    act_bytes=act_bytes)

    t = calibration.lookup("gemm", gpu.name, dtype, M, N, K, mem_bw_GBps=BW, fallback=fallback, roofline=roof)
    return _out(t, m, n, k, mem_bw_GBps)


# ---------------------------------------------------------------------------------------- attention

def attention_pairs(q_tokens, context_tokens, *, causal: bool = True) -> np.ndarray:
    """Attended (query, key) pairs of a chunk of q new tokens whose last token sees `context_tokens` keys.

    Causal: query j (0-based) of the chunk sees context - q + 1 + j keys, so pairs =
    q*(context - q) + q*(q+1)/2; a decode step (q = 1) sees all `context_tokens`."""
    q, c = _f(q_tokens), _f(context_tokens)
    if not np.all(q >= 1):
        raise InputError(f"attention needs q_tokens >= 1, got {q[~(q >= 1)].flat[0]:g}", where="q_tokens")
    if not np.all(c >= q):
        raise InputError("attention needs context_tokens >= q_tokens (the chunk's own tokens are in its context)",
                         where="context_tokens")
    return q * (c - q) + q * (q + 1) / 2 if causal else q * c


def attention_counts(q_tokens, context_tokens, *, n_heads_q: int, n_heads_kv: int, head_dim: int,
                     dtype: str, kv_bytes: float | None = None, act_bytes: float | None = None,
                     causal: bool = True):
    """(FLOPs, DRAM bytes, attended pairs) per element (one sequence's query chunk)."""
    q, c = _f(q_tokens), _f(context_tokens)
    pairs = attention_pairs(q, c, causal=causal)
    kvb, ab = _bytes_per(dtype, kv_bytes), _bytes_per(dtype, act_bytes)
    flops = 4.0 * n_heads_q * head_dim * pairs
    nbytes = c * 2.0 * n_heads_kv * head_dim * kvb + q * 2.0 * n_heads_q * head_dim * ab
    return flops, nbytes, pairs


def attention_time_s(gpu: ResolvedGpu, q_tokens, context_tokens, *, n_heads_q: int, n_heads_kv: int,
                     head_dim: int, dtype: str, mem_bw_GBps, kv_bytes: float | None = None,
                     act_bytes: float | None = None, causal: bool = True, kernel_of=None,
                     n_kernels: int | None = None, calibration=None, fallback: str = "error"):
    """Time of attention kernels.

    Without `kernel_of`, each element of (q_tokens, context_tokens) is its own kernel. With `kernel_of`
    (an int array, one entry per sequence), sequences are summed into `n_kernels` batched kernels (e.g.
    one per layer of a step), whose FLOPs and bytes are the sums; the result has one time per kernel.
    A calibrated table is looked up at m = query tokens, n = mean attended keys per query,
    k = n_heads_q * head_dim of each kernel, in the grid of this GPU, `n_heads_kv` and `mem_bw_GBps`."""
    flops, nbytes, pairs = attention_counts(q_tokens, context_tokens, n_heads_q=n_heads_q, n_heads_kv=n_heads_kv,
                                            head_dim=head_dim, dtype=dtype, kv_bytes=kv_bytes,
                                            act_bytes=act_bytes, causal=causal)
    q = _f(q_tokens) * np.ones_like(flops)
    scalar_inputs: tuple = (q_tokens, context_tokens, mem_bw_GBps)
    if kernel_of is not None:
        idx = np.asarray(kernel_of, dtype=np.int64)
        n_k = int(n_kernels if n_kernels is not None else (idx.max() + 1 if idx.size else 0))
        flops = np.bincount(idx, weights=flops, minlength=n_k)
        nbytes = np.bincount(idx, weights=nbytes, minlength=n_k)
        pairs = np.bincount(idx, weights=pairs, minlength=n_k)
        q = np.bincount(idx, weights=q, minlength=n_k)
        scalar_inputs = (np.zeros(1),)
        if np.any(q <= 0):
            raise InputError("a batched attention kernel has no sequence assigned to it", where="kernel_of")

    e = gpu.config.efficiency
    flops, nbytes, q, pairs, bw = np.broadcast_arrays(flops, nbytes, q, pairs, _f(mem_bw_GBps))

    def roof(mask):
        return roofline_time_s(flops[mask], nbytes[mask], peak_flops=gpu.peak_flops(dtype),
                               eta_c=e.attention_compute, eta_bw=e.memory_bw, mem_bw_GBps=bw[mask],
                               launch_s=gpu.launch_overhead_s)

    if calibration is None:
        t = roof(np.ones(flops.shape, bool)).reshape(flops.shape)
    else:
        k = np.full(q.shape, float(n_heads_q * head_dim))
        t = calibration.lookup("attention", gpu.name, dtype, q, pairs / q, k, mem_bw_GBps=bw, n_heads_kv=n_heads_kv,
                               fallback=fallback, roofline=roof)
    return _out(t, *scalar_inputs)
