"""Simulate one op on a representative slice of a stack: one channel, scaled by channel symmetry.

An op's work is spread evenly over the channels of its tier (the tier maps interleave channels first,
and attention shards KV heads over every PIM scope), so the stack's time for the op is the time one
channel takes for its share, and the stack's action counts are that channel's times the channel count.

The load model. A background load share is open-loop reads at `share` x the channel's peak bandwidth,
to the capacity tier of the same channel (the PIM tier where a stack has no capacity tier), lasting
past the op's end (checked; rerun with more if not). By default (`background="poisson"`) the reads
arrive as a Poisson process (exponential gaps) at uniformly random lines of that tier, and the op's
cost under the load is the EXPECTED time over the background's realizations, estimated as the mean over
a fixed sequence of draws:

- draw r's random numbers (lines and gaps) are seeded by (op, r) only, not by the size or the share:
  every size and every load of an op sees the same draws (common random numbers); a higher share
  brings the same requests closer together in time, so time is continuous in share up to the events
  that change order, and the mean of draws smooths those;
- draws are taken until the standard error of the mean is within DRAW_SE of it (at least
  `min_draws(alone)`, at most DRAWS_MAX), so the number of draws is itself a function of the draws;
- so the cost is a deterministic function of (op, size, share): the table's points and every check of
  the table against the kernel (characterize's held-out checks, the tests, scripts/bench_ops.py) compute
  the same function, and what a check measures is the fit, not the noise of one draw.

Why this and not one realization. What a load share stands for in a serving system is the other
traffic on the same channels: many independent streams interleaved by the controllers, i.e. reads to
scattered rows at irregular times. One realization of that is a random variable: the same DMA of
3.4 MB under 0.2 took 10.4-12.7 us over 8 draws (cv 6%), a 1.7k-token attention 2.7-3.4 us (cv 7%), a
300 KB DMA cv 13% (measured, hbm4-12h-tokenstack). A table of one realization (`background="random"`,
the previous default: exact-period arrivals of random lines seeded by (op, share)) has that noise as
structure in size and share, which no table follows (DMAs missed by 13-20% at the levels, 14-49%
between them). A phase-locked sequential sweep (`background="sequential"`, older still) fell into step
with a sequential op, so time was not even monotonic in load. Both stay selectable to compare against.

What remains in the expectation is the op's own structure (a DMA's write drains at the buffer's
watermark vs the write-age timer, refresh steps, a knee where the background and the op ask for more
row activations than the channel serves), which the table's refinement follows (characterize.py).

Left out: channels that differ (a partial SID's PIM tier uses only its own channels, which is what the
slice picks); cross-channel effects (none exist in the kernel: channels share no timing state);
background writes.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.stack.dma import DmaJob, GpuStream
from tokenstack_sim.hw.stack.pim import attention_programs
from tokenstack_sim.hw.stack.run import run_stack


MAX_BACKGROUND_BYTES = 256 << 20  # per channel; an op that outlasts this much background starves
# What a load share's background is: "poisson" (default) Poisson arrivals of uniformly random lines,
# the cost being the mean over draws; "random" one realization of random lines at an exact period,
# seeded by (op, share); "sequential" one sweep through the tier. See the module docstring.
BACKGROUNDS = ("poisson", "random", "sequential")
DEFAULT_BACKGROUND = "poisson"
# The expectation over draws ("poisson"). DRAW_SE: the mean's standard error may be this share of it
# [E]: with the table's own interpolation error (REFINE_TOL 2%) it leaves room in the 5% contract.
# The single-draw spread scales ~1/sqrt(op time) (cv 13% at 1 us, 6% at 11 us, 1.8% at 70 us for a DMA
# under 0.2), so short ops take many cheap draws and long ones few costly ones.
DRAW_SE = 0.025
DRAWS_MAX = 16  # [E] bounds a point's cost (ops under ~1 us under 0.2 reach it; their SE is then up to ~8%)
DRAW_MIN_NS = 16_000.0  # [E] at least ceil(this / the op's time alone) draws (3 .. 16): a spread
# estimated from a few draws is itself noisy (a 6.9k-token attention under 0.2 is bimodal, 10.5 or
# 12.8 us: two draws that agree say nothing), so short ops start from more
DRAW_ONE_NS = 32_000.0  # [E] an op this long alone takes one draw: its spread is then <= ~2% (a 20 MB DMA
# under 0.2: cv 1.8%), and characterize scales such sizes from their neighbours (STEADY_NS) anyway


def background_seed(op_id: str, share: float) -> int:
    """The "random"/"sequential" background's RNG seed: a stable hash of (op, share), so a simulation
    gives the same answer in every process and run (Python's hash() is salted per process). Not of the
    size: every size of an op at one load sees the same background. (The "poisson" background's draws
    are seeded by (op, draw) instead: simulate_op.)"""
    return zlib.crc32(f"{op_id}|{float(share)!r}".encode())


@dataclass(frozen=True)
class OpSpec:
    """One characterizable op. `kind`: stream | attention | dma."""
    kind: str
    tier: str = "capacity"  # stream: the tier read
    src: str = "capacity"  # dma
    dst: str = "pim"  # dma
    fmt: str = "fp16"  # dma: the format written (or read, when dequantizing)
    group: int = 32
    dequantize: bool = False
    heads: int = 1  # attention: KV heads stored in this stack
    gqa: int = 1
    head_dim: int = 128
    kv_bytes: int = 2

    @property
    def op_id(self) -> str:
        if self.kind == "stream":
            return f"stream-{self.tier}"
        if self.kind == "dma":
            q = f"-{self.fmt}g{self.group}" if self.fmt not in ("fp16", "bf16") else ""
            return f"dma-{self.src}-{self.dst}{q}{'-dequant' if self.dequantize else ''}"
        if self.kind == "attention":
            return f"attention-h{self.heads}-g{self.gqa}-d{self.head_dim}-b{self.kv_bytes}"
        raise InputError(f"unknown op kind {self.kind!r}; known: stream, attention, dma")

    @property
    def size_unit(self) -> str:
        return "tokens" if self.kind == "attention" else "bytes"


def _slice_channel(stack, tiers: tuple[str, ...]) -> tuple[int, int]:
    """A channel that has every tier the op needs, and how many channels the op spreads over."""
    sets = []
    for t in tiers:
        chans = {c for c, _ in stack.tier_units(t)}
        if not chans:
            raise InputError(f"stack {stack.config.name} has no {t!r} tier")
        sets.append(chans)
    common = set.intersection(*sets)
    if not common:
        raise InputError(f"no channel of {stack.config.name} has both tiers {tiers}")
    return min(common), len(sets[0] if len(tiers) == 1 else common)


def _background_tier(stack) -> str:
    return "capacity" if stack.tier_units("capacity") else "pim"


def size_quantum(stack, op: OpSpec) -> float:
    """The smallest change of size the slice can see: one access on each channel (bytes), or one token."""
    if op.kind == "attention":
        return 1.0
    tiers = (op.src, op.dst) if op.kind == "dma" else (op.tier,)
    return float(stack.dram.access_bytes * _slice_channel(stack, tiers)[1])


def size_breaks(stack, op: OpSpec, top: float) -> np.ndarray:
    """Sizes (bytes, ascending, up to `top`) at which a stream's or a DMA's slice changes: the last size of
    each run of sizes that simulate_op serves as the same requests. The slice moves ceil(size / channels)
    bytes per channel; a stream issues ceil(bytes / access) reads (hw/stack/dma.py build_streams), a DMA
    ceil(bytes x r / dma_bytes) reads and writes with r the format's size ratio on each side (the same
    expressions, in the same floating-point order). Every size in (previous break, break] is therefore
    the op of that break: its time is the break's."""
    if op.kind == "attention":
        raise InputError("attention sizes are whole tokens; size_breaks is for streams and DMAs")
    from tokenstack_sim.hw.stack import quantize

    tiers = (op.src, op.dst) if op.kind == "dma" else (op.tier,)
    n_ch = _slice_channel(stack, tiers)[1]
    per_ch = np.arange(1, math.ceil(top / n_ch) + 2, dtype=np.float64)  # bytes per channel, one past top
    acc = stack.dram.access_bytes
    if op.kind == "stream":
        keys = [np.ceil(per_ch / acc)]
    else:
        dma_bytes = int(acc * stack.config.basedie.tsv_width_mult)
        ratio = quantize.size_ratio(op.fmt, op.group)
        keys = [np.ceil(per_ch * (ratio if op.dequantize else 1) / dma_bytes),
                np.ceil(per_ch * (1 if op.dequantize else ratio) / dma_bytes)]
    change = np.zeros(len(per_ch) - 1, bool)
    for k in keys:
        change |= k[1:] != k[:-1]
    ends = per_ch[:-1][change] * n_ch
    return ends[ends <= top]


def min_draws(alone_ns: float) -> int:
    """Draws taken before the standard error is looked at, from the op's time without load."""
    if alone_ns >= DRAW_ONE_NS:
        return 1
    return int(min(16, max(3, math.ceil(DRAW_MIN_NS / max(alone_ns, 1.0)))))


def write_drain_step(stack, op: OpSpec) -> tuple[float, float]:
    """The sizes (bytes) on either side of a DMA's first write-drain step under load: the last size whose
    slice writes hi - 1 lines and the first that writes hi, hi being the write buffer's drain watermark
    for DMA runs (hw/stack/run.py: the controller's high watermark, capped at the DMA writes' queue
    share, hw/stack/dma.py stream_params). Under load (reads always queued) a DMA's writes drain when hi
    of them wait or when the oldest has waited the write-age timer: a short DMA of hi writes per channel
    drains at once, one of hi - 1 waits for the timer (a 29 KB INT8 demotion: 199 / 110 ns under 0.1
    at 15 / 16 writes per channel, 220 / 142 ns under 0.2). Past the first drain the writes' phase
    drifts with the reads, and no later step is as sharp (measured at the next four multiples)."""
    from tokenstack_sim.hw.stack import quantize

    if op.kind != "dma":
        raise InputError("write_drain_step is for DMAs")
    c = stack.dram.config.controller
    share = max(1, math.floor(stack.config.basedie.dma_queue_share * min(c.read_queue, c.write_queue)))
    hi = min(max(1, round(c.write_high_watermark * c.write_queue)), share)
    n_ch = _slice_channel(stack, (op.src, op.dst))[1]
    dma_bytes = int(stack.dram.access_bytes * stack.config.basedie.tsv_width_mult)
    ratio = quantize.size_ratio(op.fmt, op.group)
    per_ch = np.arange(1, math.ceil(hi * dma_bytes / min(ratio, 1.0)) + 2, dtype=np.float64)
    n_wr = np.ceil(per_ch * (1 if op.dequantize else ratio) / dma_bytes)  # as build_streams computes it
    b = float(per_ch[np.argmax(n_wr >= hi)])
    return (b - 1) * n_ch, b * n_ch


def simulate_op(stack, op: OpSpec, size: float, share: float,
                expect_ns: float | None = None, background: str = DEFAULT_BACKGROUND,
                draw_se: float = DRAW_SE, max_draws: int = DRAWS_MAX) -> tuple[float, dict, dict]:
    """(stack time in ns, stack action counts, details) of one op of `size` under load `share`.

    Under the "poisson" background, the mean over draws (module docstring); `details["draw_times_ns"]`
    holds each draw's time. `draw_se` and `max_draws` (default: the table's DRAW_SE, DRAWS_MAX) set how
    closely the mean is estimated: a reference for checking a table asks for more (scripts/bench_ops.py
    --ref-se), since a check as rough as the table's points measures their noise, not the table. The
    background must outlast the op; its length is sized from a first guess of the op's time under load:
    `expect_ns` when the caller has one (e.g. from a neighbouring size), else a run without background. A guess too short costs a rerun with a longer background, never a
    different answer: an open-loop background's arrivals after the op's end do not change the op."""
    if background not in BACKGROUNDS:
        raise InputError(f"background {background!r} is not one of {', '.join(BACKGROUNDS)}")
    if size <= 0:
        return 0.0, {}, {}
    c0, n_ch = _slice(stack, op)
    if share <= 0 or background != "poisson":
        t, r, bg = _simulate_once(stack, op, size, share, expect_ns, background,
                                  background_seed(op.op_id, share), c0, n_ch)
        return t, _stack_actions(r.actions, n_ch), _details(stack, t, background, c0, n_ch, bg, [t])
    alone_ns = _simulate_once(stack, op, size, 0.0, None, background, 0, c0, n_ch)[0]
    need = min_draws(alone_ns) if draw_se >= DRAW_SE else max(min_draws(alone_ns), 3)  # a reference: >= 3
    guess = expect_ns if expect_ns and expect_ns > 0 else alone_ns
    ts, acts, bg_total = [], {}, 0
    while True:
        t, r, bg = _simulate_once(stack, op, size, share, guess, background,
                                  zlib.crc32(f"{op.op_id}|draw{len(ts)}".encode()), c0, n_ch)
        guess = max(guess, t)
        ts.append(t)
        bg_total += bg
        for k, v in r.actions.items():
            acts[k] = acts.get(k, 0.0) + v
        n = len(ts)
        if n >= max_draws:
            break
        if n >= need:
            mean = sum(ts) / n
            if n == 1 or mean <= 0 or float(np.std(ts, ddof=1)) / math.sqrt(n) <= draw_se * mean:
                break
    t = float(np.mean(ts))
    actions = _stack_actions({k: v / len(ts) for k, v in acts.items()}, n_ch)
    return t, actions, _details(stack, t, background, c0, n_ch, bg_total, ts)


def _slice(stack, op: OpSpec) -> tuple[int, int]:
    if op.kind == "attention":
        return _slice_channel(stack, ("pim",))
    if op.kind == "dma":
        return _slice_channel(stack, (op.src, op.dst))
    return _slice_channel(stack, (op.tier,))


def _stack_actions(actions: dict, n_ch: int) -> dict:
    # the slice refreshes every channel of the stack; refresh is charged as power x time instead
    return {k: v * n_ch for k, v in actions.items() if not k.startswith("refresh")}


def _details(stack, t: float, background: str, c0: int, n_ch: int, bg_bytes: int, ts: list) -> dict:
    return {"background": background, "slice_channel": c0, "channels": n_ch, "background_bytes": bg_bytes,
            "draws": len(ts), "draw_times_ns": list(ts), "refreshes": refresh_dues(stack, t)}


def _simulate_once(stack, op: OpSpec, size: float, share: float, expect_ns, background: str, seed: int,
                   c0: int, n_ch: int):
    """(op time in ns, the run's StackResult, background bytes) of one realization of the background."""
    ch_peak = stack.dram.peak_bw_per_pc_GBps * stack.dram.org.pseudo_channels
    bg_bytes = 0
    guess_ns = float(expect_ns) if share > 0 and expect_ns and expect_ns > 0 else None
    if guess_ns is not None and int(share * ch_peak * guess_ns * 1.5) + 4096 > MAX_BACKGROUND_BYTES:
        guess_ns = None  # too long a guess to trust: measure the op alone first
    for _attempt in range(6):
        kwargs = {}
        if share > 0 and guess_ns is not None:
            bg_bytes = int(share * ch_peak * guess_ns * 1.5) + 4096
            if bg_bytes > MAX_BACKGROUND_BYTES:
                break
            kwargs["gpu"] = GpuStream(bg_bytes, tier=_background_tier(stack), channels=(c0,),
                                      rate_GBps=share * ch_peak, random=background != "sequential",
                                      poisson=background == "poisson", seed=seed)
        if op.kind == "stream":
            fg = GpuStream(max(1, math.ceil(size / n_ch)), tier=op.tier, channels=(c0,))
            r = run_stack(stack, foreground=fg, **kwargs)
            t = r.foreground_time_ns
        elif op.kind == "dma":
            job = DmaJob(max(1, math.ceil(size / n_ch)), src=op.src, dst=op.dst, fmt=op.fmt, group=op.group,
                         dequantize=op.dequantize, channels=(c0,))
            r = run_stack(stack, dma=[job], **kwargs)
            t = r.dma_time_ns
        else:
            progs = attention_programs(stack, tokens=int(size), kv_heads=op.heads, gqa=op.gqa,
                                       head_dim=op.head_dim, kv_bytes=op.kv_bytes, channels=(c0,))
            r = run_stack(stack, programs=progs, **kwargs)
            t = r.op_time_ns.get(0, 0.0)
        if share <= 0:
            break
        if guess_ns is not None and r.gpu_bytes and _background_covers(r, t):
            break
        guess_ns = max(t, 1000.0) * (4 if guess_ns is not None else 1)
    if share > 0 and not (r.gpu_bytes and _background_covers(r, t)):
        raise InputError(f"{op.op_id} of {size:,.0f} {op.size_unit} starves under load share {share:g}: the "
                         "background takes the channel for as long as it lasts; characterize with lower shares")
    return t, r, bg_bytes


def refresh_dues(stack, t_ns: float) -> int:
    """Refreshes that fall due on a scope before an op of `t_ns` that starts at cycle 0 ends (first due
    one interval in). An op's time steps up where this count does. It is a function of the op's time
    alone; the refresh commands a run issued would also count those during the background that outlasts
    the op under load, so they would depend on how long that background was made."""
    d = stack.dram
    mode = d.config.refresh.mode
    if mode == "none" or t_ns <= 0:
        return 0
    interval = d.n["nREFI"] if mode == "all_bank" else d.n["nREFIpb"]
    return int((t_ns / d.tck_ns) // interval)


def _background_covers(r, op_ns: float) -> bool:
    """The open-loop background kept arriving until the op ended."""
    return r.background_last_arrival_ns >= op_ns
