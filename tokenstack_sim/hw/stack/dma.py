"""Cross-layer DMA and GPU traffic as request streams for the base-die controller.

A DMA of N bytes is a read of N bytes on the source tier plus a write on the destination tier, issued as
real commands on the channels' shared buses (no free path). Each write waits for the read that holds
its data, plus the base die's buffer latency and, when it quantizes, the quantizer's pipeline; a
quantizing DMA writes `size_ratio` of the bytes it reads, and its writes are spaced by the quantizers'
throughput. GPU traffic is stream 0 (in order, saturating; or open loop at a given rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tokenstack_sim.hw.dram import kernels
from tokenstack_sim.hw.stack import quantize
from tokenstack_sim.hw.stack.layout import TierMap

GPU, DMA_READ, DMA_WRITE = 0, 1, 2


@dataclass(frozen=True)
class DmaJob:
    nbytes: int
    src: str = "capacity"
    dst: str = "pim"
    fmt: str = "fp16"  # format written: fp16 (a copy) or fp8 / int8 / int4 (inline quantization)
    group: int = 32
    channels: tuple[int, ...] | None = None
    src_sids: tuple[int, ...] | None = None
    dst_sids: tuple[int, ...] | None = None
    pcs: tuple[int, ...] | None = None
    src_line0: int = 0
    dst_line0: int = 0
    dequantize: bool = False  # promotion: reads the quantized form and writes FP16


@dataclass(frozen=True)
class GpuStream:
    nbytes: int
    tier: str = "capacity"
    channels: tuple[int, ...] | None = None
    sids: tuple[int, ...] | None = None
    rate_GBps: float | None = None  # None: as fast as the stack serves it
    write_fraction: float = 0.0
    seed: int = 0


@dataclass
class Streams:
    coords: dict
    is_write: np.ndarray
    stream: np.ndarray
    dep: np.ndarray
    arrive: np.ndarray
    open_loop: bool
    quant_elements: int
    dma_read_bytes: int
    dma_write_bytes: int


def build_streams(stack, gpu: GpuStream | None, dma: tuple[DmaJob, ...] | list) -> Streams:
    acc = stack.dram.access_bytes
    parts = {k: [] for k in ("ch", "pc", "sid", "bg", "ba", "row", "col")}
    is_write, stream, dep, arrive = [], [], [], []
    n = 0
    open_loop = False

    def add(coords, w, s, d, a):
        nonlocal n
        for k in parts:
            parts[k].append(coords[k])
        is_write.append(w)
        stream.append(np.full(len(w), s, np.int64))
        dep.append(d)
        arrive.append(a)
        n += len(w)

    if gpu is not None and gpu.nbytes > 0:
        m = TierMap.of(stack, gpu.tier, channels=gpu.channels, sids=gpu.sids)
        k = math.ceil(gpu.nbytes / acc)
        lines = np.arange(k, dtype=np.int64) % m.lines
        rng = np.random.default_rng(gpu.seed)
        w = rng.random(k) < gpu.write_fraction if gpu.write_fraction > 0 else np.zeros(k, bool)
        a = np.zeros(k, np.int64)
        if gpu.rate_GBps:
            open_loop = True
            a = np.floor(np.arange(k) * acc / gpu.rate_GBps / stack.dram.tck_ns).astype(np.int64)
        add(m.decode(lines), w, GPU, np.full(k, -1, np.int64), a)
    quant_elements = 0
    rd_bytes = wr_bytes = 0
    for job in dma:
        ratio = quantize.size_ratio(job.fmt, job.group)
        src = TierMap.of(stack, job.src, channels=job.channels, sids=job.src_sids, pcs=job.pcs)
        dst = TierMap.of(stack, job.dst, channels=job.channels, sids=job.dst_sids, pcs=job.pcs)
        n_rd = math.ceil(job.nbytes * (ratio if job.dequantize else 1) / acc)
        n_wr = math.ceil(job.nbytes * (1 if job.dequantize else ratio) / acc)
        out_per_in = n_wr / n_rd
        rd_lines = (job.src_line0 + np.arange(n_rd, dtype=np.int64)) % src.lines
        wr_lines = (job.dst_line0 + np.arange(n_wr, dtype=np.int64)) % dst.lines
        first_read = n
        add(src.decode(rd_lines), np.zeros(n_rd, bool), DMA_READ, np.full(n_rd, -1, np.int64),
            np.zeros(n_rd, np.int64))
        need = np.minimum(np.ceil((np.arange(n_wr) + 1) / out_per_in - 1e-9).astype(np.int64) - 1, n_rd - 1)
        add(dst.decode(wr_lines), np.ones(n_wr, bool), DMA_WRITE, first_read + need, np.zeros(n_wr, np.int64))
        if job.fmt not in ("fp16", "bf16"):
            quant_elements += job.nbytes // 2
        rd_bytes += n_rd * acc
        wr_bytes += n_wr * acc
    if n == 0:
        z = np.zeros(0, np.int64)
        return Streams({k: z for k in parts}, np.zeros(0, bool), z, z, z, False, 0, 0, 0)
    return Streams({k: np.concatenate(v).astype(np.int64) for k, v in parts.items()}, np.concatenate(is_write),
                   np.concatenate(stream), np.concatenate(dep), np.concatenate(arrive), open_loop,
                   quant_elements, rd_bytes, wr_bytes)


def stream_params(stack, dma: tuple[DmaJob, ...] | list) -> np.ndarray:
    """(3, 4) kernel stream table: priority, dependency latency, entry spacing x FP, queue share."""
    b = stack.config.basedie
    ctl = stack.dram.config.controller
    prio_gpu, prio_dma = {"gpu_first": (0, 1), "dma_first": (1, 0), "fifo": (0, 0)}[b.arbitration]
    share = max(1, math.floor(b.dma_queue_share * min(ctl.read_queue, ctl.write_queue)))
    quantizing = any(j.fmt not in ("fp16", "bf16") for j in dma)
    dep_lat = b.dma_buffer_latency_cycles + (quantize.pipeline_cycles(stack) if quantizing else 0)
    spacing_fp = 0
    if quantizing:
        # the quantizers emit one 32 B line per (input elements of that line / stack throughput) cycles
        j = next(j for j in dma if j.fmt not in ("fp16", "bf16"))
        ratio = quantize.size_ratio(j.fmt, j.group)
        in_elems_per_line = stack.dram.access_bytes / ratio / 2
        spacing_fp = math.ceil(in_elems_per_line / quantize.elements_per_cycle(stack) * kernels.FP)
    big = 1 << 40
    return np.array([[prio_gpu, 0, 0, big], [prio_dma, 0, 0, share], [prio_dma, dep_lat, spacing_fp, share]],
                    np.int64)
