"""The ops of ONE serving iteration (one forward pass of a batch), per tensor-parallel shard.

Input: per sequence in the batch, `new_tokens` (a prefill chunk, or 1 for decode) and `context_tokens`
(tokens whose K/V are already in the cache before this step); the tensor-parallel degree `tp`.

Output: the per-layer dependency chain, computed once for one layer (all layers are identical; the caller
multiplies by `num_layers`, or uses `IterationOps.total`):

    qkv → attention → out_proj → allreduce_attn → [router →] ffn_up → ffn_down → allreduce_ffn

plus the once-per-step ops `embedding` (lookup) and `lm_head`. Each op has FLOPs, weight bytes read,
activation bytes, KV bytes read and written, bytes of its collective, and the GEMM shape m × n × k.

Conventions (each states what it assumes):

- Tensor parallelism as Megatron/vLLM shard it: query heads and FFN columns (per expert, for MoE) split
  by `tp`; QKV and ffn_up column-parallel, out_proj and ffn_down row-parallel, followed by an all-reduce.
  KV heads split by `tp` while `tp <= num_kv_heads`; beyond that each shard holds one KV head, replicated
  (vLLM's rule), so K/V weights and KV bytes no longer sum back over shards. Replicated on every shard:
  the norms, the router (weights and FLOPs), row-parallel output biases, the final norm and the learned
  position table — `IterationOps.replicated_weight_bytes` and `.replicated_flops` total them. The vocabulary is split by `tp` (vocab-parallel
  embedding and LM head; vocab / tp may be fractional, padding is ignored).
- Attention FLOPs = 4 · (H_q/tp) · d_h · Σ_seq new·(context + (new+1)/2): QKᵀ and PV, 2 FLOPs per
  multiply-add each; each new token attends causally to the cached context and to the chunk's tokens up
  to itself (token i of the chunk sees context + i keys). Softmax and scaling are not counted.
- KV bytes read = context tokens × 2·H_kv·d_h (the cache as it was before the step); KV bytes written =
  new tokens × the same (the chunk's K/V are stored once; attention takes them from the QKV output,
  counted as activations).
- MoE (Mixtral): each token runs the router and k of E experts (FLOPs use k). Expert weights read per
  step follow the routed tokens: with T tokens in the step, each choosing k distinct experts uniformly at
  random and independently of the others (uniform routing, an assumption; real routers are skewed,
  which touches fewer experts), the expected number of distinct experts touched is E·(1 − (1 − k/E)^T):
  k for one token, → E for many. Experts are TP-sharded (no expert parallelism).
- Activation bytes: each op reads its input activations from memory and writes its output once (no
  fusion across ops); the FFN's activation function is fused into ffn_up's epilogue (ffn_up writes
  m × f/tp). Residual adds and norms' elementwise work are not counted. MoE gather/scatter moves m·k rows.
- `comm_bytes`: for an all-reduce, the buffer each rank reduces (T × d × activation bytes; a ring moves
  2·(tp−1)/tp of it per rank); for the LM head, the logits each rank sends to the gather; for the
  embedding, its all-reduce. 0 at tp = 1. Collectives carry no FLOPs here.
- The LM head runs over the sequences that emit a token this step (default: all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokenstack_sim.config.model import DTYPE_BYTES, ModelConfig
from tokenstack_sim.errors import InputError
from tokenstack_sim.model.shapes import ffn_up_cols, norm_params

FIELDS = ("flops", "weight_bytes", "act_bytes", "kv_read_bytes", "kv_write_bytes", "comm_bytes",
          "gemm_m", "gemm_n", "gemm_k")
OP_DTYPE = np.dtype([(f, np.float64) for f in FIELDS])
_F = {name: i for i, name in enumerate(FIELDS)}
STEP_OPS = ("embedding", "lm_head")


def expected_experts_touched(tokens, num_experts: int, experts_per_token: int):
    """E·(1 − (1 − k/E)^T): expected distinct experts hit by T tokens under uniform top-k routing.

    Exact under its assumption (each token picks k distinct experts uniformly, independently of the other
    tokens): one token misses a given expert with probability 1 − k/E, all T miss it with (1 − k/E)^T,
    and the expectation sums that over the E experts. Real routers are skewed and touch fewer."""
    t = np.asarray(tokens, dtype=np.float64)
    return num_experts * (1.0 - (1.0 - experts_per_token / num_experts) ** t)


def check_tp(cfg: ModelConfig, tp: int) -> None:
    """Refuse a tensor-parallel degree the model cannot be split by (InputError naming `tp`)."""
    if not isinstance(tp, (int, np.integer)) or tp < 1:
        raise InputError(f"expected a whole number >= 1, got {tp!r}", where="tp")
    problems = []
    if cfg.num_attention_heads % tp:
        problems.append(f"num_attention_heads = {cfg.num_attention_heads}")
    if cfg.intermediate_size % tp:
        problems.append(f"intermediate_size = {cfg.intermediate_size}")
    if cfg.num_kv_heads % tp and tp % cfg.num_kv_heads:
        problems.append(f"num_kv_heads = {cfg.num_kv_heads} (nor does tp divide by it)")
    if problems:
        raise InputError(f"tp = {tp} does not divide {', '.join(problems)} of model {cfg.name!r}", where="tp")


@dataclass(frozen=True)
class IterationOps:
    """The ops of one iteration on one TP shard. Arrays are read-only views; do not modify them."""
    layer_names: tuple[str, ...]
    layer: np.ndarray             # OP_DTYPE records, one per op of ONE layer, in dependency order
    step: np.ndarray              # OP_DTYPE records for STEP_OPS (once per step)
    num_layers: int
    tp: int
    tokens: int                   # Σ new_tokens
    sequences: int
    emitting: int                 # sequences whose LM-head row is computed
    experts_touched: float        # expected distinct experts per MoE layer (0 for dense)
    replicated_weight_bytes: float  # per step, identical on every shard (sum over shards counts it tp times)
    replicated_flops: float       # per step, identical on every shard (the MoE router)
    attn_flops_per_seq: np.ndarray    # per layer, per shard
    kv_read_bytes_per_seq: np.ndarray  # per layer, per shard
    kv_write_bytes_per_seq: np.ndarray  # per layer, per shard

    def op(self, name: str) -> np.void:
        """One op's record by name (layer or step op)."""
        if name in STEP_OPS:
            return self.step[STEP_OPS.index(name)]
        return self.layer[self.layer_names.index(name)]

    def total(self, field: str) -> float:
        """A field summed over the whole step on this shard: num_layers × one layer + the step ops."""
        return float(self.num_layers * self.layer[field].sum() + self.step[field].sum())

    def totals(self) -> dict[str, float]:
        return {f: self.total(f) for f in FIELDS[:6]}


class IterationModel:
    """A model split `tp` ways, with the per-shard constants computed once; `ops()` is the hot call."""

    def __init__(self, cfg: ModelConfig, tp: int = 1):
        check_tp(cfg, tp)
        self.cfg, self.tp = cfg, int(tp)
        d, dh = cfg.hidden_size, cfg.head_dim
        self.d = d
        self.wb, self.kvb, self.ab = (DTYPE_BYTES[cfg.dtype.weight], DTYPE_BYTES[cfg.dtype.kv],
                                      DTYPE_BYTES[cfg.dtype.activation])
        self.hq = cfg.num_attention_heads // tp
        self.hkv = max(cfg.num_kv_heads // tp, 1)  # replicated, one per shard, when tp > num_kv_heads
        self.q_cols = self.hq * dh
        self.qkv_cols = (self.hq + 2 * self.hkv) * dh
        self.f_cols = cfg.intermediate_size // tp
        self.up_cols = ffn_up_cols(cfg) // tp
        self.vocab = cfg.vocab_size / tp
        self.k = cfg.experts_per_token if cfg.is_moe else 1
        norm = norm_params(cfg)
        bias = cfg.qkv_bias or cfg.linear_bias
        # Weight elements per shard, per layer. Norms ride with the op that consumes their output.
        self.qkv_w = d * self.qkv_cols + (self.qkv_cols if bias else 0) + norm
        self.o_w = self.q_cols * d + (d if cfg.linear_bias else 0)
        self.router_w = d * cfg.num_experts
        self.up_w_expert = d * self.up_cols + (self.up_cols if cfg.linear_bias else 0)
        self.down_w_expert = self.f_cols * d + (d if cfg.linear_bias else 0)
        self.kv_tok_layer_bytes = 2 * self.hkv * dh * self.kvb
        self.attn_coef = 4.0 * self.hq * dh
        self.layer_names = (("qkv", "attention", "out_proj", "allreduce_attn")
                            + (("router",) if cfg.is_moe else ()) + ("ffn_up", "ffn_down", "allreduce_ffn"))

    def ops(self, new_tokens, context_tokens, emits=None) -> IterationOps:
        """The ops of one iteration. `new_tokens`, `context_tokens`: 1-D integer arrays, one entry per
        sequence; `emits`: a boolean array (which sequences get an LM-head row), a count, or None (all)."""
        new = np.asarray(new_tokens, dtype=np.float64)
        ctx = np.asarray(context_tokens, dtype=np.float64)
        if new.ndim != 1 or new.shape != ctx.shape:
            raise ValueError(f"new_tokens and context_tokens must be 1-D of one length, got shapes "
                             f"{new.shape} and {ctx.shape}")
        if new.size and (new.min() < 0 or ctx.min() < 0):
            raise ValueError("new_tokens and context_tokens must be >= 0")
        cfg, d, wb, ab, tp = self.cfg, self.d, self.wb, self.ab, self.tp
        n_seq = new.size
        if emits is None:
            n_emit = n_seq
        elif np.ndim(emits) == 0:
            n_emit = int(emits)
        else:
            n_emit = int(np.count_nonzero(emits))
        if not 0 <= n_emit <= n_seq:
            raise ValueError(f"emits counts {n_emit} sequences of {n_seq}")
        T = float(new.sum())
        R = T * self.k  # rows through the FFN (token-expert pairs for MoE)
        comm = T * d * ab if tp > 1 else 0.0

        attn_seq = self.attn_coef * new * (ctx + (new + 1.0) * 0.5)
        kv_r_seq = ctx * self.kv_tok_layer_bytes
        kv_w_seq = new * self.kv_tok_layer_bytes

        if cfg.is_moe:
            touched = float(expected_experts_touched(T, cfg.num_experts, cfg.experts_per_token))
        else:
            touched = 1.0 if T > 0 else 0.0  # a step with no tokens reads no weights
        norm = norm_params(cfg)
        w_up = touched * self.up_w_expert + norm  # the post-attention norm rides with ffn_up
        w_down = touched * self.down_w_expert

        rows = [
            # flops, weight_bytes, act_bytes, kv_read, kv_write, comm, gemm m, n, k
            (2 * T * d * self.qkv_cols, self.qkv_w * wb, T * (d + self.qkv_cols) * ab, 0, 0, 0,
             T, self.qkv_cols, d),
            (float(attn_seq.sum()), 0, T * (self.qkv_cols + self.q_cols) * ab, float(kv_r_seq.sum()),
             float(kv_w_seq.sum()), 0, 0, 0, 0),
            (2 * T * self.q_cols * d, self.o_w * wb, T * (self.q_cols + d) * ab, 0, 0, 0, T, d, self.q_cols),
            (0, 0, 0, 0, 0, comm, 0, 0, 0),
        ]
        if cfg.is_moe:
            rows.append((2 * T * d * cfg.num_experts, self.router_w * wb, T * (d + cfg.num_experts) * ab,
                         0, 0, 0, T, cfg.num_experts, d))
        rows += [
            (2 * R * d * self.up_cols, w_up * wb, R * (d + self.f_cols) * ab, 0, 0, 0, R, self.up_cols, d),
            (2 * R * self.f_cols * d, w_down * wb, (R * self.f_cols + T * d) * ab, 0, 0, 0, R, d, self.f_cols),
            (0, 0, 0, 0, 0, comm, 0, 0, 0),
        ]
        layer = np.array(rows, dtype=np.float64)
        if T == 0:
            layer[:, _F["weight_bytes"]] = 0.0  # an empty step reads no weights
        layer = layer.view(OP_DTYPE).reshape(-1)

        pos_w = T * d if cfg.learned_positions else 0.0  # replicated table, every shard looks up all rows
        final_norm = norm if n_emit else 0
        step = np.array([
            # embedding: each token's row lives on one vocab shard (expected 1/tp of the rows per shard)
            (0, (T * d / tp + pos_w) * wb, T * d * ab, 0, 0, comm, 0, 0, 0),
            (2 * n_emit * d * self.vocab, (d * self.vocab + final_norm) * wb if n_emit else 0,
             n_emit * (d + self.vocab) * ab, 0, 0, n_emit * self.vocab * ab if tp > 1 else 0,
             n_emit, self.vocab, d),
        ], dtype=np.float64).view(OP_DTYPE).reshape(-1)

        # norms, router, and the row-parallel output biases (out_proj's, and each touched expert's down)
        repl_layer = 2 * norm + self.router_w + ((1 + touched) * d if cfg.linear_bias else 0) if T > 0 else 0
        replicated = (cfg.num_layers * repl_layer + final_norm + pos_w) * wb
        return IterationOps(self.layer_names, layer, step, cfg.num_layers, tp, int(T), n_seq, n_emit,
                            touched if cfg.is_moe else 0.0, float(replicated),
                            cfg.num_layers * 2 * T * d * cfg.num_experts, attn_seq, kv_r_seq, kv_w_seq)


def iteration_ops(cfg: ModelConfig, new_tokens, context_tokens, tp: int = 1, emits=None) -> IterationOps:
    """One-off convenience; a caller stepping many times should keep an `IterationModel`."""
    return IterationModel(cfg, tp).ops(new_tokens, context_tokens, emits)
