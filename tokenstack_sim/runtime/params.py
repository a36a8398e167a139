"""Parameters of a vLLM-V1-like continuous-batching scheduler (one frozen dataclass).

Defaults follow ../shared/reference/serving.md §2.1 (vLLM V1, >= 0.8) for an H100/H200-class GPU
served through the API server. ``num_kv_blocks`` has no default: vLLM derives it from memory left after
weights and activations, and serving.md says to take ``num_gpu_blocks`` from vLLM's log rather than
guess (LLMServingSim: a wrong block count moves TTFT by ~20%), or from the hardware model's capacity.
Build from TOML/dicts with ``tokenstack_sim.config.schema.build(SchedulerParams, raw)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenstack_sim.config.schema import spec
from tokenstack_sim.errors import InputError


@dataclass(frozen=True)
class SchedulerParams:
    num_kv_blocks: int = spec(min=1, doc="KV blocks in the pool (vLLM's num_gpu_blocks)")
    # serving.md §2.1: >= 70 GiB and not A100 (H100/H200/MI300X), API server: 8192 (LLM class: 16384).
    max_num_batched_tokens: int = spec(8192, min=1, doc="token budget per step")
    # serving.md §2.1: >= 70 GiB and not A100: 1024.
    max_num_seqs: int = spec(1024, min=1, doc="most running requests")
    # serving.md §2.1: block 16.
    block_size: int = spec(16, min=1, doc="tokens per KV block")
    # serving.md §2.1: optional; vLLM's default 0 disables it.
    long_prefill_token_threshold: int = spec(0, min=0, doc="cap on one request's prefill chunk; 0 = off")
    # serving.md §2.1: max_num_partial_prefills 1.
    max_num_partial_prefills: int = spec(1, min=1, doc="requests with a prefill in progress at once")
    # serving.md §2.1: prefix caching is on by default in V1.
    enable_prefix_caching: bool = spec(True, doc="automatic prefix caching")

    def __post_init__(self) -> None:
        for name in ("num_kv_blocks", "max_num_batched_tokens", "max_num_seqs", "block_size",
                     "max_num_partial_prefills"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"must be an integer >= 1, got {value!r}", where=name)
        if not isinstance(self.enable_prefix_caching, bool):
            raise InputError(f"must be true or false, got {self.enable_prefix_caching!r}",
                             where="enable_prefix_caching")
        t = self.long_prefill_token_threshold
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise InputError(f"must be an integer >= 0, got {t!r}", where="long_prefill_token_threshold")
