"""Derived sizes of a model: parameter counts, bytes read per step, KV bytes per token.

Pure functions of a `ModelConfig` (no state, no I/O). Conventions (they reproduce hardware.md §4 and
the `approx_params_B` column of model_shapes.csv):

- A layer holds Q, K, V, O projections, the FFN (gate + up + down for `gated`, up + down for `plain`;
  per expert for MoE, plus a d × E router), two norms (RMSNorm: d weights; LayerNorm: d weights + d
  biases), and the biases the flags name.
- Outside the layers: the input embedding (vocab × d), an optional learned position table, a final
  norm, and the LM head (vocab × d, or none when tied to the input embedding).
- Bytes read per decode step: every parameter except the tables that are only looked up (the input
  embedding when the head is untied, the position table), which hardware.md §4 leaves out ("the input
  embedding is only looked up, not streamed"). The LM head is streamed. For MoE the figure here has every
  expert touched (the many-token limit); `tokenstack_sim.model.ops` follows the routed tokens instead.
- KV cache per token: K and V for each KV head of each layer, 2 · H_kv · d_h elements per layer.

Left out: buffers that are not parameters (rotary tables), quantization scales, padding of the
vocabulary to a multiple of the tensor-parallel degree.
"""

from __future__ import annotations

from tokenstack_sim.config.model import DTYPE_BYTES, ModelConfig


def norm_params(cfg: ModelConfig) -> int:
    """Parameters of one norm (RMSNorm: weight; LayerNorm: weight and bias)."""
    return cfg.hidden_size * (2 if cfg.norm == "layernorm" else 1)


def ffn_up_cols(cfg: ModelConfig) -> int:
    """Output columns of the FFN's first GEMM (gate and up fused for `gated`)."""
    return cfg.intermediate_size * (2 if cfg.ffn == "gated" else 1)


def layer_matrices(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of one decoder layer, by matrix (unsharded; MoE FFN matrices summed over experts)."""
    d, dh, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    q_cols, kv_cols = cfg.num_attention_heads * dh, cfg.num_kv_heads * dh
    experts = max(cfg.num_experts, 1)
    out = {"q": d * q_cols, "k": d * kv_cols, "v": d * kv_cols, "o": q_cols * d}
    if cfg.ffn == "gated":
        out["gate"] = experts * d * f
    out["up"] = experts * d * f
    out["down"] = experts * f * d
    if cfg.is_moe:
        out["router"] = d * cfg.num_experts
    if cfg.qkv_bias or cfg.linear_bias:
        out["qkv_bias"] = q_cols + 2 * kv_cols
    if cfg.linear_bias:
        out["o_bias"] = d
        out["ffn_bias"] = experts * (ffn_up_cols(cfg) + d)
    out["norms"] = 2 * norm_params(cfg)
    return out


def layer_params(cfg: ModelConfig) -> int:
    return sum(layer_matrices(cfg).values())


def embedding_params(cfg: ModelConfig) -> int:
    """The input token embedding (vocab × d)."""
    return cfg.vocab_size * cfg.hidden_size


def position_params(cfg: ModelConfig) -> int:
    """A learned position table (0 for rotary models)."""
    return cfg.learned_positions * cfg.hidden_size


def lm_head_params(cfg: ModelConfig) -> int:
    """Parameters the LM head owns (0 when it is the tied input embedding)."""
    return 0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size


def total_params(cfg: ModelConfig) -> int:
    """Every parameter of the model, each counted once."""
    return (cfg.num_layers * layer_params(cfg) + embedding_params(cfg) + position_params(cfg)
            + norm_params(cfg) + lm_head_params(cfg))


def lookup_only_params(cfg: ModelConfig) -> int:
    """Parameters only looked up by token or position, never streamed whole."""
    return position_params(cfg) + (0 if cfg.tie_word_embeddings else embedding_params(cfg))


def params_read_per_step(cfg: ModelConfig) -> int:
    """Parameters streamed in one decode step with every expert touched (hardware.md §4's P_read)."""
    return total_params(cfg) - lookup_only_params(cfg)


def expert_params_per_layer(cfg: ModelConfig) -> int:
    """Parameters of ONE expert's FFN in one layer (0 for a dense model)."""
    if not cfg.is_moe:
        return 0
    m = layer_matrices(cfg)
    return (m.get("gate", 0) + m["up"] + m["down"] + m.get("ffn_bias", 0)) // cfg.num_experts


def active_params_per_token(cfg: ModelConfig) -> int:
    """Parameters one token's forward pass multiplies: P_read with k of E experts (= P_read if dense)."""
    idle = cfg.num_experts - cfg.experts_per_token if cfg.is_moe else 0
    return params_read_per_step(cfg) - cfg.num_layers * idle * expert_params_per_layer(cfg)


def kv_elements_per_token_per_layer(cfg: ModelConfig) -> int:
    """K and V of every KV head: 2 · H_kv · d_h."""
    return 2 * cfg.num_kv_heads * cfg.head_dim


def kv_elements_per_token(cfg: ModelConfig) -> int:
    return cfg.num_layers * kv_elements_per_token_per_layer(cfg)


def kv_bytes_per_token_per_layer(cfg: ModelConfig) -> int:
    return kv_elements_per_token_per_layer(cfg) * DTYPE_BYTES[cfg.dtype.kv]


def kv_bytes_per_token(cfg: ModelConfig) -> int:
    """KV-cache bytes one token occupies across all layers, in `dtype.kv`."""
    return kv_elements_per_token(cfg) * DTYPE_BYTES[cfg.dtype.kv]


def layer_weight_bytes(cfg: ModelConfig) -> dict[str, int]:
    """Bytes of one layer's weights, by matrix, in `dtype.weight` (unsharded)."""
    b = DTYPE_BYTES[cfg.dtype.weight]
    return {k: v * b for k, v in layer_matrices(cfg).items()}


def weight_bytes_total(cfg: ModelConfig) -> int:
    return total_params(cfg) * DTYPE_BYTES[cfg.dtype.weight]


def weight_bytes_read_per_step(cfg: ModelConfig) -> int:
    return params_read_per_step(cfg) * DTYPE_BYTES[cfg.dtype.weight]


def derived(cfg: ModelConfig) -> dict:
    """The derived figures, as plain data (for `tokenstack check --json`)."""
    return {
        "total_params": total_params(cfg),
        "params_read_per_step": params_read_per_step(cfg),
        "active_params_per_token": active_params_per_token(cfg),
        "layer_params": layer_params(cfg),
        "layer_weight_bytes": layer_weight_bytes(cfg),
        "weight_bytes_total": weight_bytes_total(cfg),
        "weight_bytes_read_per_step": weight_bytes_read_per_step(cfg),
        "kv_elements_per_token_per_layer": kv_elements_per_token_per_layer(cfg),
        "kv_elements_per_token": kv_elements_per_token(cfg),
        "kv_bytes_per_token": kv_bytes_per_token(cfg),
    }


def _lookup_note(cfg: ModelConfig) -> str:
    tables = [] if cfg.tie_word_embeddings else ["input embedding"]
    tables += ["position table"] if cfg.learned_positions else []
    note = " and ".join(tables) + " only looked up" if tables else "nothing left out"
    return note + ("; the tied embedding is streamed as the LM head" if cfg.tie_word_embeddings else "")


def describe_model(cfg: ModelConfig) -> str:
    """Human text for `tokenstack check MODEL`."""
    d = derived(cfg)
    lines = [f"{cfg.name}  ({cfg.kind}, schema {cfg.schema_version})"]
    if cfg.description:
        lines.append(f"  {cfg.description}")
    if cfg.source:
        lines.append(f"  source: {cfg.source}")
    moe = (f", MoE: top-{cfg.experts_per_token} of {cfg.num_experts} experts" if cfg.is_moe else ", dense")
    lines += [
        f"  {cfg.num_layers} layers, d = {cfg.hidden_size}, {cfg.num_attention_heads} query heads / "
        f"{cfg.num_kv_heads} KV heads (group {cfg.gqa_group}), d_h = {cfg.head_dim}, "
        f"vocab {cfg.vocab_size}",
        f"  FFN {cfg.ffn} ({3 if cfg.ffn == 'gated' else 2} matrices), width {cfg.intermediate_size}{moe}",
        f"  {cfg.norm}; tied embeddings: {str(cfg.tie_word_embeddings).lower()}; QKV bias: "
        f"{str(cfg.qkv_bias or cfg.linear_bias).lower()}; all-linear bias: {str(cfg.linear_bias).lower()}; "
        f"learned positions: {cfg.learned_positions or 'none (rotary)'}",
        f"  dtypes: weight {cfg.dtype.weight} ({cfg.dtype.weight_bytes} B), KV {cfg.dtype.kv} "
        f"({cfg.dtype.kv_bytes} B), activation {cfg.dtype.activation} ({cfg.dtype.activation_bytes} B)",
        f"  parameters: {d['total_params'] / 1e9:.2f} B total; {d['params_read_per_step'] / 1e9:.2f} B read "
        f"per decode step ({_lookup_note(cfg)}" + ("; every expert touched)" if cfg.is_moe else ")"),
    ]
    if cfg.is_moe:
        lines.append(f"  active per token: {d['active_params_per_token'] / 1e9:.2f} B "
                     f"({cfg.experts_per_token} of {cfg.num_experts} experts)")
    lines += [
        f"  weights: {d['weight_bytes_total'] / 1e9:.2f} GB total; {d['weight_bytes_read_per_step'] / 1e9:.2f} GB "
        f"read per decode step",
        f"  KV cache: {d['kv_elements_per_token_per_layer']:,} elements per token per layer, "
        f"{d['kv_elements_per_token']:,} per token; {d['kv_bytes_per_token']:,} bytes per token "
        f"({d['kv_bytes_per_token'] / 1024:g} KiB) in {cfg.dtype.kv}",
        "  one layer's weights (MB): " + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in d["layer_weight_bytes"].items()),
    ]
    return "\n".join(lines)
