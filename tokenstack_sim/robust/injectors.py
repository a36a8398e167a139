"""Uncertainty injectors: what a perturbed run changes, as checked TOML tables (issue 12).

An injector is a table (in a robustness spec's `[[robustness.injectors]]`, or a dict in
`RunSpec.perturb`) with a `type`, a `magnitude` (0 = the nominal run, bit for bit), a time window and a
scope. Several injectors compose (each applies its own change; slow-downs multiply). Every random draw
comes from `seed` (default: the run's seed) and the injector's own `salt`, so the same seed gives the same
perturbed run.

| type                          | magnitude m                                 | window        | scope keys   |
|-------------------------------|---------------------------------------------|---------------|--------------|
| arrival_burst                 | arrival rate x (1 + m) inside the window, m >= 0 | start_s, end_s | -      |
| rate_shift                    | arrival rate x (1 + m) from start_s (to end_s), m > -1 | start_s[, end_s] | - |
| output_length_misprediction   | predicted output = true x exp(m z), z ~ N(0, 1) | arrivals in the window | agent |
| tool_time_misprediction       | predicted tool time = DAG's x exp(m z)      | apps arriving in it | agent  |
| dma_slowdown                  | base-die DMA op time x (1 + m)              | start_s, end_s | -           |
| gpu_slowdown                  | GPU peak FLOP/s / (1 + m)                   | start_s, end_s | -           |
| refresh_storm                 | tREFI and tREFIpb / (1 + m) (m = 1: JEDEC's 2x refresh above 85 C) | start_s, end_s | tier |
| pim_layer_failure             | m > 0: the PIM layers of the scoped stacks fail for good | at start_s | stack |
| stack_failure                 | m > 0: the scoped stacks fail; weights reloaded from host | at start_s | stack |

Scopes: without a scope key an injector applies to everything. `agent = k` limits a misprediction to app
k's calls (agent workloads); `stack = k` a failure to stack k of every GPU (all GPUs alike under tensor
parallelism: every block has a shard on each); `tier = "pim" | "capacity"` a refresh storm to the ops
on that tier of the stacks (TokenStack's PIM SID is the `pim` tier: the SID that runs hot). A failure
without `stack` hits ceil(m x stacks per GPU) stacks, the first ones (m = 1: all of them).

What each type perturbs, and how, is in `robust/perturb.py`. Bad input (an unknown key or type, a
magnitude out of range, a window that ends before it starts, a scope key the type does not take) is an
`InputError` naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tokenstack_sim.errors import InputError

WORKLOAD_TYPES = ("arrival_burst", "rate_shift", "output_length_misprediction", "tool_time_misprediction")
HARDWARE_TYPES = ("dma_slowdown", "gpu_slowdown", "refresh_storm")
FAILURE_TYPES = ("pim_layer_failure", "stack_failure")
TYPES = WORKLOAD_TYPES + HARDWARE_TYPES + FAILURE_TYPES
SCOPE_KEYS = {"output_length_misprediction": ("agent",), "tool_time_misprediction": ("agent",),
              "refresh_storm": ("tier",), "pim_layer_failure": ("stack",), "stack_failure": ("stack",)}
KEYS = ("type", "magnitude", "start_s", "end_s", "seed", "salt", "agent", "stack", "tier")
TIERS = ("pim", "capacity")
# [E] a misprediction's log-error sigma above 5 makes predictions e^5 = 150x off: refused as a typo
MAX_LOG_SIGMA = 5.0
# JEDEC JESD235/JESD238 (HBM): above 85 C the refresh rate doubles (tREFI halved); a storm of m = 3
# (4x refresh) is already past any extended-temperature mode [E]
MAX_REFRESH_M = 3.0


@dataclass(frozen=True)
class Injector:
    type: str
    magnitude: float
    start_s: float = 0.0
    end_s: float = math.inf
    seed: int | None = None  # None: the run's seed
    salt: int = 0  # tells apart two injectors of one type in one run
    agent: int | None = None
    stack: int | None = None
    tier: str | None = None

    @property
    def scope(self) -> str:
        """'all' or the scope key with its value ('stack=3')."""
        for k in ("agent", "stack", "tier"):
            v = getattr(self, k)
            if v is not None:
                return f"{k}={v}"
        return "all"

    @property
    def is_nominal(self) -> bool:
        return self.magnitude == 0

    def as_dict(self) -> dict:
        """The table as written back (defaults left out; JSON-safe: no inf)."""
        out = {"type": self.type, "magnitude": self.magnitude}
        if self.start_s:
            out["start_s"] = self.start_s
        if math.isfinite(self.end_s):
            out["end_s"] = self.end_s
        for k in ("seed", "agent", "stack", "tier"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.salt:
            out["salt"] = self.salt
        return out


def _num(d: dict, key: str, where: str, *, integer: bool = False):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise InputError(f"expected {'an integer' if integer else 'a number'}, got {v!r}", where=f"{where}.{key}")
    if not math.isfinite(v):
        raise InputError(f"expected a finite number, got {v!r}", where=f"{where}.{key}")
    return v


def parse_injector(table: dict, where: str = "injector") -> Injector:
    """One injector table, checked (module docstring); `where` names it in errors (`perturb[0]`)."""
    if not isinstance(table, dict):
        raise InputError(f"expected a table, got {table!r}", where=where)
    for k in table:
        if k not in KEYS:
            raise InputError(f"unknown key; valid keys: {', '.join(KEYS)}", where=f"{where}.{k}")
    t = table.get("type")
    if t not in TYPES:
        raise InputError(f"unknown injector type {t!r}; known: {', '.join(TYPES)}", where=f"{where}.type")
    if "magnitude" not in table:
        raise InputError("required key is missing (0 = nominal)", where=f"{where}.magnitude")
    m = float(_num(table, "magnitude", where))
    lo = -1.0 if t == "rate_shift" else 0.0
    if m < lo or (t == "rate_shift" and m <= -1.0):
        raise InputError(f"expected {'> -1' if t == 'rate_shift' else '>= 0'}, got {m!r}", where=f"{where}.magnitude")
    if t.endswith("misprediction") and m > MAX_LOG_SIGMA:
        raise InputError(f"expected a log-error sigma <= {MAX_LOG_SIGMA}, got {m!r}", where=f"{where}.magnitude")
    if t == "refresh_storm" and m > MAX_REFRESH_M:
        raise InputError(f"expected <= {MAX_REFRESH_M} (tREFI / {1 + MAX_REFRESH_M:g}), got {m!r}",
                         where=f"{where}.magnitude")
    if t in FAILURE_TYPES and m > 1.0:
        raise InputError(f"expected a share of the stacks in [0, 1], got {m!r}", where=f"{where}.magnitude")
    start = float(_num(table, "start_s", where)) if "start_s" in table else 0.0
    if start < 0:
        raise InputError(f"expected a time >= 0 s, got {start!r}", where=f"{where}.start_s")
    end = math.inf
    if "end_s" in table:
        if t in FAILURE_TYPES:
            raise InputError("a failure happens at start_s; it has no end_s (a stack failure lasts its weight "
                             "reload, a PIM layer failure the rest of the run)", where=f"{where}.end_s")
        end = float(_num(table, "end_s", where))
        if end <= start:
            raise InputError(f"expected end_s > start_s ({start:g}), got {end!r}", where=f"{where}.end_s")
    elif t in ("arrival_burst", "dma_slowdown", "gpu_slowdown", "refresh_storm"):
        raise InputError("required key is missing (the window's end, s)", where=f"{where}.end_s")
    kw = {}
    allowed = SCOPE_KEYS.get(t, ())
    for k in ("agent", "stack", "tier"):
        if k in table:
            if k not in allowed:
                raise InputError(f"{t} takes {' or '.join(allowed) if allowed else 'no scope key'} "
                                 "(it applies to everything)", where=f"{where}.{k}")
            if k == "tier":
                if table[k] not in TIERS:
                    raise InputError(f"expected one of {', '.join(TIERS)}, got {table[k]!r}", where=f"{where}.tier")
                kw[k] = table[k]
            else:
                v = _num(table, k, where, integer=True)
                if v < 0:
                    raise InputError(f"expected an index >= 0, got {v!r}", where=f"{where}.{k}")
                kw[k] = int(v)
    for k in ("seed", "salt"):
        if k in table:
            v = _num(table, k, where, integer=True)
            if v < 0:
                raise InputError(f"expected an integer >= 0, got {v!r}", where=f"{where}.{k}")
            kw[k] = int(v)
    return Injector(t, m, start, end, **kw)


def parse_injectors(tables, where: str = "perturb") -> list[Injector]:
    if isinstance(tables, dict):
        tables = [tables]
    if not isinstance(tables, (list, tuple)):
        raise InputError(f"expected a list of injector tables, got {tables!r}", where=where)
    return [t if isinstance(t, Injector) else parse_injector(t, f"{where}[{i}]") for i, t in enumerate(tables)]


@dataclass
class WorkLost:
    """What a perturbed run lost: KV tokens whose blocks were lost (to be recomputed), requests that lost
    their KV mid-run (they are resumed by recompute, as vLLM's preemption does: none is dropped), blocks
    lost, stall seconds (weight reloads), and PIM slots gone for good."""
    kv_tokens_lost: int = 0
    requests_interrupted: int = 0
    blocks_lost: int = 0
    reload_s: float = 0.0
    reload_bytes: float = 0.0
    pim_slots_lost: int = 0
    held_kv_lost: int = 0  # agent runs: finished calls' KV a runtime held (pinned) that had data lost
    store_blocks_lost: int = 0  # agent runs: offloaded copies in a lost capacity tier
    events: list = field(default_factory=list)  # (time s, what)
