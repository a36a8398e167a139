"""Simulate one op on a representative slice of a stack: one channel, scaled by channel symmetry.

An op's work is spread evenly over the channels of its tier (the tier maps interleave channels first,
and attention shards KV heads over every PIM scope), so the stack's time for the op is the time one
channel takes for its share, and the stack's action counts are that channel's times the channel count.

The background load share is open-loop reads at `share` x the channel's peak bandwidth, to the
capacity tier of the same channel (the PIM tier where a stack has no capacity tier), lasting past the
op's end (checked; rerun with more if not). By default (`background="random"`) each read is to a
uniformly random line of that tier, seeded by (op, share). Why random: what a load share stands for in
a serving system is the other traffic on the same channels, i.e. many independent streams (other
requests' KV, other layers' weights, other DMAs) interleaved by the controllers, which reach a channel
as reads to scattered rows. One sequential sweep arriving at an exact period (`background=
"sequential"`, the earlier default, kept selectable) is one phase-locked stream: it falls into step with
a sequential op, so an op's time jumped with the phase rather than the load (a 1.79 MB stream of the
capacity tier took 1264 / 1583 / 3832 / 2768 ns under 0.1 / 0.175 / 0.2 / 0.3, non-monotonic), and no
table in share could be interpolated (up to 174% off between levels). Under random lines the same
stream rises with load (1016 / 1260 / 1773 / 2423 / 3698 ns under 0 / 0.05 / 0.1 / 0.15 / 0.2), and
linear interpolation between levels 0.05 apart holds (table.py; measured figures in characterize.py).
The cost: random lines miss the row almost every time, so a channel serves far fewer of them than its
peak; above ~0.2 their queue, not the op, sets the op's time (table.LOAD_SHARES stops there).

Left out: arrivals are still at an exact period (no Poisson bursts; the lines, not the gaps, are
random); channels that differ (a partial SID's PIM tier uses only its own channels, which is what the
slice picks); cross-channel effects (none exist in the kernel: channels share no timing state).
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
# What a load share's background reads: "random" (default) uniformly random lines of the tier, each
# request independent of the last, seeded by (op, share); "sequential" one sweep through the tier (the
# earlier default, kept to compare against). See the module docstring for why random.
BACKGROUNDS = ("random", "sequential")
DEFAULT_BACKGROUND = "random"


def background_seed(op_id: str, share: float) -> int:
    """The background's RNG seed: a stable hash of (op, share), so a simulation gives the same answer in
    every process and run (Python's hash() is salted per process). Not of the size: every size of an op
    at one load sees the same background (common random numbers), so time at a level is a deterministic
    function of size whose structure (a DMA's write-drain teeth) the table can follow size by size."""
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


def simulate_op(stack, op: OpSpec, size: float, share: float,
                expect_ns: float | None = None, background: str = DEFAULT_BACKGROUND) -> tuple[float, dict, dict]:
    """(stack time in ns, stack action counts, details) of one op of `size` under load `share`.

    The background must outlast the op; its length is sized from a first guess of the op's time under
    load: `expect_ns` when the caller has one (e.g. from a neighbouring size), else a run without
    background. A guess too short costs a rerun with a longer background, never a different answer: an
    open-loop background's arrivals after the op's end do not change the op."""
    if background not in BACKGROUNDS:
        raise InputError(f"background {background!r} is not one of {', '.join(BACKGROUNDS)}")
    if size <= 0:
        return 0.0, {}, {}
    if op.kind == "attention":
        c0, n_ch = _slice_channel(stack, ("pim",))
    elif op.kind == "dma":
        c0, n_ch = _slice_channel(stack, (op.src, op.dst))
    else:
        c0, n_ch = _slice_channel(stack, (op.tier,))
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
                                      rate_GBps=share * ch_peak, random=background == "random",
                                      seed=background_seed(op.op_id, share))
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
    # the slice refreshes every channel of the stack; refresh is charged as power x time instead
    actions = {k: v * n_ch for k, v in r.actions.items() if not k.startswith("refresh")}
    refreshes = refresh_dues(stack, t)
    details = {"background": background, "slice_channel": c0, "channels": n_ch, "throttled_share": r.throttled_share,
               "background_bytes": bg_bytes, "refreshes": refreshes}
    return t, actions, details


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
