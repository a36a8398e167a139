"""Cross-layer DMA and GPU traffic as request streams for the base-die controller.

A DMA of N bytes is a read of N bytes on the source tier plus a write on the destination tier, issued as
real commands on the channels' shared buses (no free path). With `tsv_width_mult` m > 1 (designs that
add TSVs) each DMA command moves m accesses' worth of data, so the same bytes take 1/m of the commands;
the column path is assumed to widen with the TSVs. The base die translates each page of the source and
destination before the DMA engine touches it (`translation.Translator`, one lookup at a time,
overlapped with the transfer): a read cannot enter before the translations of its pages are done. Each write waits for the read that holds
its data, plus the base die's buffer latency and, when it quantizes, the quantizer's pipeline; a
quantizing DMA writes `size_ratio` of the bytes it reads, and its writes are spaced by the quantizers'
throughput. With `basedie.dma_GBps` set, the DMA engine reads at most that many GB/s per stack: read k
of its jobs enters no earlier than k periods in (as an open-loop GPU stream's arrivals), the cap spread
evenly over the channels a whole DMA between the two tiers uses (per channel: one read per access bytes
x channels / cap), so a job confined to some of those channels (the op-cost slice, one channel) gets
their share of the cap. Unset: no cap. GPU traffic is in order and saturating, or open loop at a given
rate (at an exact period or as a Poisson process). Each source's in-order requests enter as one stream per
channel (`per_channel_streams`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tokenstack_sim.hw.dram import kernels
from tokenstack_sim.hw.stack import quantize
from tokenstack_sim.hw.stack.layout import TierMap

GPU, DMA_READ, DMA_WRITE = 0, 1, 2
SOURCES = 3  # the kernel's in-order streams come in groups of these three, one group per channel


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
    random: bool = False  # uniformly random lines of the tier instead of a sequential sweep
    poisson: bool = False  # open loop: exponential gaps (a Poisson process at rate_GBps), not an exact period


@dataclass
class Streams:
    coords: dict
    is_write: np.ndarray
    kind: np.ndarray  # each request's source: GPU, DMA_READ or DMA_WRITE
    dep: np.ndarray
    arrive: np.ndarray
    open_loop: bool
    quant_elements: int
    dma_read_bytes: int
    dma_write_bytes: int


def per_channel_streams(kind: np.ndarray, ch: np.ndarray, open_loop: bool) -> tuple[np.ndarray, int]:
    """(the kernel's stream of each request, channel groups): each source's in-order requests are one
    stream per channel, `kind + SOURCES x group`, group the channel's rank among those the in-order
    requests use; an open-loop GPU background stays stream 0 (it enters per channel by arrival time).

    Why per channel. The controllers are per channel, and so are the sources behind them: a GPU keeps
    requests to every channel in flight, and a cross-layer DMA's data moves through the base die with
    quantizers per channel (`basedie.quant_units_per_channel`). One in-order stream over every channel
    stalls all of them whenever one channel's queue (or its DMA share of it) is full, and pooled the
    stack's quantizers in one spacing: a whole-stack INT8 demotion of 16 MB took 31.2 us against
    23.0 us for 32 one-channel slices, an FP16 copy +8%, a GPU read +3% (hbm4-12h-tokenstack, no
    refresh). Per channel, a whole-stack run at load 0 takes the one-channel slice's time, as the
    characterized costs assume (hw/opcost/simulate.py, channel symmetry: exact for attention, and for
    streams and copies where each channel gets whole interleave chunks; quantizing DMAs -4.6 .. +7.1%,
    their written lines taking their data from reads on other channels: now 22.8 us for that demotion).
    A one-channel run is unchanged."""
    in_order = (kind != GPU) | (not open_loop)
    chans = np.unique(ch[in_order])
    group = np.searchsorted(chans, ch)
    return np.where(in_order, kind + SOURCES * group, kind).astype(np.int64), max(1, len(chans))


def build_streams(stack, gpu: GpuStream | None, dma: tuple[DmaJob, ...] | list, translator=None,
                  foreground: GpuStream | None = None) -> Streams:
    """Requests of every stream. `foreground` is a second GPU-like stream (in order, in the DMA-read
    slot, served at the GPU's priority) measured under `gpu` as open-loop background; it excludes DMA."""
    acc = stack.dram.access_bytes
    dma_bytes = int(acc * stack.config.basedie.tsv_width_mult)  # data one DMA command moves
    parts = {k: [] for k in ("ch", "pc", "sid", "bg", "ba", "row", "col")}
    is_write, kind, dep, arrive = [], [], [], []
    n = 0
    open_loop = False

    def add(coords, w, s, d, a):
        nonlocal n
        for k in parts:
            parts[k].append(coords[k])
        is_write.append(w)
        kind.append(np.full(len(w), s, np.int64))
        dep.append(d)
        arrive.append(a)
        n += len(w)

    for g, sid_ in ((gpu, GPU), (foreground, DMA_READ)):
        if g is None or g.nbytes <= 0:
            continue
        m = TierMap.of(stack, g.tier, channels=g.channels, sids=g.sids)
        k = math.ceil(g.nbytes / acc)
        # the background starts half-way through the tier so that it does not share rows with the op
        rng = np.random.default_rng(g.seed)
        if g.random:
            lines = rng.integers(0, m.lines, k, dtype=np.int64)
        else:
            lines = (np.arange(k, dtype=np.int64) + (m.lines // 2 if sid_ == GPU and foreground else 0)) % m.lines
        w = rng.random(k) < g.write_fraction if g.write_fraction > 0 else np.zeros(k, bool)
        a = np.zeros(k, np.int64)
        if g.rate_GBps and sid_ == GPU:
            open_loop = True
            if g.poisson:
                gaps = np.random.default_rng([g.seed, 1]).standard_exponential(k)
                a = np.floor((np.cumsum(gaps) - gaps[0]) * acc / g.rate_GBps / stack.dram.tck_ns).astype(np.int64)
            else:
                a = np.floor(np.arange(k) * acc / g.rate_GBps / stack.dram.tck_ns).astype(np.int64)
        add(m.decode(lines), w, sid_, np.full(k, -1, np.int64), a)
    quant_elements = 0
    rd_bytes = wr_bytes = 0
    engine_t = 0.0  # cycles: when the capped DMA engine may issue the next job's first read
    for job in dma:
        ratio = quantize.size_ratio(job.fmt, job.group)
        src = TierMap.of(stack, job.src, channels=job.channels, sids=job.src_sids, pcs=job.pcs)
        dst = TierMap.of(stack, job.dst, channels=job.channels, sids=job.dst_sids, pcs=job.pcs)
        n_rd = math.ceil(job.nbytes * (ratio if job.dequantize else 1) / dma_bytes)
        n_wr = math.ceil(job.nbytes * (1 if job.dequantize else ratio) / dma_bytes)
        out_per_in = n_wr / n_rd
        rd_lines = (job.src_line0 + np.arange(n_rd, dtype=np.int64)) % src.lines
        wr_lines = (job.dst_line0 + np.arange(n_wr, dtype=np.int64)) % dst.lines
        first_read = n
        not_before = np.zeros(n_rd, np.int64)
        if translator is not None:
            # the engine translates source and destination pages in order, one lookup at a time
            page = stack.config.basedie.tlb_page_bytes
            src_pages = rd_lines * dma_bytes // page
            dst_lines = job.dst_line0 + np.minimum(np.arange(n_rd) * n_wr // n_rd, n_wr - 1)
            dst_pages = dst_lines * dma_bytes // page
            cost, done_at, seen = 0, {}, set()
            for k in range(n_rd):
                for key in (("src", job.src, int(src_pages[k])), ("dst", job.dst, int(dst_pages[k]))):
                    if key not in seen:
                        seen.add(key)
                        cost += translator.lookup(key)
                not_before[k] = cost
        period = read_period_cycles(stack, job)
        if period > 0:
            # the engine's cap: read k enters no earlier than k periods after the engine's previous jobs;
            # a read held back (a full queue, a refresh) may then catch up, as an engine serving other
            # channels meanwhile would, so a capped DMA takes bytes / cap plus its tail
            not_before = np.maximum(not_before, np.floor(engine_t + np.arange(n_rd) * period).astype(np.int64))
            engine_t += n_rd * period
        add(src.decode(rd_lines), np.zeros(n_rd, bool), DMA_READ, np.full(n_rd, -1, np.int64), not_before)
        need = np.minimum(np.ceil((np.arange(n_wr) + 1) / out_per_in - 1e-9).astype(np.int64) - 1, n_rd - 1)
        add(dst.decode(wr_lines), np.ones(n_wr, bool), DMA_WRITE, first_read + need, np.zeros(n_wr, np.int64))
        if job.fmt not in ("fp16", "bf16"):
            quant_elements += job.nbytes // 2
        rd_bytes += n_rd * dma_bytes
        wr_bytes += n_wr * dma_bytes
    if n == 0:
        z = np.zeros(0, np.int64)
        return Streams({k: z for k in parts}, np.zeros(0, bool), z, z, z, False, 0, 0, 0)
    return Streams({k: np.concatenate(v).astype(np.int64) for k, v in parts.items()}, np.concatenate(is_write),
                   np.concatenate(kind), np.concatenate(dep), np.concatenate(arrive), open_loop,
                   quant_elements, rd_bytes, wr_bytes)


def stream_params(stack, dma: tuple[DmaJob, ...] | list, foreground: bool = False) -> np.ndarray:
    """(3, 4) kernel stream table of one channel's group (GPU, DMA read, DMA write; per_channel_streams):
    priority, dependency latency, entry spacing x FP, queue share per channel queue."""
    b = stack.config.basedie
    ctl = stack.dram.config.controller
    if foreground:
        # two GPU-like sources served alike: equal priority, each with a queue of the controller's size
        q = min(ctl.read_queue, ctl.write_queue)
        return np.array([[0, 0, 0, q], [0, 0, 0, q], [0, 0, 0, q]], np.int64)
    ctl = stack.dram.config.controller
    prio_gpu, prio_dma = {"gpu_first": (0, 1), "dma_first": (1, 0), "fifo": (0, 0)}[b.arbitration]
    share = max(1, math.floor(b.dma_queue_share * min(ctl.read_queue, ctl.write_queue)))
    quantizing = [j for j in dma if j.fmt not in ("fp16", "bf16")]
    dep_lat = b.dma_buffer_latency_cycles + (quantize.pipeline_cycles(stack) if quantizing else 0)
    spacing_fp = 0
    if quantizing:
        # the quantizers emit one written line per (FP16 elements of that line / throughput) cycles, the
        # throughput of one channel's quantizers: a write stream is one channel's (per_channel_streams), and
        # the quantizers sit per channel; one spacing per stream, so jobs of one run share a format (the
        # first quantizing job's)
        j = quantizing[0]
        ratio = quantize.size_ratio(j.fmt, j.group)
        line_bytes = stack.dram.access_bytes * stack.config.basedie.tsv_width_mult
        fp16_elems_per_line = line_bytes / 2 if j.dequantize else line_bytes / ratio / 2
        per_channel = quantize.elements_per_cycle(stack) / stack.dram.org.channels
        spacing_fp = math.ceil(fp16_elems_per_line / per_channel * kernels.FP)
    big = 1 << 40
    return np.array([[prio_gpu, 0, 0, big], [prio_dma, 0, 0, share], [prio_dma, dep_lat, spacing_fp, share]],
                    np.int64)


def read_period_cycles(stack, job: DmaJob) -> float:
    """DRAM cycles between two reads of `job` entering under the engine's cap `basedie.dma_GBps`; 0 = no cap.

    The cap is per stack and spread evenly over the channels a whole DMA between the job's tiers spreads
    over (those with both tiers, as the op-cost slice counts them): per channel, one read of `dma_bytes`
    every dma_bytes x channels / cap. Read k of a job enters no earlier than k periods in, the period that of
    the job's channel count: a whole DMA reads dma_bytes per dma_bytes / cap, a job on one of 32 channels (the
    op-cost slice) one per 32 x dma_bytes / cap."""
    cap = stack.config.basedie.dma_GBps
    if cap is None:
        return 0.0
    whole = {c for c, _ in stack.tier_units(job.src)} & {c for c, _ in stack.tier_units(job.dst)}
    used = {c for c, _ in TierMap.of(stack, job.src, channels=job.channels, sids=job.src_sids,
                                       pcs=job.pcs).units}
    share = min(1.0, len(used) / max(1, len(whole)))  # of the stack's cap, what this job's channels get
    dma_bytes = int(stack.dram.access_bytes * stack.config.basedie.tsv_width_mult)  # as build_streams
    return dma_bytes / (cap * share) / stack.dram.tck_ns
