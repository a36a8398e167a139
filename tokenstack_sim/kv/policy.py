"""Parameters of KV management across tiers (one frozen dataclass), and the policy names it accepts.

What each switch does is described in `kv/tiered.py`. Defaults are the TokenStack design as
`../shared/reference/claims.md` names it (topology-aware placement, workload-aware eviction, inline
quantization during migration, bounded replication); the numbers below that no source gives are
marked [E] and are the knobs an ablation sweeps. Build from TOML or `--kv key=value` with
`tokenstack_sim.config.schema.build(KvPolicy, raw)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenstack_sim.config.schema import spec
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.stack.quantize import BITS

PLACEMENTS = ("topology-aware", "round-robin", "capacity-first", "interleaved")
EVICTIONS = ("workload-aware", "lru", "lfu", "none")
MIGRATION_TIMINGS = ("serial", "hidden")
DEMOTE_FORMATS = ("fp16", "fp8", "int8", "int4")


@dataclass(frozen=True)
class KvPolicy:
    # claims.md: TokenStack places KV topology-aware; the others are the registered alternatives.
    placement: str = spec("topology-aware", doc="PIM unit for a new block: " + " | ".join(PLACEMENTS))
    # claims.md: workload-aware eviction; "none" never migrates (blocks stay where they were written).
    eviction: str = spec("workload-aware", doc="which PIM block makes room: " + " | ".join(EVICTIONS))
    # claims.md / hardware.md §5: inline quantization during migration, INT8 or FP8 per group; "fp16" = off.
    demote_format: str = spec("int8", doc="format of KV in the capacity tier: " + " | ".join(DEMOTE_FORMATS))
    # hardware.md §5: one buffered group of 32-128 elements for group-wise scaling; 32 [E].
    group: int = spec(32, min=1, doc="elements per quantization group (one FP16 scale each)")
    # [E] topology-aware placement keeps a request of up to this many tokens (at its start) in one PIM
    # unit, and stripes a longer one over ceil(tokens / local_tokens) units: one unit's attention over
    # 2k tokens of a 70B shard is ~10 us, the order of the GPU merge kernel a split would add.
    local_tokens: int = spec(2048, min=1, doc="tokens a request keeps in one PIM unit (topology-aware)")
    promotion: bool = spec(True, doc="move hot blocks back into PIM room (free or held by cached blocks) ahead of use")
    # [E] bounds the base-die DMA work one step may queue: one full token budget's worth of blocks
    # (8192 / 16 = 512, serving.md §2.1), so a prefill chunk landing on a full PIM tier can still make
    # its room by demotion rather than by dropping prefix-cache entries.
    max_migrations_per_step: int = spec(512, min=0, doc="blocks demoted + promoted per step, per GPU shard")
    # claims.md: bounded replication; 5% of the PIM slots [E]; 0 turns replication off.
    replication_budget: float = spec(0.05, min=0.0, max=1.0, doc="share of PIM slots replicas may take")
    replication_min_refs: int = spec(2, min=2, doc="requests holding a block before it is replicated")
    # "serial": migrations add their DMA time to the step (an upper bound); "hidden": free (a lower bound).
    migration_timing: str = spec("serial", doc="how migration time meets the step: " + " | ".join(MIGRATION_TIMINGS))

    def __post_init__(self) -> None:
        for name, known in (("placement", PLACEMENTS), ("eviction", EVICTIONS),
                            ("demote_format", DEMOTE_FORMATS), ("migration_timing", MIGRATION_TIMINGS)):
            v = getattr(self, name)
            if v not in known:
                raise InputError(f"expected one of {', '.join(known)}, got {v!r}", where=f"kv.{name}")
        if self.demote_format not in BITS:
            raise InputError(f"unknown format {self.demote_format!r}", where="kv.demote_format")
        for name in ("group", "max_migrations_per_step", "replication_min_refs", "local_tokens"):
            v = getattr(self, name)
            lo = 1 if name in ("group", "local_tokens") else 0
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise InputError(f"expected an integer >= {lo}, got {v!r}", where=f"kv.{name}")
        if self.replication_min_refs < 2:
            raise InputError(f"expected an integer >= 2, got {self.replication_min_refs!r}",
                             where="kv.replication_min_refs")
        b = self.replication_budget
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not (0.0 <= b <= 1.0):
            raise InputError(f"expected a share in [0, 1], got {b!r}", where="kv.replication_budget")
        if not isinstance(self.promotion, bool):
            raise InputError(f"expected true or false, got {self.promotion!r}", where="kv.promotion")

    @property
    def quantized(self) -> bool:
        return self.demote_format not in ("fp16", "bf16")
