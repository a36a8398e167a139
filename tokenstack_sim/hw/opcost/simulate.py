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
watermark vs the write-age timer, a knee where the background and the op ask for more row activations
than the channel serves), which the table's refinement follows (characterize.py).

Refresh. Every cost, at load 0 too, is also the expectation over where in the DRAM's refresh interval
the op starts (`simulate_op`'s refresh="expected"): an op starts at no particular point of it. The
earlier convention, an op starting just after a refresh (refresh="phase0", kept to compare), never
let an op shorter than tREFI (3.9 us on HBM4) meet one, so such ops came out 9-15% fast at load 0 (an
INT8 demotion of 20 KB-2.9 MB, a capacity stream of 64 KB-4 MB, 128-1k-token attention; measured
against 64 starts spread over the interval), and under load the expected time jumped where the op's
time crossed tREFI (an INT8 demotion of 1.25 MB under 0.2: 3.1-3.8 us, or 4.9-6.0 us when it crossed).

Channel symmetry, checked against the whole-stack kernel (`simulate_whole_stack`; tests/test_opcost.py,
scripts/bench_symmetry.py: 5 ops x 4 sizes from ~200 ns to ~40 us, refresh off). At load 0 a whole-stack
run takes the slice's time: exactly for attention, and for streams and copies where each channel gets whole
chunks of the interleave (1 and 16 MiB; a 256 KB PIM stream +1.4%, its lines falling unevenly on the
channels); quantizing DMAs -4.6 .. +7.1% (a written line's data comes from reads on other channels, and a
small DMA's lines fall unevenly: 124-128 reads each for 128,000 B, where the slice has 125). That needs each source's in-order
requests to enter per channel (hw/stack/dma.per_channel_streams); one in-order stream over the stack had
put a whole INT8 demotion 36% over the slice. Under load it does not hold: each channel meets its own
background, and the stack's op ends with its slowest channel, while the cost here is one channel's
expected time (`simulate_op(whole=True)`, and `tokenstack op --whole-stack`, give the stack's). The whole stack against the slice (mean of 4 backgrounds) under 0.05: mean +7.2%, up to
+41% (a 128 KB dequantizing DMA); under 0.2: mean +18%, up to +78% (the same DMA), 256-token attention
+50%, a 256 KB capacity stream +19%, 16k-token attention +9.6%, a 16 MB capacity stream +2.6%; large
quantizing DMAs -3 .. -6% (their channels' coupling through the reads evens them out).

Left out: channels that differ (a partial SID's PIM tier uses only its own channels, which is what the
slice picks); the slowest channel under load (above); the stack's power budget, which the slice has to
itself (whole-stack attention and DMAs alone run unthrottled on hbm4-12h-tokenstack, but bank-placement
attention beside a GPU stream is throttled: results/pim_attention.md); background writes.
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


REFRESHES = ("expected", "off", "phase0")
REFRESH_PHASES = 4  # [E] where in its refresh interval a run at load 0 starts, for the expectation over
# that (midpoints of REFRESH_PHASES equal parts): measured on hbm4-12h-tokenstack against 64 phases,
# within ~1-2% for an INT8 demotion of 20 KB-20 MB, a capacity stream of 64 KB-16 MB and 16-65k-token
# attention (K = 2: up to 2.4%; K = 8: within 1%, at twice the runs)


BUSY_PHASES = 2  # [E] starts inside a refresh's tRFC at load 0 (midpoints of 2 equal parts): the op's delay
# is close to linear in the refresh's remaining time there


def refresh_interval(stack) -> tuple[float, int] | None:
    """(ns, cycles) between refreshes due on one scope, None where the DRAM does not refresh: tREFI
    (all-bank) or tREFIpb (per-bank; the kernel rotates the banks)."""
    d = stack.dram
    mode = d.config.refresh.mode
    if mode == "none":
        return None
    n = int(d.n["nREFI"] if mode == "all_bank" else d.n["nREFIpb"])
    return n * d.tck_ns, n


def refresh_busy(stack) -> tuple[float, int]:
    """(ns, cycles) a refresh holds its scope: tRFC with all-bank refresh (an op that starts within it
    waits for the rest), 0 otherwise (per-bank refresh holds one bank; left out)."""
    d = stack.dram
    if d.config.refresh.mode != "all_bank":
        return 0.0, 0
    n = int(d.n["nRFC"])
    return n * d.tck_ns, n


def _van_der_corput(i: int) -> float:
    """The i-th (i >= 1) point of the base-2 van der Corput sequence in (0, 1): any run of draws from the
    first covers the interval evenly (stratified), where independent uniform phases would leave gaps."""
    q, d = 0.0, 1.0
    while i:
        d *= 2.0
        i, r = divmod(i, 2)
        q += r / d
    return q


def _phases(t_ns: float, interval: tuple[float, int]) -> int:
    """How many evenly spread starts in the refresh interval estimate the mean of an op of `t_ns` that is
    longer than the interval: REFRESH_PHASES up to 4 intervals, fewer beyond (one from 16). Where the
    refreshes fall moves such an op by at most one refresh's delay, a shrinking share of its time: with
    k starts the estimate is within delay / (2 k t_ns), <= 0.6% for a 700 ns delay from 4 intervals on."""
    return max(1, min(REFRESH_PHASES, math.ceil(REFRESH_PHASES * 4 * interval[0] / max(t_ns, 1e-9))))


def _spread(v: float, k: int) -> list[float]:
    """k points of (0, 1) evenly spread, the first at v."""
    return [(i + v) / k for i in range(k)]


def _refreshed(run_at, t_off: float | None, a_off: dict | None, interval: tuple[float, int], v: float = 0.5,
               short_points: int = REFRESH_PHASES, t_ns: float | None = None,
               busy: tuple[float, int] = (0.0, 0)):
    """(expected time, expected actions) of one realization over where in its refresh interval the op
    starts, from runs `run_at(phase_cycles)` -> (time, actions) at points of (0, 1) spread from `v`.

    An op shorter than the interval (`t_off`, its time without refresh, below it by more than the
    refresh's own tRFC, `busy`) meets at most one refresh: one that falls due before it would have ended
    (probability t_off / interval, the due time then uniform in (0, t_off)), or the one that opened the
    interval, still running at its start (probability tRFC / interval, the start uniform in it). So
    `short_points` runs put the due time inside the op and BUSY_PHASES runs start it inside the
    refresh, and the expectation is t_off + each window's probability x its mean delay; with
    `short_points=1` (one run a draw under load) the run falls in one window or the other in proportion
    to their probabilities, stratified over the draws by `v`. (Spreading the starts over the whole
    interval instead would leave a short op's rare refresh to chance: a 200 ns op, 16 runs 244 ns apart.)
    A longer op (`t_off` None: known to be longer; `t_ns` then says how long) meets one or more whatever
    the start: `_phases` runs start across the interval (those within tRFC of its start wait for the
    refresh that opened it) and the expectation is their mean."""
    ns, cycles = interval
    tck = ns / cycles
    busy_ns, busy_cycles = busy
    short = t_off is not None and t_off < ns - busy_ns
    if not short:
        k = _phases(t_off if t_off is not None else t_ns, interval)
        runs = [run_at(int(u * cycles)) for u in _spread(v, k)]
        keys = set().union(*(a for _, a in runs))
        return (sum(r for r, _ in runs) / len(runs),
                {k: sum(a.get(k, 0.0) for _, a in runs) / len(runs) for k in keys})
    p_busy, p_due = busy_ns / ns, t_off / ns

    def due_run(u: float):  # the next refresh due u x t_off into the op
        return run_at(cycles - max(1, int(round(u * t_off / tck))))

    def busy_run(u: float):  # the op starts u x tRFC after the refresh that opened the interval was issued
        return run_at(int(u * busy_cycles))

    if short_points == 1 and p_busy > 0:
        # one run: the start falls in one window or the other in proportion (stratified over the draws by v)
        cut = p_busy / (p_busy + p_due)
        groups = [(p_busy + p_due, [busy_run(v / cut) if v < cut else due_run((v - cut) / (1 - cut))])]
    else:
        groups = [(p_due, [due_run(u) for u in _spread(v, short_points)])]
        if p_busy > 0:
            groups.append((p_busy, [busy_run(u) for u in _spread(v, BUSY_PHASES)]))
    keys = set(a_off).union(*(a for _, runs in groups for _, a in runs))
    t = t_off + sum(w * sum(r - t_off for r, _ in runs) / len(runs) for w, runs in groups)
    acts = {k: a_off.get(k, 0.0) + sum(w * sum(a.get(k, 0.0) - a_off.get(k, 0.0) for _, a in runs) / len(runs)
                                       for w, runs in groups) for k in keys}
    return t, acts


def simulate_op(stack, op: OpSpec, size: float, share: float,
                expect_ns: float | None = None, background: str = DEFAULT_BACKGROUND,
                draw_se: float = DRAW_SE, max_draws: int = DRAWS_MAX,
                refresh: str = "expected", with_off: bool = False,
                whole: bool = False) -> tuple[float, dict, dict]:
    """(stack time in ns, stack action counts, details) of one op of `size` under load `share`: on the
    one-channel slice, scaled by channel symmetry, or with `whole=True` on the whole stack (every channel
    of the op's tiers, each under its own background; the draws are then whole-stack runs, each ending
    with its slowest channel, and cost every channel's work: what `tokenstack op --whole-stack` runs).

    Refresh. An op starts at no particular point of the DRAM's refresh interval, so its cost is the
    expectation over where it starts (`refresh="expected"`, the default): a 1.25 MB INT8 demotion alone
    takes 1,782 ns when no refresh falls due during it and 2,046 ns on average over the interval (+15%;
    a 1 MB capacity stream +14%: the refresh's tRFC and the rows reopened after it). At load 0 that is
    the expectation over REFRESH_PHASES points of the interval (`_refreshed`); under load each draw of
    the background takes the next point of a van der Corput sequence (and, for an op longer than the
    interval, points evenly spread from it), so the draws cover the interval evenly.
    `refresh="off"` is the op without refresh (what characterize tabulates, then scales by the refresh
    overhead it measures: characterize.py); `"phase0"` the op starting just after a refresh, the earlier
    convention, under which an op shorter than tREFI never met one. `details["off_ns"]` is the op's time
    before the refresh expectation over the same draws (without refresh; with "phase0", its phase-0
    time), where it was timed: always at load 0 and for ops shorter than the interval, under load for
    longer ones when `with_off` asks (one more run a draw).

    A start in the first tRFC of the interval (all-bank refresh) finds the refresh that opened it still
    running and waits for the rest (`run_stack(refresh_in_progress=True)`: the phase is then the time
    since that refresh was issued). On HBM4 that window is 450 of every 3,900 ns; at load 0 it adds
    18-26 ns to an op shorter than the interval (a 60 KB INT8 demotion 182 -> 208 ns, +14%; a 64 KB
    capacity stream +29%; 256-token attention +2.8%; a 1 MB demotion +1.7%; measured against the
    previous expectation, which left the window out). Checked against the mean over 256 evenly spread starts:
    within 1.6% for INT8 demotions of 20 KB-3 MB, capacity streams of 64 KB-4 MB and 128-4k-token
    attention.

    Under the "poisson" background, the mean over draws (module docstring); `details["draw_times_ns"]`
    holds each draw's time. `draw_se` and `max_draws` (default: the table's DRAW_SE, DRAWS_MAX) set how
    closely the mean is estimated: a reference for checking a table asks for more (scripts/bench_ops.py
    --ref-se), since a check as rough as the table's points measures their noise, not the table. The
    background must outlast the op; its length is sized from a first guess of the op's time under load:
    `expect_ns` when the caller has one (e.g. from a neighbouring size), else a run without background. A
    guess too short costs a rerun with a longer background, never a different answer: an open-loop
    background's arrivals after the op's end do not change the op."""
    if background not in BACKGROUNDS:
        raise InputError(f"background {background!r} is not one of {', '.join(BACKGROUNDS)}")
    if refresh not in REFRESHES:
        raise InputError(f"refresh {refresh!r} is not one of {', '.join(REFRESHES)}")
    if size <= 0:
        return 0.0, {}, {}
    c0, n_ch = _slice(stack, op)
    interval = refresh_interval(stack) if refresh == "expected" else None
    busy = refresh_busy(stack)
    on = refresh == "phase0"  # "off": no refresh; "expected": refreshed runs at chosen starts
    bgs = []
    scale = 1 if whole else n_ch  # the run's actions are the stack's, or one channel's of n_ch alike
    draw_name = "whole" if whole else "draw"  # the whole stack's draws are their own realizations

    def one(seed: int, sh: float, guess, phase=None):
        t, r, bg = _simulate_once(stack, op, size, sh, guess, background, seed, c0, n_ch,
                                  phase_cycles=phase or 0, refresh=on or phase is not None,
                                  in_progress=phase is not None, whole=whole)
        bgs.append(bg)
        return t, r.actions

    if share <= 0 or background != "poisson":
        seed = background_seed(op.op_id, share)
        t_off, a_off = one(seed, share, expect_ns)
        t, acts = t_off, a_off
        if interval is not None:
            t, acts = _refreshed(lambda ph: one(seed, share, t_off, ph), t_off, a_off, interval, busy=busy)
        return t, _stack_actions(acts, scale), _details(background, c0, n_ch, bgs[0], [t], [t_off])
    alone_ns = _simulate_once(stack, op, size, 0.0, None, background, 0, c0, n_ch, refresh=on, whole=whole)[0]
    need = min_draws(alone_ns) if draw_se >= DRAW_SE else max(min_draws(alone_ns), 3)  # a reference: >= 3
    guess = expect_ns if expect_ns and expect_ns > 0 else alone_ns
    # an op longer than the refresh interval alone is longer under load too: no run without refresh
    long_op = interval is not None and alone_ns >= interval[0] and not with_off
    ts, offs, acts = [], [], {}
    while True:
        seed = zlib.crc32(f"{op.op_id}|{draw_name}{len(ts)}".encode())
        v = _van_der_corput(len(ts) + 1)
        # one start a draw where the op is shorter than the interval (the op's own spread over draws
        # dominates), several evenly spread otherwise (where the refreshes fall dominates: a 4k-token
        # attention under 0.2, cv 12% a draw with one start, 3.2% with four)
        if long_op:
            t, a = _refreshed(lambda ph: one(seed, share, guess, ph), None, None, interval, v, t_ns=alone_ns,
                              busy=busy)
        else:
            t, a = one(seed, share, guess)
            offs.append(t)
            if interval is not None:
                t, a = _refreshed(lambda ph: one(seed, share, max(guess, t), ph), t, a, interval, v,
                                  short_points=1, busy=busy)
        guess = max(guess, t)
        ts.append(t)
        for k, val in a.items():
            acts[k] = acts.get(k, 0.0) + val
        n = len(ts)
        if n >= max_draws:
            break
        if n >= need:
            mean = sum(ts) / n
            if n == 1 or mean <= 0 or float(np.std(ts, ddof=1)) / math.sqrt(n) <= draw_se * mean:
                break
    t = float(np.mean(ts))
    actions = _stack_actions({k: v / len(ts) for k, v in acts.items()}, scale)
    return t, actions, _details(background, c0, n_ch, sum(bgs), ts, offs)


def simulate_whole_stack(stack, op: OpSpec, size: float, share: float, seeds: int = 4,
                         refresh: str = "off") -> tuple[float, list[float]]:
    """(mean, each draw's) time in ns of the op on the WHOLE stack under load `share`, over exactly `seeds`
    realizations of the background (one at load 0): `simulate_op(whole=True)` with a fixed number of
    draws, for comparing with the slice draw for draw (scripts/bench_symmetry.py; refresh "off" by default
    there, so that only the channels differ)."""
    t, _, det = simulate_op(stack, op, size, share, draw_se=0.0, max_draws=max(1, int(seeds)), refresh=refresh,
                            whole=True)
    return t, list(det.get("draw_times_ns") or [t])


def _slice(stack, op: OpSpec) -> tuple[int, int]:
    if op.kind == "attention":
        return _slice_channel(stack, ("pim",))
    if op.kind == "dma":
        return _slice_channel(stack, (op.src, op.dst))
    return _slice_channel(stack, (op.tier,))


def _stack_actions(actions: dict, n_ch: int) -> dict:
    # the slice refreshes every channel of the stack; refresh is charged as power x time instead
    return {k: v * n_ch for k, v in actions.items() if not k.startswith("refresh")}


def _details(background: str, c0: int, n_ch: int, bg_bytes: int, ts: list, offs: list) -> dict:
    return {"background": background, "slice_channel": c0, "channels": n_ch, "background_bytes": bg_bytes,
            "draws": len(ts), "draw_times_ns": list(ts), "off_ns": float(np.mean(offs)) if offs else None,
            "draw_off_ns": list(offs)}


def _simulate_once(stack, op: OpSpec, size: float, share: float, expect_ns, background: str, seed: int,
                   c0: int, n_ch: int, phase_cycles: int = 0, refresh: bool = True, in_progress: bool = False,
                   whole: bool = False):
    """(op time in ns, the run's StackResult, background bytes) of one realization of the background,
    the op starting `phase_cycles` into the refresh interval (or without refresh). On the slice (channel
    `c0`, 1 / `n_ch` of the op), or with `whole=True` on the whole stack: the whole op over every channel
    of its tiers, the background at `share` on every channel of its tier."""
    ch_peak = stack.dram.peak_bw_per_pc_GBps * stack.dram.org.pseudo_channels
    bg_tier = _background_tier(stack) if share > 0 else None
    chans = None if whole else (c0,)
    n_bg = len({c for c, _ in stack.tier_units(bg_tier)}) if whole and share > 0 else 1  # channels it spans
    per = math.ceil(size) if whole else math.ceil(size / n_ch)  # bytes (tokens: unused) the run moves
    bg_bytes = 0
    guess_ns = float(expect_ns) if share > 0 and expect_ns and expect_ns > 0 else None
    if guess_ns is not None and int(share * ch_peak * guess_ns * 1.5) + 4096 > MAX_BACKGROUND_BYTES:
        guess_ns = None  # too long a guess to trust: measure the op alone first
    for _attempt in range(6):
        kwargs = {"refresh_phase_cycles": int(phase_cycles), "refresh": refresh,
                  "refresh_in_progress": in_progress}
        if share > 0 and guess_ns is not None:
            bg_bytes = int(share * ch_peak * guess_ns * 1.5) + 4096
            if bg_bytes > MAX_BACKGROUND_BYTES:
                break
            kwargs["gpu"] = GpuStream(bg_bytes * n_bg, tier=bg_tier, channels=chans,
                                      rate_GBps=share * ch_peak * n_bg, random=background != "sequential",
                                      poisson=background == "poisson", seed=seed)
            kwargs["stop_after_op"] = True  # the background's requests after the op cannot change it
        if op.kind == "stream":
            fg = GpuStream(max(1, per), tier=op.tier, channels=chans)
            r = run_stack(stack, foreground=fg, **kwargs)
            t = r.foreground_time_ns
        elif op.kind == "dma":
            job = DmaJob(max(1, per), src=op.src, dst=op.dst, fmt=op.fmt, group=op.group,
                         dequantize=op.dequantize, channels=chans)
            r = run_stack(stack, dma=[job], **kwargs)
            t = r.dma_time_ns
        else:
            progs = attention_programs(stack, tokens=int(size), kv_heads=op.heads, gqa=op.gqa,
                                       head_dim=op.head_dim, kv_bytes=op.kv_bytes, channels=chans)
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


def _background_covers(r, op_ns: float) -> bool:
    """The open-loop background kept arriving until the op ended."""
    return r.background_last_arrival_ns >= op_ns
