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
batch on the GPU and the PIM units as NeuPIMs does, charging the second weight read (`_sub_batched`).
Left out: AttAcc-style pipelining across steps, overlap of GPU and PIM attention over one
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
OVERLAPS = ("none", "sub_batch")
GPU_ACTIONS = ("flops_bf16", "flops_fp16", "flops_fp8", "flops_fp32", "l2_bytes")
LINK_ACTIONS = ("link_bytes",)
# Counted actions per component, whole system. 'pim' holds the PIM units' work and the traffic to the
# PIM device (AttAcc); the PIM SID's plain reads and writes by the GPU count under 'gpu_stacks'.
COMPONENTS = {"gpu": GPU_ACTIONS, "gpu_stacks": STACK_ACTIONS, "pim": STACK_ACTIONS,
              "gpu_link": LINK_ACTIONS, "pim_link": LINK_ACTIONS}
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
    # "sub_batch" interleaves two halves of the batch on the GPU and the PIM units (NeuPIMs).
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


class StepRecords:
    """What the step model records per step, in arrays that grow by doubling (a million-step run keeps
    ~0.4 GB less than a list of tuples and appends faster): `parts` (steps x STEP_PARTS), `actions`
    (steps x N_ACTIONS, whole system), `attended`, `attended_pim`, `decode_seqs`, and `kv` (steps x
    KV_FIELDS: where blocks are and what moved, zeros without tiered KV)."""

    def __init__(self, capacity: int = 4096):
        self.n = 0
        self._parts = np.zeros((capacity, N_PARTS))
        self._actions = np.zeros((capacity, N_ACTIONS))
        self._scalars = np.zeros((capacity, 3))
        self._kv = np.zeros((capacity, len(KV_FIELDS)))

    def add(self, parts, vec, attended: float, attended_pim: float, decode_seqs: int, kv=None) -> None:
        if self.n == len(self._parts):
            self._parts = np.concatenate([self._parts, np.zeros_like(self._parts)])
            self._actions = np.concatenate([self._actions, np.zeros_like(self._actions)])
            self._scalars = np.concatenate([self._scalars, np.zeros_like(self._scalars)])
            self._kv = np.concatenate([self._kv, np.zeros_like(self._kv)])
        i = self.n
        self._parts[i] = parts
        self._actions[i] = vec
        self._scalars[i] = (attended, attended_pim, decode_seqs)
        if kv is not None:
            self._kv[i] = kv
        self.n += 1

    @property
    def kv(self) -> np.ndarray:
        return self._kv[:self.n]

    def __len__(self) -> int:
        return self.n

    @property
    def parts(self) -> np.ndarray:
        return self._parts[:self.n]

    @property
    def actions(self) -> np.ndarray:
        return self._actions[:self.n]

    @property
    def attended(self) -> np.ndarray:
        return self._scalars[:self.n, 0]

    @property
    def attended_pim(self) -> np.ndarray:
        return self._scalars[:self.n, 1]

    @property
    def decode_seqs(self) -> np.ndarray:
        return self._scalars[:self.n, 2]


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
        self._lookups: dict[str, Lookup] = {}
        self._fixed: dict[tuple[int, int], tuple] = {}  # (tokens, emitting) -> the step's non-attention part
        self.records = StepRecords()

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
        g = self.system.gpus
        if self.options.memory_timing == "roofline":
            vec[o:o + len(STACK_ACTIONS)] += (nbytes * 8 * scale * g) * (_GPU_WR if write else _GPU_RD)
            return nbytes / (self.system.gpu_bw_GBps * 1e9 * self._eta_bw)
        t_ns, a = self._lookups[f"stream-{tier}"].scalar(nbytes / self.n_stacks)
        k = self.n_stacks * scale * g
        vec[o:o + len(STACK_ACTIONS)] += a * k
        if write:  # the stream's read bits were written
            r = a[_READ] * k
            vec[o + _READ] -= r
            vec[o + _WRITE] += r
        return t_ns * 1e-9

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
        ar = ops.layer["comm_bytes"][self._allreduce_rows]
        emb, lmh = ops.step[0], ops.step[1]
        alg = self.options.allreduce
        allreduce_s = (float(np.sum(allreduce_time_s(lk, ar, tp, alg))) * L
                       + float(allreduce_time_s(lk, emb["comm_bytes"], tp, alg)))
        link_bytes = (float(np.sum(allreduce_link_bytes(ar, tp, alg, lk))) * L
                      + float(allreduce_link_bytes(emb["comm_bytes"], tp, alg, lk)))
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
        if kv is not None:
            kv.begin_step()
        view = kv.view(np.asarray(request_ids)) if kv is not None else None
        if self.options.overlap == "sub_batch" and len(new_tokens) >= 2:
            t, parts, vec, att, att_pim = self._sub_batched(new_tokens, context_tokens, emits, kv_blocks_in_use, view)
        else:
            t, parts, vec, att, att_pim = self._step(new_tokens, context_tokens, emits, kv_blocks_in_use, view)
        mig_s = 0.0
        if kv is not None:
            mig = kv.take_migrations()
            if mig.any():
                mig_s = self._migration_s(mig, vec)
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
        for u in np.flatnonzero(mig.sum(axis=0)).tolist():
            t = 0.0
            for kind, promote in ((DEMOTE, False), (PROMOTE, True)):
                n = int(mig[kind, u])
                if n:
                    t_ns, a = self._lookups[self.dma_op(promote).op_id].scalar(n * per_block)
                    t += t_ns * 1e-9
                    vec[o:o + len(STACK_ACTIONS)] += a * (spu * g)
            n = int(mig[REPLICATE, u])
            if n:
                b = n * self.block_bytes
                t += self._stream1(b * self.n_stacks / spu, "pim", vec, 1.0)  # read on the master's stacks
                t += self._stream1(b * self.n_stacks / spu, "pim", vec, 1.0, write=True)
                vec[action_slot("gpu", "l2_bytes")] += 2 * b * g
            worst = max(worst, t)
        return worst if self.kv_policy.migration_timing == "serial" else 0.0

    def _sub_batched(self, new_tokens, context_tokens, emits, kv_blocks_in_use: int, view=None):
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
        halves = [self._step(new[sel], ctx[sel], em[sel], kv_blocks_in_use,
                             None if view is None else tuple(v[sel] for v in view))
                  for sel in (slice(0, None, 2), slice(1, None, 2))]
        (ta, pa, va, aa, apa), (tb, pb, vb, ab, apb) = halves
        g = [x[0] + x[1] + x[4] + x[5] for x in (pa, pb)]
        q = [x[2] + x[3] for x in (pa, pb)]
        t = max(g[0] + q[0], g[1] + q[1], g[0] + g[1], q[0] + q[1])
        k = t / (ta + tb) if ta + tb > 0 else 0.0
        parts = tuple((x + y) * k for x, y in zip(pa, pb))
        return t, parts, va + vb, aa + ab, apa + apb

    def _step(self, new_tokens, context_tokens, emits, kv_blocks_in_use: int, view=None):
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
        ratio = self.capacity_ratio
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
            qo, kv_new = n_dec * self.qo_tok_bytes, n_wr * self.kv_tok_bytes
            if self.attacc:  # q and the new K/V to the device, the outputs back
                plk = self.system.pim_link
                link_s = (float(transfer_time_s(plk, qo / 2 + kv_new)) + float(transfer_time_s(plk, qo / 2))) * L
                vec[action_slot("pim_link", "link_bytes")] += (qo + kv_new) * L * g
                vec[pim_o:pim_o + len(STACK_ACTIONS)] += (kv_new * 8 * L * g) * _GPU_WR
            else:  # through the stack's channels into / out of the PIM SID
                attn_pim_s += self._stream1(qo + kv_new, "pim", vec, L, write=True) * L
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
            t_m = 0.0
            pim_name = self.pim_tier.name if self.pim_tier is not None else None
            if from_pim > 0:
                if pim_name == "pim_device":  # AttAcc: cached context fetched from the PIM device over its link
                    t_m += float(transfer_time_s(self.system.pim_link, from_pim))
                    vec[action_slot("pim_link", "link_bytes")] += from_pim * L * g
                    vec[pim_o:pim_o + len(STACK_ACTIONS)] += (from_pim * 8 * L * g) * _GPU_RD
                else:
                    t_m += self._stream1(from_pim, "pim", vec, L)
            if from_cap > 0:
                t_m += self._stream1(from_cap * ratio, self.weight_tier, vec, L)
            if new_pim > 0:  # chunk K/V written where their sequence's newest block is
                if pim_name == "pim_device":
                    t_m += float(transfer_time_s(self.system.pim_link, new_pim))
                    vec[action_slot("pim_link", "link_bytes")] += new_pim * L * g
                    vec[pim_o:pim_o + len(STACK_ACTIONS)] += (new_pim * 8 * L * g) * _GPU_WR
                else:
                    t_m += self._stream1(new_pim, "pim", vec, L, write=True)
            if new_cap > 0:  # quantized inline by the base die on its way into the capacity tier
                t_m += self._stream1(new_cap * ratio, self.weight_tier, vec, L, write=True)
            t_m += self._stream1(qo, self.weight_tier, vec, L)
            t_c = flops / (self._eta_attn * self._peak_a)
            attn_gpu_s = (self._launch_s + max(t_c, t_m)) * L
            vec[action_slot("gpu", f"flops_{self.a_dtype}")] += flops * L * g
            vec[action_slot("gpu", "l2_bytes")] += (from_pim + from_cap * ratio + new_pim + new_cap * ratio + qo) * L * g
        parts = (gemm_s, attn_gpu_s, attn_pim_s, link_s, allreduce_s, other_s + self.options.step_overhead_s)
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
            row = (self.last_gathers, m[0].sum(), m[1].sum(), m[2].sum(), int(kv.pim_used[:kv.U].sum()) - kv.replica_slots,
                   kv.cap_used, kv.replica_slots)
        self.records.add(parts, vec, att, att_pim, int(np.count_nonzero(batch.new_tokens == 1)), row)
        return t
