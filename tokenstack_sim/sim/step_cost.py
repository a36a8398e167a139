"""Time and counted actions of one engine step (one forward pass of a batch) on a modeled system.

The step is the per-layer dependency chain of `model/ops.py`, timed op by op and summed (within one batch
the ops do not overlap; DESIGN.md), times the number of identical layers, plus the once-per-step
embedding and LM head:

    qkv → attention (GPU part, then PIM part, then the PIM link) → out_proj → all-reduce → [router →]
    ffn_up → ffn_down → all-reduce

Every tensor-parallel shard runs the same chain at the same time, so one shard is timed and counts are
multiplied by the GPUs.

- **GEMMs** (and the LM head) run on the GPU: launch + max(compute, memory). Compute = FLOPs ÷
  (η_c(m, n) · peak[weight dtype]) with the GPU's tile-quantized efficiency (hw/gpu/roofline.py). Memory
  = the time the GPU's stacks take to stream the op's bytes: with `memory_timing = "characterized"` (the
  default) the characterized `stream-<tier>` cost of the weight tier (hw/opcost: the cycle kernel on one
  channel, scaled by channel symmetry) at bytes ÷ stacks per stack; with `"roofline"` bytes ÷ (η_bw ·
  peak bandwidth), the analytical baseline.
- **Attention follows the KV** (issue 7; a default placement until the KV-management issue replaces it).
  KV tiers, in the order blocks fill them: TokenStack the PIM SID, then the capacity SIDs; uniform PIM
  the PIM dies; AttAcc its PIM device only; GPU-only the capacity dies. Every request's context is spread
  over the tiers in proportion to their share of the blocks in use (head-sharded across the stacks, and
  token-sharded where a shard has fewer KV heads than stacks). Decode tokens whose KV is in a PIM tier are
  attended by the PIM units: per sequence, the characterized `attention` op of the PIM stack over its
  share of the context, sequences one after the other on the same units. Everything else — prefill and
  recompute chunks (compute-bound, AttAcc and NeuPIMs run them on the GPU too) and decode over KV in a
  capacity tier — is one batched GPU attention kernel per layer, its KV streamed from the tiers that hold
  it (AttAcc: fetched from the PIM device over its link). New K/V are written to where their sequence's
  KV lives; the PIM path also moves q and the attention output (over the PIM link for AttAcc, through the
  stack's channels otherwise).
- **All-reduce** after out_proj and ffn_down over the GPU link (hw/link.py; `allreduce = "auto"`: the
  fastest of ring, one-shot and two-shot per message, as vLLM's custom all-reduce and NCCL pick); the
  embedding's all-reduce likewise; the LM head's logits gathered by a ring all-gather.

Characterized costs are looked up, never extrapolated: an op larger than the characterized grid is timed
as back-to-back ops of the largest characterized size plus the remainder (a stream or a row-by-row PIM
sweep is additive; the fixed cost is paid per piece, which overstates by at most one fixed cost per
piece of the grid's top size).

Overlap is a named option every system may use (`overlap`): "sub_batch" interleaves two halves of the
batch on the GPU and the PIM units as NeuPIMs does, charging the second weight read (`_sub_batched`);
"attacc_pipeline" pipelines each layer's QKV GEMM -> PIM attention -> output projection over the query
heads of a GPU as AttAcc does, charging the split GEMMs' extra launches and activation traffic
(`_pipelined`). Left out: pipelining across steps or layers, overlap of GPU and PIM attention over one
sequence's KV split between tiers, the softmax merge
of partial attention from several tiers, the GPU's static power, CPU-side scheduling overhead
(`step_overhead_s`, 0 by default), and background load on the channels while an op runs (ops of one
step run one after another, so their characterized cost at load share 0 applies).
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.gpu.roofline import gemm_compute_efficiency
from tokenstack_sim.hw.link import ALLREDUCE_ALGORITHMS, allreduce_link_bytes, allreduce_time_s, transfer_time_s
from tokenstack_sim.hw.opcost.simulate import OpSpec
from tokenstack_sim.hw.stack.energy import ACTIONS as STACK_ACTIONS
from tokenstack_sim.hw.stack.energy import path_vector
from tokenstack_sim.kv.policy import KvPolicy
from tokenstack_sim.kv.tiered import capacity_ratio
from tokenstack_sim.model.ops import IterationModel

MEMORY_TIMINGS = ("characterized", "roofline")
PIM_BATCHING = ("packed", "serial")
OVERLAPS = ("none", "sub_batch", "attacc_pipeline")
GPU_ACTIONS = ("flops_bf16", "flops_fp16", "flops_fp8", "flops_fp32", "l2_bytes")
LINK_ACTIONS = ("link_bytes",)
# Counted actions per component, whole system. 'pim' holds the PIM units' work and the traffic to the
# PIM device (AttAcc); the PIM SID's plain reads and writes by the GPU count under 'gpu_stacks'.
# 'host_link': KV that agent runtimes offload to or upload from host memory (runtime/kv_transfer.py).
COMPONENTS = {"gpu": GPU_ACTIONS, "gpu_stacks": STACK_ACTIONS, "pim": STACK_ACTIONS,
              "gpu_link": LINK_ACTIONS, "pim_link": LINK_ACTIONS, "host_link": LINK_ACTIONS}
OFFSET = {}
_n = 0
for _c, _a in COMPONENTS.items():
    OFFSET[_c] = _n
    _n += len(_a)
N_ACTIONS = _n  # length of the flat action vector of one step
N_PARTS = 7  # results.result.STEP_PARTS: the chain's six parts + KV migration
# Per-step KV placement record (StepRecords.kv; results.result.STEP_DTYPE has the same names)
KV_FIELDS = ("kv_gathers", "kv_demoted_blocks", "kv_promoted_blocks", "kv_replicated_blocks",
             "kv_pim_blocks", "kv_capacity_blocks", "kv_replica_blocks")
_SA = {a: i for i, a in enumerate(STACK_ACTIONS)}
_READ, _WRITE = _SA["gpu_read_bits"], _SA["gpu_write_bits"]  # the interposer segment of GPU traffic
_GPU_RD, _GPU_WR = path_vector("gpu_read"), path_vector("gpu_write")  # one bit's actions on every segment
_I64, _BOOL = np.dtype(np.int64), np.dtype(np.bool_)


def action_slot(component: str, action: str) -> int:
    return OFFSET[component] + COMPONENTS[component].index(action)


@dataclass(frozen=True)
class EngineOptions:
    """Options of the step model that every system gets alike."""
    memory_timing: str = "characterized"
    step_overhead_s: float = 0.0  # CPU scheduling + sampling per step; 0 = left out [E]
    # How a batch's decode attention shares the PIM units (StepModel._pim_time_ns): "packed" spreads
    # the (sequence, head) items over the scopes (AttAcc's head-level parallelism), "serial" runs each
    # sequence over all scopes one after another.
    pim_batching: str = "packed"
    # Tensor-parallel all-reduce algorithm (hw/link.py): "auto" picks the fastest per message, as vLLM's
    # custom all-reduce (small messages, full NVLink) and NCCL (large) do together.
    allreduce: str = "auto"
    # Overlap within a step (named, for every system alike): "none" runs the chain in order;
    # "sub_batch" interleaves two halves of the batch on the GPU and the PIM units (NeuPIMs);
    # "attacc_pipeline" pipelines QKV -> PIM attention -> out_proj over the query heads (AttAcc).
    overlap: str = "none"

    def __post_init__(self) -> None:
        if self.memory_timing not in MEMORY_TIMINGS:
            raise InputError(f"expected one of {', '.join(MEMORY_TIMINGS)}, got {self.memory_timing!r}",
                             where="memory_timing")
        if self.overlap not in OVERLAPS:
            raise InputError(f"expected one of {', '.join(OVERLAPS)}, got {self.overlap!r}", where="overlap")
        if self.allreduce not in ALLREDUCE_ALGORITHMS:
            raise InputError(f"expected one of {', '.join(ALLREDUCE_ALGORITHMS)}, got {self.allreduce!r}",
                             where="allreduce")
        if self.pim_batching not in PIM_BATCHING:
            raise InputError(f"expected one of {', '.join(PIM_BATCHING)}, got {self.pim_batching!r}",
                             where="pim_batching")
        if not (math.isfinite(self.step_overhead_s) and self.step_overhead_s >= 0):
            raise InputError(f"expected a time >= 0 s, got {self.step_overhead_s!r}", where="step_overhead_s")


@dataclass(frozen=True)
class KvTier:
    """One tier that holds KV: where it is, how many blocks (per GPU shard), and whether decode attention
    over it runs on PIM units."""
    name: str  # 'gpu_capacity' | 'gpu_pim' | 'pim_device'
    blocks: int
    pim: bool


def stack_tier(stack, prefer: str) -> str:
    """`prefer` where the stack has it, else its other tier (a uniform-PIM stack has only 'pim')."""
    return prefer if stack.tier_units(prefer) else ("pim" if prefer == "capacity" else "capacity")


class Lookup:
    """A characterized op at load share 0, looked up fast: time and action counts by size (linear between
    the characterized sizes, as `OpTable` does). Sizes beyond the grid are back-to-back pieces of the
    grid's top size plus the remainder (module docstring). Scalar calls avoid numpy's per-call overhead:
    the step model makes several per step."""

    def __init__(self, table):
        self.table = table
        self.xs, self.ts = table.sizes[0], table.time_ns[0]
        self._xs, self._ts = self.xs.tolist(), self.ts.tolist()
        self.top = float(table.max_size)
        self.ax = table.action_sizes
        self._ax = self.ax.tolist()
        self.A = np.array([table.actions.get(a, np.zeros_like(self.ax)) for a in STACK_ACTIONS])  # (actions, pts)
        self.t_top = float(np.interp(self.top, self.xs, self.ts))
        self.a_top = np.array([np.interp(self.top, self.ax, row) for row in self.A])
        # the fixed cost of one op: its time at the smallest characterized non-zero size
        self.fixed_ns = float(self.ts[1]) if len(self.ts) > 1 else 0.0
        c = np.ascontiguousarray
        # xs, ts, ax, A, a_top as the compiled kernels take them
        self.arrays = (c(self.xs, np.float64), c(self.ts, np.float64), c(self.ax, np.float64), c(self.A, np.float64),
                       c(self.a_top, np.float64))

    def _split(self, size: np.ndarray):
        if size.size and size.max() > self.top:
            pieces = np.floor(size / self.top)
            return pieces, size - pieces * self.top
        return None, size

    def time_ns(self, size: np.ndarray) -> np.ndarray:
        pieces, rem = self._split(size)
        t = np.interp(rem, self.xs, self.ts)
        return t if pieces is None else t + pieces * self.t_top

    def actions(self, size: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Counts in STACK_ACTIONS order, summed over the sizes (each weighted)."""
        pieces, rem = self._split(size)
        j = np.searchsorted(self.ax, rem, side="right")
        np.minimum(np.maximum(j, 1), len(self.ax) - 1, out=j)
        x0, x1 = self.ax[j - 1], self.ax[j]
        f = np.minimum(np.maximum((rem - x0) / (x1 - x0), 0.0), 1.0)
        w = 1.0 if weights is None else weights
        out = self.A[:, j - 1] @ (w * (1 - f) * np.ones_like(f)) + self.A[:, j] @ (w * f)
        if pieces is not None:
            out = out + self.a_top * float((pieces * w).sum())
        return out

    def scalar(self, size: float) -> tuple[float, np.ndarray]:
        """(time ns, action counts) of one op of `size`."""
        pieces = 0.0
        if size > self.top:
            pieces = math.floor(size / self.top)
            size -= pieces * self.top
        xs, ax = self._xs, self._ax
        i = min(max(bisect.bisect_right(xs, size), 1), len(xs) - 1)
        x0, x1 = xs[i - 1], xs[i]
        f = min(max((size - x0) / (x1 - x0), 0.0), 1.0)
        t = self._ts[i - 1] + f * (self._ts[i] - self._ts[i - 1])
        j = min(max(bisect.bisect_right(ax, size), 1), len(ax) - 1)
        g = min(max((size - ax[j - 1]) / (ax[j] - ax[j - 1]), 0.0), 1.0)
        a = self.A[:, j - 1] * (1.0 - g) + self.A[:, j] * g
        if pieces:
            t += pieces * self.t_top
            a = a + pieces * self.a_top
        return t, a


def pim_packed_load(items: np.ndarray, n_scopes: int) -> tuple[float, int]:
    """(tokens on the most loaded scope, items a scope takes in turn) when `items` (tokens each) are
    packed over `n_scopes` PIM scopes: fewer items than scopes are split, the least L with
    Σ ceil(t_i / L) ≤ n (bisection); more are dealt whole, longest first, in snake order."""
    items = np.asarray(items, np.float64)
    m, n = len(items), n_scopes
    if m == 0:
        return 0.0, 0
    if m < n:
        # few items: give each item k_i slices so that max t_i / k_i is least with sum k_i = n, handing
        # slices one by one to the item with the largest t_i / k_i (a heap; greedy increments from
        # below the optimum are optimal for a max of t_i / k_i). Plain floats: few items.
        ts = items.tolist()
        if max(ts) <= 0:
            return 0.0, 1
        # a feasible start (sum <= n), then the least counts that meet its load: below the optimum,
        # so the greedy increments that follow still end at it, after few steps
        total = sum(ts)
        start = [max(1, int(t * (n - m) / total)) for t in ts]
        upper = max(t / k for t, k in zip(ts, start))
        ks = [max(1, math.ceil(t / upper - 1e-12)) for t in ts]
        heap = [(-t / k, i) for i, (t, k) in enumerate(zip(ts, ks))]
        heapq.heapify(heap)
        for _ in range(n - sum(ks)):
            _, i = heapq.heappop(heap)
            ks[i] += 1
            heapq.heappush(heap, (-ts[i] / ks[i], i))
        return -heap[0][0], 1
    rows = math.ceil(m / n)
    grid = np.zeros(rows * n)
    grid[:m] = np.sort(items)[::-1]
    grid = grid.reshape(rows, n)
    grid[1::2] = grid[1::2, ::-1]  # snake: each row deals from the other end
    return float(grid.sum(axis=0).max()), rows


# --- the step's attention, compiled --------------------------------------------------------------------
# `StepModel._step` on a batch whose KV placement a bound TieredKv gives (every step of a serving run),
# the placement read straight from its arrays: one compiled call instead of ~40 numpy calls on arrays of
# a few elements (a decode batch at the Azure conversation rate is ~5 sequences). Every quantity a step
# time depends on is computed with the same floating-point operations in the same order as the numpy
# path (np.interp's formula, numpy's pairwise sum for 1-D reductions and its row-by-row sum over axis 0,
# the packed-load heap's float arithmetic), so step times and attended counts come out bit for bit as
# the numpy path's (checked on random batches and on the Azure conversation hour, numpy 2.4); the PIM
# units' action counts differ from the numpy path's BLAS matrix-vector product in summation order only
# (< 1e-14 relative). tests/test_step_compiled.py checks the two paths against each other (1e-12).
# `_stream_kernel` is `Lookup.scalar` plus `_stream1`'s update of the action vector, compiled, for every
# path (bit for bit).


@njit(cache=True)
def _pw_block(a, lo, n):
    """numpy's pairwise_sum of a[lo:lo + n] for n <= 128: 8 accumulators."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    end = n - n % 8
    while i < end:
        b = lo + i
        r0 += a[b]
        r1 += a[b + 1]
        r2 += a[b + 2]
        r3 += a[b + 3]
        r4 += a[b + 4]
        r5 += a[b + 5]
        r6 += a[b + 6]
        r7 += a[b + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def _pw_sum(a, n):
    """numpy's add.reduce of the contiguous float64 a[:n], bit for bit: blocks of up to 128 summed with 8
    accumulators, larger spans halved (at a multiple of 8) and the halves added. The recursion runs on an
    explicit stack (numba's cache does not keep recursive functions reliably)."""
    lo = np.int64(0)  # not a literal: one compiled version of _pw_block
    if n <= 128:
        return _pw_block(a, lo, n)
    s_lo = np.empty(64, np.int64)
    s_n = np.empty(64, np.int64)
    s_st = np.empty(64, np.int64)
    vals = np.empty(64)
    d = 0
    nv = 0
    s_lo[0], s_n[0], s_st[0] = lo, n, 0
    while d >= 0:
        flo, fn = s_lo[d], s_n[d]
        if fn <= 128:
            vals[nv] = _pw_block(a, flo, fn)
            nv += 1
            d -= 1
            continue
        n2 = fn // 2
        n2 -= n2 % 8
        if s_st[d] == 0:
            s_st[d] = 1
            d += 1
            s_lo[d], s_n[d], s_st[d] = flo, n2, 0
        elif s_st[d] == 1:
            s_st[d] = 2
            d += 1
            s_lo[d], s_n[d], s_st[d] = flo + n2, fn - n2, 0
        else:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
            d -= 1
    return vals[0]


@njit(cache=True)
def _interp1(x, xp, fp):
    """np.interp(x, xp, fp) for one x (increasing xp), bit for bit."""
    n = xp.shape[0]
    if x != x:
        return x
    if n == 1:
        return fp[0]
    if x < xp[0]:
        return fp[0]
    if x > xp[n - 1]:
        return fp[n - 1]
    j = np.searchsorted(xp, x, side="right") - 1
    if j >= n - 1:
        return fp[n - 1]
    if xp[j] == x:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    r = slope * (x - xp[j]) + fp[j]
    if r != r:
        r = slope * (x - xp[j + 1]) + fp[j + 1]
        if r != r and fp[j] == fp[j + 1]:
            r = fp[j]
    return r


@njit(cache=True)
def _time1(x, split, xs, ts, top, t_top):
    """`Lookup.time_ns` of one element of an array whose maximum is above the grid's top (`split`) or not."""
    if split:
        pieces = np.floor(x / top)
        return _interp1(x - pieces * top, xs, ts) + pieces * t_top
    return _interp1(x, xs, ts)


@njit(cache=True)
def _packed_load_few(items, n):
    """`pim_packed_load` for 0 < len(items) < n (same operations, same result): the items split over the
    scopes (the greedy heap's increments)."""
    m = items.shape[0]
    mx = items[0]
    total = 0.0
    for i in range(m):
        mx = max(mx, items[i])
        total += items[i]
    if mx <= 0:
        return 0.0
    ks = np.empty(m, np.int64)
    upper = -np.inf
    for i in range(m):
        k = max(1, int(items[i] * (n - m) / total))
        upper = max(upper, items[i] / k)
    s = 0
    for i in range(m):
        ks[i] = max(1, math.ceil(items[i] / upper - 1e-12))
        s += ks[i]
    # the heap's pops: the largest t_i / k_i, the lowest i among equals
    for _ in range(n - s):
        best = 0
        bv = items[0] / ks[0]
        for i in range(1, m):
            v = items[i] / ks[i]
            if v > bv:
                best, bv = i, v
        ks[best] += 1
    bv = items[0] / ks[0]
    for i in range(1, m):
        bv = max(bv, items[i] / ks[i])
    return bv


@njit(cache=True)
def _stream_kernel(x, xs, ts, ax, A, a_top, top, t_top, vec, o, k, write):
    """`Lookup.scalar(x)` with its actions x k added to vec[o:] (read bits turned into written bits for a
    write): `StepModel._stream1`'s characterized case, the same operations. Returns the time in ns."""
    pieces = 0
    if x > top:
        pieces = math.floor(x / top)
        x -= pieces * top
    n = xs.shape[0]
    i = min(max(np.searchsorted(xs, x, side="right"), 1), n - 1)
    x0, x1 = xs[i - 1], xs[i]
    f = min(max((x - x0) / (x1 - x0), 0.0), 1.0)
    t = ts[i - 1] + f * (ts[i] - ts[i - 1])
    na = ax.shape[0]
    j = min(max(np.searchsorted(ax, x, side="right"), 1), na - 1)
    g = min(max((x - ax[j - 1]) / (ax[j] - ax[j - 1]), 0.0), 1.0)
    if pieces:
        t += pieces * t_top
    r = 0.0
    for a in range(A.shape[0]):
        v = A[a, j - 1] * (1.0 - g) + A[a, j] * g
        if pieces:
            v = v + pieces * a_top[a]
        vec[o + a] += v * k
        if a == _READ:
            r = v * k
    if write:  # the stream's read bits were written
        vec[o + _READ] -= r
        vec[o + _WRITE] += r
    return t


@njit(cache=True)
def _attention_kernel(ids, new, ctx, emits, pim_cnt, cap_cnt, last_loc, ip, fp, xs, ts, ax, A, a_top, apim, per_out,
                      out):
    """The attention terms of a step (see above): decode tokens over KV in PIM units on the units, the
    rest (prefill and recompute chunks, KV in the capacity tier, partial-result merges) on the GPU. ip:
    kv.U, units U, has a PIM tier, packed, scopes, heads per stack; fp: grid top, time at top, fixed
    cost, action scale. Writes the PIM units' actions (scaled) to `apim` and the terms to `out`; where the
    most loaded unit's items need the snake deal (pim_packed_load), out[2] = -1 and the items go to
    `per_out` (out[18] of them)."""
    B = ids.shape[0]
    kv_U, U, has_pim, packed, n_scopes, H = ip[0], ip[1], ip[2] != 0, ip[3] != 0, ip[4], ip[5]
    top, t_top, fixed_ns, k_act = fp[0], fp[1], fp[2], fp[3]
    Uv = pim_cnt.shape[1]
    T = np.empty((B, U))
    colsum = np.zeros(U)
    flat = np.empty(B * U)
    f = np.empty(U)
    att = np.empty(B)
    rc = np.empty(B)
    g_fl = np.empty(B)
    g_fp = np.empty(B)
    g_fc = np.empty(B)
    g_nq = np.empty(B)
    tokens = 0
    n_one = 0
    gpu_lp = 0.0
    gpu_nlp = 0.0
    m = np.int64(0)
    nflat = np.int64(0)
    n_gpu = np.int64(0)
    gathers = 0
    n_wr = 0
    pim_nlp = 0
    for i in range(B):
        r = ids[i]
        c = float(ctx[i])
        nq = float(new[i])
        tokens += new[i]
        n_one += new[i] == 1
        att[i] = c + nq
        s = np.int64(cap_cnt[r])
        for u in range(Uv):
            s += pim_cnt[r, u]
        nblk = float(max(s, 1))
        if Uv == U:
            for u in range(U):
                f[u] = pim_cnt[r, u] / nblk
        else:  # interleaved: one count, split evenly over every unit
            one = pim_cnt[r, 0] / nblk
            for u in range(U):
                f[u] = one / U
        in_pim = _pw_sum(f, U)
        fc = cap_cnt[r] / nblk
        lp = last_loc[r] >= 0 and last_loc[r] < kv_U
        if has_pim and nq == 1.0 and in_pim > 0:  # a decode token over KV in PIM units
            key = c + 1.0
            places = 0
            for u in range(U):
                tv = key * f[u]
                T[m, u] = tv
                colsum[u] += tv
                if tv > 0:
                    flat[nflat] = tv
                    nflat += 1
                    places += 1
            if fc > 0:
                places += 1
            if places > 1:
                gathers += places - 1
            rc[m] = c * fc
            if lp:
                n_wr += 1
            else:
                pim_nlp += 1
            m += 1
        else:
            g_fl[n_gpu] = nq * (c + (nq + 1.0) * 0.5)
            g_fp[n_gpu] = c * in_pim
            g_fc[n_gpu] = c * fc
            g_nq[n_gpu] = nq
            if lp:
                gpu_lp += nq
            else:
                gpu_nlp += nq
            n_gpu += 1
    pim_ns = 0.0
    att_pim = 0.0
    rest_cap = 0.0
    if m:
        u_max = 0
        for u in range(1, U):
            if colsum[u] > colsum[u_max]:
                u_max = u
        per = np.empty(m)
        npr = np.int64(0)
        mx = -np.inf
        for i in range(m):
            v = T[i, u_max]
            if v > 0:
                per[npr] = v
                npr += 1
                mx = max(mx, v)
        if not packed or npr == 1:
            tt = np.empty(npr)
            for i in range(npr):
                tt[i] = _time1(per[i], mx > top, xs, ts, top, t_top)
            pim_ns = _pw_sum(tt, npr)
        elif npr * H < n_scopes:
            items = np.empty(npr * H)
            for i in range(npr):
                for h in range(H):
                    items[i * H + h] = per[i]
            x = n_scopes * _packed_load_few(items, n_scopes) / H
            pim_ns = _time1(x, x > top, xs, ts, top, t_top)  # one round: + 0 * fixed cost
        else:  # as many items as scopes or more: dealt in snake order by pim_packed_load (numpy, rare)
            pim_ns = -1.0
            for i in range(npr):
                per_out[i] = per[i]
            out[18] = npr
        # the units' actions (Lookup.actions over every (sequence, unit) share)
        split = False
        for i in range(nflat):
            if flat[i] > top:
                split = True
        na = A.shape[0]
        npts = ax.shape[0]
        s0 = np.zeros(na)
        s1 = np.zeros(na)
        pieces_sum = 0.0
        for i in range(nflat):
            x = flat[i]
            if split:
                pieces = np.floor(x / top)
                x = x - pieces * top
                pieces_sum += pieces
            j = np.searchsorted(ax, x, side="right")
            j = min(max(j, 1), npts - 1)
            x0, x1 = ax[j - 1], ax[j]
            g = min(max((x - x0) / (x1 - x0), 0.0), 1.0)
            w0 = 1.0 - g
            for a in range(na):
                s0[a] += A[a, j - 1] * w0
                s1[a] += A[a, j] * g
        for a in range(na):
            v = s0[a] + s1[a]
            if split:
                v = v + a_top[a] * pieces_sum
            apim[a] = v * k_act
        att_pim = _pw_sum(flat, nflat)
        rest_cap = _pw_sum(rc, m)
    out[0] = _pw_sum(att, B)
    out[1] = att_pim
    out[2] = pim_ns
    out[3] = m
    out[4] = n_wr
    out[5] = pim_nlp
    out[6] = gathers
    out[7] = rest_cap
    out[8] = n_gpu
    out[9] = _pw_sum(g_fl, n_gpu)
    out[10] = _pw_sum(g_fp, n_gpu)
    out[11] = _pw_sum(g_fc, n_gpu)
    out[12] = gpu_lp
    out[13] = gpu_nlp
    n_emit = 0
    for i in range(B):
        n_emit += emits[i]
    out[14] = n_emit
    out[15] = tokens
    out[16] = n_one
    out[17] = _pw_sum(g_nq, n_gpu)


class StepRecords:
    """What the step model records per step, in arrays that grow by doubling (a million-step run keeps
    ~0.4 GB less than a list of tuples and appends faster): `parts` (steps x STEP_PARTS), `actions`
    (steps x N_ACTIONS, whole system), `attended`, `attended_pim`, `decode_seqs`, and `kv` (steps x
    KV_FIELDS: where blocks are and what moved, zeros without tiered KV)."""

    _NO_KV = (0.0,) * len(KV_FIELDS)

    def __init__(self, capacity: int = 4096):
        self.n = 0
        # per step: parts, then attended, attended_pim, decode_seqs, then the KV fields (one row, one store)
        self._cols = np.zeros((capacity, N_PARTS + 3 + len(KV_FIELDS)))
        self._actions = np.zeros((capacity, N_ACTIONS))

    def add(self, parts, vec, attended: float, attended_pim: float, decode_seqs: int, kv=None) -> None:
        if self.n == len(self._cols):
            self._cols = np.concatenate([self._cols, np.zeros_like(self._cols)])
            self._actions = np.concatenate([self._actions, np.zeros_like(self._actions)])
        i = self.n
        self._cols[i] = (*parts, attended, attended_pim, decode_seqs, *(self._NO_KV if kv is None else kv))
        self._actions[i] = vec
        self.n += 1

    @property
    def kv(self) -> np.ndarray:
        return self._cols[:self.n, N_PARTS + 3:]

    def __len__(self) -> int:
        return self.n

    @property
    def parts(self) -> np.ndarray:
        return self._cols[:self.n, :N_PARTS]

    @property
    def actions(self) -> np.ndarray:
        return self._actions[:self.n]

    @property
    def attended(self) -> np.ndarray:
        return self._cols[:self.n, N_PARTS]

    @property
    def attended_pim(self) -> np.ndarray:
        return self._cols[:self.n, N_PARTS + 1]

    @property
    def decode_seqs(self) -> np.ndarray:
        return self._cols[:self.n, N_PARTS + 2]


class StepModel:
    """The step-cost model of one (system, model) pair. Build, `required_ops()`, `bind(tables)`, then
    time batches: `step_time_s(batch)` satisfies the serve loop's StepCost protocol and records each
    step's parts and action vector in `records` (a `StepRecords`)."""

    def __init__(self, system, model_cfg, kv_tiers: list[KvTier], *, block_size: int,
                 options: EngineOptions = EngineOptions(), kv_policy: KvPolicy | None = None):
        self.system, self.cfg, self.options = system, model_cfg, options
        self.kv_policy = kv_policy or KvPolicy()
        self.kv = None  # a kv.tiered.TieredKv, set per run by the engine; None: proportional spread
        self.im = IterationModel(model_cfg, system.tp)
        self.gpu = system.gpu
        self.n_stacks = system.gpu_stacks_per_gpu
        self.stack = system.gpu_stack
        self.weight_tier = stack_tier(self.stack, "capacity")
        self.kv_tiers = [t for t in kv_tiers if t.blocks > 0]
        if not self.kv_tiers:
            raise InputError(f"system {system.name!r} has no KV blocks left for model {model_cfg.name!r}",
                             where="kv_blocks")
        self.total_blocks = sum(t.blocks for t in self.kv_tiers)
        self.block_size = block_size
        self.attacc = system.pim_stack is not None
        self.pim_stack = system.pim_stack if self.attacc else (self.stack if self.stack.has_pim else None)
        self.n_pim_stacks = system.pim_stacks_per_gpu if self.attacc else self.n_stacks
        self.pim_tier = next((t for t in self.kv_tiers if t.pim), None)
        d = model_cfg.dtype
        self.w_dtype, self.a_dtype = d.weight, d.activation
        self.ab, self.kvb = d.activation_bytes, d.kv_bytes
        self.hq, self.hkv, self.dh = self.im.hq, self.im.hkv, model_cfg.head_dim
        self.kv_tok_bytes = self.im.kv_tok_layer_bytes  # per layer, per shard
        self.qo_tok_bytes = 2 * self.hq * self.dh * self.ab  # q in + attention output out, per token
        self.attn_coef = 4.0 * self.hq * self.dh  # FLOPs per attended (query, key) pair
        n = self.n_pim_stacks
        # PIM attention: KV heads per PIM stack, and the share of a head's tokens one stack holds
        self.pim_heads = max(1, math.ceil(self.hkv / n)) if self.pim_stack is not None else 0
        self.pim_token_frac = self.hkv / (n * self.pim_heads) if self.pim_stack is not None else 0.0
        # PIM units (kv/tiered.py): groups of stacks_per_unit stacks, one slice of KV heads each, that
        # hold whole blocks; U of them per GPU shard
        self.stacks_per_unit = max(1, self.hkv // self.pim_heads) if self.pim_stack is not None else 1
        self.pim_units = max(1, n // self.stacks_per_unit) if self.pim_stack is not None else 0
        if self.pim_stack is not None:
            from tokenstack_sim.hw.stack.pim import PimUnits

            self.pim_scopes = PimUnits.of(self.pim_stack).n_scopes
        self.block_bytes = block_size * model_cfg.num_layers * self.im.kv_tok_layer_bytes  # one shard's block
        # KV in TokenStack's capacity tier is stored in the demotion format (quantized inline by the base
        # die); the rivals keep KV as written
        tiered = {"gpu_pim", "gpu_capacity"} <= {t.name for t in self.kv_tiers}
        self.capacity_ratio = capacity_ratio(self.kv_policy, self.kvb) if tiered else 1.0
        self.last_gathers = 0
        self.last_migrations = None
        self.partial_bytes = self.hq * (self.dh + 2) * 4.0  # one head group's partial output + max, sum (FP32)
        self._launch_s = self.gpu.launch_overhead_s
        self._peak_w = self.gpu.peak_flops(self.w_dtype)
        self._peak_a = self.gpu.peak_flops(self.a_dtype)
        eff = self.gpu.config.efficiency
        self._eta_attn, self._eta_bw = eff.attention_compute, eff.memory_bw
        names = self.im.layer_names
        self._gemm_rows = [i for i, x in enumerate(names) if x in ("qkv", "out_proj", "router", "ffn_up", "ffn_down")]
        self._allreduce_rows = [i for i, x in enumerate(names) if x.startswith("allreduce")]
        self._qkvo_rows = [names.index("qkv"), names.index("out_proj")]
        self._pipe: dict[tuple[int, int], tuple] = {}  # (tokens, emitting) -> `_pipe_part`
        self._lookups: dict[str, Lookup] = {}
        self._fixed: dict[tuple[int, int], tuple] = {}  # (tokens, emitting) -> the step's non-attention part
        # steps with a bound `kv` take the compiled path (`_compiled_step`); False: the numpy path only
        # (tests compare the two)
        self.compiled = True
        self._dk_kv = None
        self._fast_seqs = 0  # sequences the compiled path timed in this step, and the decode ones among them
        self._fast_dec = 0
        self._mig_any = False
        self._dma_lookups = None
        self.records = StepRecords()
        # per-step constants
        self._L, self._g = model_cfg.num_layers, system.gpus
        self._slot_pim_link = action_slot("pim_link", "link_bytes")
        self._slot_flops_a = action_slot("gpu", f"flops_{self.a_dtype}")
        self._slot_l2 = action_slot("gpu", "l2_bytes")
        self._no_mig = None

    # --- characterized costs -------------------------------------------------------------------------
    def attention_op(self) -> OpSpec:
        return OpSpec("attention", heads=self.pim_heads, gqa=max(1, self.hq // self.hkv), head_dim=self.dh,
                      kv_bytes=self.kvb)

    def required_ops(self) -> list[tuple[object, OpSpec]]:
        """(stack, op) pairs whose characterized costs this model looks up."""
        ops = []
        if self.options.memory_timing == "characterized":
            ops.append((self.stack, OpSpec("stream", tier=self.weight_tier)))
            if any(t.name == "gpu_pim" for t in self.kv_tiers) and self.weight_tier != "pim":
                ops.append((self.stack, OpSpec("stream", tier="pim")))
        if self.pim_tier is not None:
            ops.append((self.pim_stack, self.attention_op()))
        if self.migrates:
            ops += [(self.stack, self.dma_op(promote=False)), (self.stack, self.dma_op(promote=True))]
        return ops

    @property
    def migrates(self) -> bool:
        """Blocks can move between the GPU stacks' PIM and capacity tiers (TokenStack)."""
        names = {t.name for t in self.kv_tiers}
        return {"gpu_pim", "gpu_capacity"} <= names and self.kv_policy.eviction != "none"

    def dma_op(self, promote: bool) -> OpSpec:
        """The base-die DMA of a demotion (PIM -> capacity, quantizing inline) or a promotion (back,
        dequantizing); a plain copy where the capacity format is not smaller."""
        q = self.capacity_ratio < 1.0
        fmt = self.kv_policy.demote_format if q else "fp16"
        if promote:
            return OpSpec("dma", src="capacity", dst="pim", fmt=fmt, group=self.kv_policy.group, dequantize=q)
        return OpSpec("dma", src="pim", dst="capacity", fmt=fmt, group=self.kv_policy.group)

    def key(self, stack, op: OpSpec) -> str:
        """The name a bound table goes by: the op id, prefixed 'pim:' for a separate PIM device's op."""
        return ("pim:" if self.attacc and stack is self.pim_stack else "") + op.op_id

    def bind(self, tables: dict) -> None:
        """`tables`: key(stack, op) -> OpTable, for every op of `required_ops()`."""
        for stack, op in self.required_ops():
            k = self.key(stack, op)
            if k not in tables:
                raise InputError(f"no characterized cost {k!r} for {stack.config.name}; run "
                                 f"`tokenstack characterize {stack.config.name}`")
            self._lookups[k] = Lookup(tables[k])
        self._fixed.clear()
        self._dk_kv = None
        self._dma_lookups = None

    # --- pieces ---------------------------------------------------------------------------------------
    def _stream(self, nbytes: np.ndarray, tier: str, vec: np.ndarray, scale: float,
                reps: np.ndarray | None = None, write: bool = False) -> np.ndarray:
        """Seconds for one GPU's stacks to move each element of `nbytes` (spread evenly over its stacks)
        from or to `tier`; adds the stack actions of the whole system (x `reps` per element, x `scale`)
        to `vec`. A write is timed as the stream and its bits counted as written [E]."""
        o = OFFSET["gpu_stacks"]
        g = self.system.gpus
        if self.options.memory_timing == "roofline":
            bits = float(nbytes @ reps if reps is not None else nbytes.sum()) * 8
            vec[o:o + len(STACK_ACTIONS)] += (bits * scale * g) * (_GPU_WR if write else _GPU_RD)
            return nbytes / (self.system.gpu_bw_GBps * 1e9 * self._eta_bw)
        lk = self._lookups[f"stream-{tier}"]
        per = nbytes / self.n_stacks
        a = lk.actions(per, reps) * (self.n_stacks * scale * g)
        if write:
            a[_WRITE] += a[_READ]
            a[_READ] = 0.0
        vec[o:o + len(STACK_ACTIONS)] += a
        return lk.time_ns(per) * 1e-9

    def _stream1(self, nbytes: float, tier: str, vec: np.ndarray, scale: float, write: bool = False) -> float:
        """`_stream` for one transfer (the common case inside a step), without numpy arrays."""
        o = OFFSET["gpu_stacks"]
        g = self._g
        if self.options.memory_timing == "roofline":
            vec[o:o + len(STACK_ACTIONS)] += (nbytes * 8 * scale * g) * (_GPU_WR if write else _GPU_RD)
            return nbytes / (self.system.gpu_bw_GBps * 1e9 * self._eta_bw)
        lk = self._lookups["stream-" + tier]
        xs, ts, ax, A, a_top = lk.arrays
        # Lookup.scalar and the actions' update, compiled (_stream_kernel: the same operations)
        return _stream_kernel(nbytes / self.n_stacks, xs, ts, ax, A, a_top, lk.top, lk.t_top, vec, o,
                              float(self.n_stacks * scale * g), write) * 1e-9

    def _fixed_part(self, tokens: int, emitting: int) -> tuple:
        """The part of a step that depends only on its token and emitting-sequence counts: the GEMMs, the
        collectives and the embedding, with their actions (memoized)."""
        new = np.zeros(max(1, emitting))
        new[0] = tokens  # only the totals matter for these ops
        ops = self.im.ops(new, np.zeros_like(new), emitting)
        L = self.cfg.num_layers
        vec = np.zeros(N_ACTIONS)
        lay = ops.layer[self._gemm_rows]
        lay = lay[lay["gemm_m"] > 0]
        lm = ops.step[1:2]
        lm = lm[lm["gemm_m"] > 0]
        g = np.concatenate([lay, lm])
        gemm_s = 0.0
        if len(g):
            reps = np.concatenate([np.full(len(lay), float(L)), np.ones(len(lm))])
            eta = gemm_compute_efficiency(self.gpu, g["gemm_m"], g["gemm_n"])
            t_c = g["flops"] / (eta * self._peak_w)
            nbytes = g["weight_bytes"] + g["act_bytes"]
            t_m = self._stream(nbytes, self.weight_tier, vec, 1.0, reps)
            gemm_s = float(((self._launch_s + np.maximum(t_c, t_m)) * reps).sum())
            n = self.system.gpus
            vec[action_slot("gpu", f"flops_{self.w_dtype}")] += float(g["flops"] @ reps) * n
            vec[action_slot("gpu", "l2_bytes")] += float(nbytes @ reps) * n
        # collectives: two all-reduces per layer, the embedding's all-reduce, the logits' all-gather
        tp, lk = self.system.tp, self.system.gpu_link
        emb, lmh = ops.step[0], ops.step[1]
        # the layer's all-reduces and the embedding's, in one call each (elementwise: the same values)
        ar = np.append(ops.layer["comm_bytes"][self._allreduce_rows], emb["comm_bytes"])
        alg = self.options.allreduce
        t_ar = allreduce_time_s(lk, ar, tp, alg)
        b_ar = allreduce_link_bytes(ar, tp, alg, lk)
        allreduce_s = float(np.sum(t_ar[:-1])) * L + float(t_ar[-1])
        link_bytes = float(np.sum(b_ar[:-1])) * L + float(b_ar[-1])
        if tp > 1 and lmh["comm_bytes"] > 0:  # ring all-gather: each GPU receives p-1 chunks
            allreduce_s += (tp - 1) * (float(lmh["comm_bytes"]) / lk.effective_bw_Bps + lk.latency_s)
            link_bytes += (tp - 1) * float(lmh["comm_bytes"]) * tp
        vec[action_slot("gpu_link", "link_bytes")] += link_bytes  # already summed over the GPUs
        # embedding lookup: its rows read from the weight tier
        other_s = 0.0
        if emb["weight_bytes"] > 0:
            other_s = float(self._stream(np.array([emb["weight_bytes"]]), self.weight_tier, vec, 1.0)[0])
        return gemm_s, allreduce_s, other_s, vec

    # --- one step -------------------------------------------------------------------------------------
    def step(self, new_tokens, context_tokens, emits, kv_blocks_in_use: int, request_ids=None):
        """(seconds, parts tuple in STEP_PARTS order, action vector of the whole system, KV tokens attended,
        of which by PIM units). Attended counts are per shard, summed over layers. With a bound `kv`
        (TieredKv) and `request_ids`, attention follows each request's blocks and the step pays the
        migrations queued since the last step; otherwise every request's KV is spread over the tiers in
        proportion to their share of the blocks in use."""
        kv = self.kv if request_ids is not None else None
        mig = None
        ids = None
        self._fast_seqs = self._fast_dec = 0
        self._mig_any = False
        if kv is not None:
            kv.begin_step()
            ids = np.asarray(request_ids)
        if self.options.overlap == "sub_batch" and len(new_tokens) >= 2:
            t, parts, vec, att, att_pim = self._sub_batched(new_tokens, context_tokens, emits, kv_blocks_in_use, ids)
        else:
            t, parts, vec, att, att_pim = self._step(new_tokens, context_tokens, emits, kv_blocks_in_use, ids)
            if self.options.overlap == "attacc_pipeline" and parts[2] > 0:
                piped = self._pipelined(new_tokens, emits, parts, vec)
                if piped is not None:
                    t, parts, vec = piped
        mig_s = 0.0
        if kv is not None:
            if kv.migrations_pending:
                mig = kv.take_migrations()
                if mig.any():
                    self._mig_any = True
                    mig_s = self._migration_s(mig, vec)
            else:  # nothing moved: the zero counts, without the copy
                mig = self._no_mig
                if mig is None or mig.shape[1] != max(kv.U, 1):
                    mig = self._no_mig = np.zeros((3, max(kv.U, 1)), np.int64)
        self.last_migrations = mig
        return t + mig_s, parts + (mig_s,), vec, att, att_pim

    def _migration_s(self, mig: np.ndarray, vec: np.ndarray) -> float:
        """Time and actions of the blocks moved this step (kind x unit counts, kv/tiered.py): per unit, its
        stacks run their demotions and promotions on the base-die DMA and receive replicas (read from
        the master's stacks and written through the GPU's PHYs, timed as two streams of the PIM tier);
        units work in parallel. 'serial' timing adds the slowest unit's time to the step, 'hidden' adds
        nothing (the actions are charged either way)."""
        from tokenstack_sim.kv.tiered import DEMOTE, PROMOTE, REPLICATE

        o = OFFSET["gpu_stacks"]
        g = self.system.gpus
        spu = self.stacks_per_unit
        per_block = self.block_bytes / spu  # FP16 bytes of one block on each stack of its unit
        worst = 0.0
        dma = self._dma_lookups
        if dma is None:  # only with eviction on (`migrates`); replicas alone need no DMA table
            dma = self._dma_lookups = ({promote: self._lookups[self.dma_op(promote).op_id] for promote in (False, True)}
                                       if self.migrates else {})
        m = mig.tolist()
        for u in np.flatnonzero(mig.sum(axis=0)).tolist():
            t = 0.0
            for kind, promote in ((DEMOTE, False), (PROMOTE, True)):
                n = m[kind][u]
                if n:
                    lk = dma[promote]
                    xs, ts, ax, A, a_top = lk.arrays
                    # lk.scalar(n * per_block) with its actions x (spu * g) added to vec, compiled
                    t_ns = _stream_kernel(n * per_block, xs, ts, ax, A, a_top, lk.top, lk.t_top, vec, o,
                                          float(spu * g), False)
                    t += t_ns * 1e-9
            n = m[REPLICATE][u]
            if n:
                b = n * self.block_bytes
                t += self._stream1(b * self.n_stacks / spu, "pim", vec, 1.0)  # read on the master's stacks
                t += self._stream1(b * self.n_stacks / spu, "pim", vec, 1.0, write=True)
                vec[action_slot("gpu", "l2_bytes")] += 2 * b * g
            worst = max(worst, t)
        return worst if self.kv_policy.migration_timing == "serial" else 0.0

    def _pipelined(self, new_tokens, emits, parts, vec):
        """AttAcc-style pipelining (overlap "attacc_pipeline"; AttAcc, ASPLOS'24, as its simulator
        scale-snu/attacc_simulator src/system.py `_pipeline(level=True)` times it): each layer's QKV
        generation, attention and output projection run per query head of a GPU (h = heads / tp), so
        the GPU computes head i+1's QKV and head i-1's projection while the PIM units attend head i.
        With F the GPU side (the QKV and out_proj GEMMs, split into h pieces each: `_pipe_part`), A
        the PIM attention and X the PIM link (AttAcc's device; 0 in the stacks), r = 1/h: where A > F
        only r F of the GEMMs shows, and of X, r X (A > X) or X - (1 - r) A; otherwise F - (1 - r) A
        and r X (F > X), or r F and X - (1 - r) A. The hidden time comes off the GEMM and link parts,
        as the simulator books it. Charged: the split GEMMs (h launches each, QKV's input read by every
        piece, out_proj's partial sums read and written by each further piece) in place of the whole
        ones; the weights are sliced by head, each slice read once, so no weight is read twice. A step
        the split would not speed up (little PIM attention against many prefill tokens) runs
        unpipelined: None. The prefill chunks' GPU attention, the FFN and the all-reduces stay in order."""
        n_emit = int(np.count_nonzero(emits)) if np.ndim(emits) else int(emits)
        key = (int(np.sum(new_tokens)), n_emit)
        memo = self._pipe.get(key)
        if memo is None:
            memo = self._pipe[key] = self._pipe_part(*key)
        f_whole, f, dvec = memo
        gemm_s, attn_gpu_s, a, x, allreduce_s, other_s = parts
        r = 1.0 / self._pipe_heads
        if a > f:
            f2 = f * r
            x2 = x * r if a > x else x - a * (1.0 - r)
        elif f > x:
            f2, x2 = f - a * (1.0 - r), x * r
        else:
            f2, x2 = f * r, x - a * (1.0 - r)
        new = (gemm_s - f_whole + f2, attn_gpu_s, a, x2, allreduce_s, other_s)
        t = float(sum(new))
        if not t < float(sum(parts)):
            return None
        return t, new, vec + dvec

    @property
    def _pipe_heads(self) -> int:
        """Pieces of AttAcc's pipeline: query heads per GPU (its simulator: num_heads / num_xpu)."""
        return max(1, int(self.im.hq))

    def _pipe_part(self, tokens: int, emitting: int) -> tuple:
        """The QKV and out_proj GEMMs of a step, all layers: (seconds whole, seconds split into the
        pipeline's h pieces each, the split's actions minus the whole ones'). A QKV piece computes 1/h
        of the columns from the whole input; an out_proj piece multiplies 1/h of the rows and adds its
        product to the partial sum of the earlier pieces (read and written again from the second on).
        Each piece is timed like a GEMM of `_fixed_part`: launch + max(compute, stream)."""
        new = np.zeros(max(1, emitting))
        new[0] = tokens
        ops = self.im.ops(new, np.zeros_like(new), emitting)
        g = ops.layer[self._qkvo_rows]  # qkv, out_proj
        L, h, n = float(self.cfg.num_layers), self._pipe_heads, self.system.gpus
        d_vec = np.zeros(N_ACTIONS)
        m, cols, k = g["gemm_m"], g["gemm_n"], g["gemm_k"]
        if not (m > 0).all():
            return 0.0, 0.0, d_vec
        ab = g["act_bytes"] / (m * (cols + k))  # bytes per activation element
        out_b = m * cols * ab
        # whole: as _fixed_part times them; split: h pieces of each
        p_cols = np.array([cols[0] / h, cols[1]])
        p_flops = g["flops"] / h
        p_act = np.array([m[0] * (k[0] + p_cols[0]) * ab[0],
                          m[1] * (k[1] / h) * ab[1] + out_b[1] * (1.0 + (h - 1.0) / h)])  # mean piece
        whole_b = g["weight_bytes"] + g["act_bytes"]
        piece_b = g["weight_bytes"] / h + p_act
        scratch = np.zeros(N_ACTIONS)
        t_m = self._stream(whole_b, self.weight_tier, scratch, 1.0, np.full(2, L))
        t_mp = self._stream(piece_b, self.weight_tier, d_vec, 1.0, np.full(2, L * h))
        d_vec -= scratch
        eta = gemm_compute_efficiency(self.gpu, m, cols)
        eta_p = gemm_compute_efficiency(self.gpu, m, p_cols)
        f_whole = float(((self._launch_s + np.maximum(g["flops"] / (eta * self._peak_w), t_m)) * L).sum())
        f_split = float(((self._launch_s + np.maximum(p_flops / (eta_p * self._peak_w), t_mp)) * (L * h)).sum())
        d_vec[action_slot("gpu", "l2_bytes")] += float((piece_b * h - whole_b).sum()) * L * n
        return f_whole, f_split, d_vec

    def _sub_batched(self, new_tokens, context_tokens, emits, kv_blocks_in_use: int, ids=None):
        """NeuPIMs-style sub-batch interleaving: the batch split in two halves (sequences alternate, so
        the halves are alike) whose chains interleave, the GPU working on one half while the PIM
        units (and the PIM link) work on the other. Each half is a full step of its own, so the
        weights are read twice: charged. With G and P the GPU-side (GEMMs, GPU attention, all-reduce,
        other) and PIM-side (PIM attention, PIM link) time of each half, the layer's period is the
        two-chains-on-two-resources bound max(G_a + P_a, G_b + P_b, G_a + G_b, P_a + P_b), applied to
        whole-step totals (the once-per-step LM head and embedding ride along). The parts are the two
        halves' parts scaled to that time."""
        new, ctx = np.asarray(new_tokens), np.asarray(context_tokens)
        if np.ndim(emits) == 0:
            raise ValueError("sub-batching needs the per-sequence emits array")
        em = np.asarray(emits)
        halves = [self._step(new[sel], ctx[sel], em[sel], kv_blocks_in_use, None if ids is None else ids[sel])
                  for sel in (np.arange(0, len(new), 2), np.arange(1, len(new), 2))]
        (ta, pa, va, aa, apa), (tb, pb, vb, ab, apb) = halves
        g = [x[0] + x[1] + x[4] + x[5] for x in (pa, pb)]
        q = [x[2] + x[3] for x in (pa, pb)]
        t = max(g[0] + q[0], g[1] + q[1], g[0] + g[1], q[0] + q[1])
        k = t / (ta + tb) if ta + tb > 0 else 0.0
        parts = tuple((x + y) * k for x, y in zip(pa, pb))
        return t, parts, va + vb, aa + ab, apa + apb

    def _step(self, new_tokens, context_tokens, emits, kv_blocks_in_use: int, ids=None):
        """One step (or sub-batch) without migrations; `ids`: the requests, whose blocks the bound `kv`
        places, or None for the proportional spread. With `ids` it runs `_compiled_step` where that applies."""
        if ids is not None and self.compiled:
            r = self._compiled_step(new_tokens, context_tokens, emits, ids)
            if r is not None:
                return r
        view = self.kv.view(ids) if ids is not None else None
        new = np.asarray(new_tokens, np.float64)
        ctx = np.asarray(context_tokens, np.float64)
        n_emit = int(np.count_nonzero(emits)) if np.ndim(emits) else int(emits)
        key = (int(new.sum()), n_emit)
        fixed = self._fixed.get(key)
        if fixed is None:
            fixed = self._fixed[key] = self._fixed_part(*key)
        gemm_s, allreduce_s, other_s, fvec = fixed
        vec = fvec.copy()
        L = self.cfg.num_layers
        g = self.system.gpus
        pim_o = OFFSET["pim"]

        # --- attention follows the KV (module docstring): where each sequence's blocks are
        U = max(self.pim_units, 1)
        if view is None:  # proportional: every request spread evenly over the tiers' blocks in use
            pim_share = min(1.0, self.pim_tier.blocks / max(kv_blocks_in_use, 1)) if self.pim_tier is not None else 0.0
            f_pim = np.full((len(new), U), pim_share / U)
            f_cap = np.full(len(new), 1.0 - pim_share)
            last_pim = np.full(len(new), pim_share > 0)
        else:
            pim_cnt, cap_cnt, last_pim = view
            nblk = np.maximum(pim_cnt.sum(axis=1) + cap_cnt, 1).astype(np.float64)
            f_pim = pim_cnt / nblk[:, None]
            f_cap = cap_cnt / nblk
            if f_pim.shape[1] != U:  # interleaved: each block split evenly over every unit
                f_pim = np.repeat(f_pim.sum(axis=1, keepdims=True) / U, U, axis=1)
        in_pim = f_pim.sum(axis=1)
        on_pim = (new == 1) & (in_pim > 0) if self.pim_tier is not None else np.zeros(new.shape, bool)
        attn_pim_s = link_s = attn_gpu_s = 0.0
        attended = float((ctx + new).sum()) * L
        attended_pim = 0.0
        gather_bytes = 0.0
        if on_pim.any():
            keys = ctx[on_pim] + 1.0  # the new K/V is written first, then attended
            t = keys[:, None] * f_pim[on_pim]  # tokens per PIM unit (per KV head of the unit's stacks)
            lk = self._lookups[self.key(self.pim_stack, self.attention_op())]
            u_max = int(t.sum(axis=0).argmax())  # units run in parallel: the most loaded one sets the time
            per = t[:, u_max]
            attn_pim_s = self._pim_time_ns(lk, per[per > 0]) * 1e-9 * L
            flat = t[t > 0]
            vec[pim_o:pim_o + len(STACK_ACTIONS)] += lk.actions(flat) * (self.stacks_per_unit * L * g)
            attended_pim = float(flat.sum()) * L
            # partial results of a sequence spread over several units (and the GPU) merge on the GPU
            places = np.count_nonzero(t > 0, axis=1) + (f_cap[on_pim] > 0)
            gather_bytes = float(np.maximum(places - 1, 0).sum()) * self.partial_bytes
            self.last_gathers = int(np.maximum(places - 1, 0).sum())
            n_dec = float(np.count_nonzero(on_pim))
            n_wr = float(np.count_nonzero(on_pim & last_pim))  # new K/V written into a PIM unit
            attn_pim_s, link_s = self._pim_io(vec, n_dec, n_wr, attn_pim_s)
        else:
            self.last_gathers = 0

        # GPU part: prefill / recompute chunks, decode over KV outside the PIM units, and the merge of
        # partial results; one kernel per layer
        gpu_seq = ~on_pim
        rest_cap = float((ctx[on_pim] * f_cap[on_pim]).sum()) if on_pim.any() else 0.0
        if gpu_seq.any() or rest_cap > 0 or gather_bytes > 0:
            nq, cq = new[gpu_seq], ctx[gpu_seq]
            flops = float(self.attn_coef * (nq * (cq + (nq + 1.0) * 0.5)).sum()) + self.attn_coef * rest_cap
            from_pim = float((cq * in_pim[gpu_seq]).sum()) * self.kv_tok_bytes
            from_cap = (float((cq * f_cap[gpu_seq]).sum()) + rest_cap) * self.kv_tok_bytes
            # new K/V go where their sequence's newest block is (a decode token attended by PIM whose
            # newest block is in the capacity tier is written by the GPU too)
            if self.kv_tiers[0].pim:
                new_pim = float(new[gpu_seq & last_pim].sum()) * self.kv_tok_bytes
                new_cap = float(new[gpu_seq & ~last_pim].sum() + np.count_nonzero(on_pim & ~last_pim)) * self.kv_tok_bytes
            else:
                new_pim, new_cap = 0.0, float(nq.sum()) * self.kv_tok_bytes
            qo = float(nq.sum()) * self.qo_tok_bytes + gather_bytes
            attn_gpu_s = self._gpu_attention(vec, flops, from_pim, from_cap, new_pim, new_cap, qo)
        parts = (gemm_s, attn_gpu_s, attn_pim_s, link_s, allreduce_s, other_s + self.options.step_overhead_s)
        return float(sum(parts)), parts, vec, attended, attended_pim

    def _pim_io(self, vec, n_dec: float, n_wr: float, attn_pim_s: float) -> tuple[float, float]:
        """q and the attention output of `n_dec` PIM-attended decode tokens, and the new K/V of the `n_wr`
        of them whose newest block is in a PIM unit: (PIM attention time with it, PIM link time)."""
        L, g = self._L, self._g
        link_s = 0.0
        qo, kv_new = n_dec * self.qo_tok_bytes, n_wr * self.kv_tok_bytes
        if self.attacc:  # q and the new K/V to the device, the outputs back
            plk = self.system.pim_link
            link_s = (float(transfer_time_s(plk, qo / 2 + kv_new)) + float(transfer_time_s(plk, qo / 2))) * L
            vec[self._slot_pim_link] += (qo + kv_new) * L * g
            pim_o = OFFSET["pim"]
            vec[pim_o:pim_o + len(STACK_ACTIONS)] += (kv_new * 8 * L * g) * _GPU_WR
        else:  # through the stack's channels into / out of the PIM SID
            attn_pim_s += self._stream1(qo + kv_new, "pim", vec, L, write=True) * L
        return attn_pim_s, link_s

    def _gpu_attention(self, vec, flops: float, from_pim: float, from_cap: float, new_pim: float, new_cap: float,
                       qo: float) -> float:
        """The GPU's attention kernel of one step, all layers: `flops`, KV bytes read from the PIM tier (or
        device) and the capacity tier, new K/V bytes written to each, q / output / partial-result bytes."""
        L, g = self._L, self._g
        pim_o = OFFSET["pim"]
        ratio = self.capacity_ratio
        t_m = 0.0
        pim_name = self.pim_tier.name if self.pim_tier is not None else None
        if from_pim > 0:
            if pim_name == "pim_device":  # AttAcc: cached context fetched from the PIM device over its link
                t_m += float(transfer_time_s(self.system.pim_link, from_pim))
                vec[self._slot_pim_link] += from_pim * L * g
                vec[pim_o:pim_o + len(STACK_ACTIONS)] += (from_pim * 8 * L * g) * _GPU_RD
            else:
                t_m += self._stream1(from_pim, "pim", vec, L)
        if from_cap > 0:
            t_m += self._stream1(from_cap * ratio, self.weight_tier, vec, L)
        if new_pim > 0:  # chunk K/V written where their sequence's newest block is
            if pim_name == "pim_device":
                t_m += float(transfer_time_s(self.system.pim_link, new_pim))
                vec[self._slot_pim_link] += new_pim * L * g
                vec[pim_o:pim_o + len(STACK_ACTIONS)] += (new_pim * 8 * L * g) * _GPU_WR
            else:
                t_m += self._stream1(new_pim, "pim", vec, L, write=True)
        if new_cap > 0:  # quantized inline by the base die on its way into the capacity tier
            t_m += self._stream1(new_cap * ratio, self.weight_tier, vec, L, write=True)
        t_m += self._stream1(qo, self.weight_tier, vec, L)
        t_c = flops / (self._eta_attn * self._peak_a)
        attn_gpu_s = (self._launch_s + max(t_c, t_m)) * L
        vec[self._slot_flops_a] += flops * L * g
        vec[self._slot_l2] += (from_pim + from_cap * ratio + new_pim + new_cap * ratio + qo) * L * g
        return attn_gpu_s

    def _compiled_setup(self, kv) -> bool:
        """The compiled decode path's constants for `kv`; False where it does not apply (then the general
        path runs)."""
        self._dk_kv = kv
        U = max(self.pim_units, 1)
        Uv = kv.pim_cnt.shape[1]
        self._dk_ok = Uv == U or Uv == 1
        has_pim = self.pim_tier is not None
        if has_pim:
            lk = self._lookups[self.key(self.pim_stack, self.attention_op())]
            arrays = lk.arrays
            top, t_top, fixed_ns = lk.top, lk.t_top, lk.fixed_ns
        else:
            z = np.zeros(2)
            arrays = (z, z, z, np.zeros((len(STACK_ACTIONS), 2)), np.zeros(len(STACK_ACTIONS)))
            top = t_top = fixed_ns = 0.0
        self._dk_arrays = arrays
        self._dk_ip = np.array([kv.U, U, has_pim, self.options.pim_batching == "packed",
                                self.pim_scopes if has_pim else 1, max(self.pim_heads, 1)], np.int64)
        self._dk_fp = np.array([top, t_top, fixed_ns, float(self.stacks_per_unit * self.cfg.num_layers * self.system.gpus)])
        self._dk_apim = np.zeros(len(STACK_ACTIONS))
        self._dk_out = np.zeros(19)
        self._dk_per = np.zeros(0)
        return self._dk_ok

    def _compiled_step(self, new_tokens, context_tokens, emits, ids):
        """`_step` of the requests `ids` placed by the bound `kv`, its attention terms from the compiled
        `_attention_kernel` (same results; module section above it). None where it does not apply (other
        dtypes; a placement of another shape): the numpy path runs."""
        kv = self.kv
        if kv is not self._dk_kv:
            self._compiled_setup(kv)
        if not (self._dk_ok and type(new_tokens) is np.ndarray and new_tokens.dtype is _I64
                and type(context_tokens) is np.ndarray and context_tokens.dtype is _I64 and ids.dtype is _I64
                and type(emits) is np.ndarray and emits.dtype is _BOOL):
            return None
        xs, ts, ax, A, a_top = self._dk_arrays
        out = self._dk_out
        if len(self._dk_per) < len(ids):
            self._dk_per = np.zeros(2 * len(ids))
        _attention_kernel(ids, new_tokens, context_tokens, emits, kv.pim_cnt, kv.cap_cnt, kv.last_loc,
                          self._dk_ip, self._dk_fp, xs, ts, ax, A, a_top, self._dk_apim, self._dk_per, out)
        (att, att_pim, pim_ns, m, n_wr, pim_nlp, gathers, rest_cap, n_gpu, s_fl, s_fp, s_fc, gpu_lp, gpu_nlp,
         n_emit, tokens, n_one, nq_sum, n_per) = out.tolist()
        if pim_ns < 0:  # many items on the most loaded unit: the numpy path's packing
            lk = self._lookups[self.key(self.pim_stack, self.attention_op())]
            pim_ns = self._pim_time_ns(lk, self._dk_per[:int(n_per)].copy())
        key = (int(tokens), int(n_emit))
        fixed = self._fixed.get(key)
        if fixed is None:
            fixed = self._fixed[key] = self._fixed_part(*key)
        gemm_s, allreduce_s, other_s, fvec = fixed
        vec = fvec.copy()
        L = self._L
        attended = att * L
        attn_pim_s = link_s = attn_gpu_s = 0.0
        attended_pim = 0.0
        gather_bytes = 0.0
        if m:
            attn_pim_s = pim_ns * 1e-9 * L
            pim_o = OFFSET["pim"]
            vec[pim_o:pim_o + len(STACK_ACTIONS)] += self._dk_apim
            attended_pim = att_pim * L
            gather_bytes = gathers * self.partial_bytes
            self.last_gathers = int(gathers)
            attn_pim_s, link_s = self._pim_io(vec, m, n_wr, attn_pim_s)
        else:
            self.last_gathers = 0
        if n_gpu or rest_cap > 0 or gather_bytes > 0:
            kvb = self.kv_tok_bytes
            flops = float(self.attn_coef * s_fl) + self.attn_coef * rest_cap
            from_pim = s_fp * kvb
            from_cap = (s_fc + rest_cap) * kvb
            if self.kv_tiers[0].pim:
                new_pim, new_cap = gpu_lp * kvb, (gpu_nlp + pim_nlp) * kvb
            else:
                new_pim, new_cap = 0.0, nq_sum * kvb
            qo = nq_sum * self.qo_tok_bytes + gather_bytes
            attn_gpu_s = self._gpu_attention(vec, flops, from_pim, from_cap, new_pim, new_cap, qo)
        parts = (gemm_s, attn_gpu_s, attn_pim_s, link_s, allreduce_s, other_s + self.options.step_overhead_s)
        self._fast_seqs += len(new_tokens)
        self._fast_dec += int(n_one)
        return float(sum(parts)), parts, vec, attended, attended_pim

    def _pim_time_ns(self, lk: "Lookup", per: np.ndarray) -> float:
        """One layer's decode attention of a batch on one PIM stack, `per` tokens per sequence (and per
        KV head of the op's H heads on this stack).

        serial: the characterized op per sequence, one after another (each over all n scopes).
        packed: the B·H (sequence, head) items packed over the n scopes, the batch as long as its most
        loaded scope, expressed through the single-sequence op T (which spreads H·t tokens evenly):
          B·H < n: items split over scopes; the smallest per-scope load L with Σ ceil(t_i / L) ≤ n,
                   time T(n·L / H);
          B·H ≥ n: whole items, longest first, dealt in snake order over the scopes; L = the largest
                   scope's tokens, time T(n·L / H) + (ceil(B·H / n) − 1) · F, F = the op's fixed cost
                   (its time at the smallest characterized size) per further item a scope takes.
        Checked against batches packed in the cycle kernel (tests/test_pim_batch.py,
        results/pim_batch.md): exact for B·H ≤ n, within about 10% above."""
        if self.options.pim_batching == "serial" or len(per) == 1:
            return float(lk.time_ns(per).sum())
        n, H = self.pim_scopes, self.pim_heads
        load, rounds = pim_packed_load(np.repeat(per, H) if H > 1 else per, n)
        return float(lk.time_ns(np.array([n * load / H]))[0]) + (rounds - 1) * lk.fixed_ns

    def _gpu_kv_sources(self, pim_share: float) -> list[tuple[str, float]]:
        """Where the GPU streams its share of the KV from: (stack tier or 'pim_device', share of the bytes)."""
        if len(self.kv_tiers) == 1:
            n = self.kv_tiers[0].name
            return [(n if n == "pim_device" else ("pim" if n == "gpu_pim" else self.weight_tier), 1.0)]
        # TokenStack: the PIM SID and the capacity SIDs, in proportion to the blocks each holds
        return [("pim", pim_share), (self.weight_tier, 1.0 - pim_share)]

    def step_time_s(self, batch) -> float:
        kv = self.kv
        t, parts, vec, att, att_pim = self.step(batch.new_tokens, batch.context_tokens, batch.emits,
                                                batch.kv_blocks_in_use,
                                                request_ids=batch.request_ids if kv is not None else None)
        row = None
        if kv is not None:
            m = self.last_migrations
            moved = (m[0].sum(), m[1].sum(), m[2].sum()) if self._mig_any else (0, 0, 0)
            row = (self.last_gathers, *moved, sum(kv.pim_used[:kv.U].tolist()) - kv.replica_slots,
                   kv.cap_used, kv.replica_slots)
        new = batch.new_tokens
        decode_seqs = self._fast_dec if self._fast_seqs == len(new) else int(np.count_nonzero(new == 1))
        self.records.add(parts, vec, att, att_pim, decode_seqs, row)
        return t
