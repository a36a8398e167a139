"""LLM model configuration: the `kind = "model"` config.

A model config is the shape of a decoder-only transformer as its `config.json` (or paper) gives it:
layer count, hidden size, query and KV heads, head size, FFN width and type, vocabulary, experts, plus
the few flags that change the byte count (tied embeddings, biases, norm type, learned positions) and
the data types of weights, KV cache and activations (`--set dtype.kv=fp8`).

What it leaves out: rotary tables and other buffers that are not parameters; quantization scales (an
FP8 checkpoint's per-tensor or per-channel scales are < 0.01% of its bytes); vision or other towers;
sliding-window attention (none of the presets uses it); every parameter is stored in `dtype.weight`
(in FP8 deployments the norms, biases and router stay BF16, < 0.01% of the bytes).

The derived figures (parameter count, bytes read per step, KV bytes per token) are pure functions in
`tokenstack_sim.model.shapes`; `describe()` and `as_dict()` call them lazily, as the DRAM config's
runtime check does with `hw/`, so that this module stays importable without the model layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tokenstack_sim.config.schema import spec, to_dict
from tokenstack_sim.errors import InputError

# Bytes per element of each storage type the model layer knows.
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
DType = Literal["fp32", "bf16", "fp16", "fp8"]


@dataclass(frozen=True)
class DTypes:
    weight: DType = spec("bf16", doc="storage type of every parameter (bf16, fp16, fp8, fp32)")
    kv: DType = spec("bf16", doc="storage type of the KV cache (bf16, fp16, fp8, fp32)")
    activation: DType = spec("bf16", doc="type of activations between ops and of all-reduce buffers")

    @property
    def weight_bytes(self) -> int:
        return DTYPE_BYTES[self.weight]

    @property
    def kv_bytes(self) -> int:
        return DTYPE_BYTES[self.kv]

    @property
    def activation_bytes(self) -> int:
        return DTYPE_BYTES[self.activation]


@dataclass(frozen=True)
class ModelConfig:
    """A `kind = "model"` config file, as written."""
    schema_version: int = spec(min=1, max=1, doc="config schema version (1)")
    kind: Literal["model"] = spec(doc="'model'")
    name: str = spec(doc="preset name")
    num_layers: int = spec(min=1, max=100_000, doc="decoder layers (all identical)")
    hidden_size: int = spec(min=1, max=1 << 20, doc="model width d")
    num_attention_heads: int = spec(min=1, max=1 << 16, doc="query heads H_q")
    num_kv_heads: int = spec(min=1, max=1 << 16, doc="key/value heads H_kv (H_q for MHA, fewer for GQA)")
    head_dim: int = spec(min=1, max=1 << 16, doc="size of one head d_h")
    intermediate_size: int = spec(min=1, max=1 << 22, doc="FFN width (per expert for MoE)")
    vocab_size: int = spec(min=1, max=1 << 24, doc="vocabulary size")
    ffn: Literal["gated", "plain"] = spec(doc="'gated': 3 matrices (SwiGLU: gate, up, down; Llama, Qwen, "
                                              "Mixtral); 'plain': 2 matrices (up, down; GPT-3, OPT)")
    num_experts: int = spec(0, min=0, max=1 << 16, doc="experts per MoE layer; 0 = dense FFN")
    experts_per_token: int = spec(0, min=0, max=1 << 16, doc="experts each token is routed to (top-k); 0 if dense")
    tie_word_embeddings: bool = spec(False, doc="the LM head is the input embedding matrix")
    qkv_bias: bool = spec(False, doc="Q, K and V projections have a bias (Qwen2)")
    linear_bias: bool = spec(False, doc="every linear layer has a bias (GPT-3, OPT); implies qkv_bias")
    norm: Literal["rmsnorm", "layernorm"] = spec("rmsnorm", doc="'rmsnorm': weight only; 'layernorm': weight + bias")
    learned_positions: int = spec(0, min=0, max=1 << 24, doc="rows of a learned position-embedding table "
                                                               "(GPT-3, OPT); 0 = rotary, no table")
    dtype: DTypes = spec(default_factory=DTypes)
    description: str = spec("", doc="free text")
    source: str = spec("", doc="where the numbers come from (config.json URL or paper)")
    base: str = spec("", doc="preset this file extends")

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_kv_heads:
            raise InputError(f"num_attention_heads = {self.num_attention_heads} is not a multiple of "
                             f"num_kv_heads = {self.num_kv_heads} (each KV head serves a whole group of "
                             f"query heads)", where="num_kv_heads")
        if self.num_experts == 0 and self.experts_per_token != 0:
            raise InputError("experts_per_token must be 0 for a dense model (num_experts = 0)",
                             where="experts_per_token")
        if self.num_experts > 0 and not 1 <= self.experts_per_token <= self.num_experts:
            raise InputError(f"expected 1 to num_experts = {self.num_experts} experts per token, got "
                             f"{self.experts_per_token}", where="experts_per_token")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def gqa_group(self) -> int:
        """Query heads per KV head."""
        return self.num_attention_heads // self.num_kv_heads


@dataclass(frozen=True)
class ResolvedModel:
    """A model config after validation. Nothing here changes after resolve."""
    config: ModelConfig
    source: str

    def describe(self) -> str:
        from tokenstack_sim.model.shapes import describe_model

        return describe_model(self.config)

    def as_dict(self) -> dict:
        from tokenstack_sim.model.shapes import derived

        data = to_dict(self.config)
        data["derived"] = derived(self.config)
        return data


def from_raw(raw: dict, path) -> ResolvedModel:
    """The `kind = "model"` resolver used by the config loader."""
    from tokenstack_sim.config.schema import build

    cfg = build(ModelConfig, raw, source=str(path))
    return ResolvedModel(config=cfg, source=str(path))
