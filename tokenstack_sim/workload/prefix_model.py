"""A prefix-sharing model for traces that record none (Azure, BurstGPT, synthetic lengths).

Each request's prompt is laid out in ``block_tokens``-token blocks, each named by an integer block id
that works as a chained hash (equal ids at block j mean equal prompts up to block j, as with Mooncake's
``hash_ids``). Ids come from three sources, in order:
1. a **common prefix** of ``common_prefix_blocks`` blocks that every request carries (a platform-wide
   system prompt; Mooncake conv: block 0 appears in every request);
2. optionally one of ``system_prompts`` application prompts of ``system_prompt_blocks`` blocks, picked
   with Zipf(``system_prompt_zipf``) popularity per session;
3. **multi-turn sessions**: with probability ``followup_prob`` a request is the next turn of the request
   that arrived a think time earlier (lognormal gap, median ``turn_gap_median_s``, log-sd
   ``turn_gap_sigma``; of ``parent_candidates`` such draws it continues the longest earlier request its own
   prompt can contain); it reuses the first ``parent_share_frac`` of its parent's full blocks (capped by
   its own full blocks), inherits its session and system prompt, and records it as ``parent_id``.
Remaining blocks are new. Only full blocks are ever shared; a partial last block is always new.

The defaults are measured from the Mooncake FAST'25 conversation trace by this project's reader (see
``MOONCAKE_CONV``), except ``followup_prob``, which is calibrated so that, applied to the Mooncake
lengths and arrivals, the model reproduces its 37.4% token prefix-hit. The lengths stay those of the trace, so a follow-up is not forced to be longer than its
parent, which is the main thing the model leaves out (along with edits inside a prompt); it also
shares fewer distinct blocks than Mooncake does (~10% of unique blocks reused vs 24%), because its
sharing is concentrated in session chains.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.stats import prefix_hit
from tokenstack_sim.workload.kernels import assign_block_ids
from tokenstack_sim.workload.table import NO_ID, RequestTable, blocks_needed


@dataclass(frozen=True)
class PrefixModel:
    block_tokens: int = 512  # Mooncake hashes 512-token blocks (traces README)
    common_prefix_blocks: int = 1  # workloads.md: "Block 0 appears in all requests"
    system_prompts: int = 0  # Mooncake conv shows no second shared layer: top 2-block prefix in 43 of 12,031 requests
    system_prompt_blocks: int = 2
    system_prompt_zipf: float = 1.0
    # Mooncake conv: 38.7% of requests share > 1 leading block with an earlier one; lengths here are the
    # trace's own rather than grown from the parent, so the probability is calibrated instead
    # (`calibrate_followup_prob` on the Mooncake conv trace, seeds 0-2: 0.662-0.668) to give its 37.4% hit.
    followup_prob: float = 0.67
    turn_gap_median_s: float = 123.0  # Mooncake conv: gap to that earlier request, median 123 s
    turn_gap_sigma: float = 0.95  # ... p10 42 s, p90 483 s: ln(483 / 42) / (2 * 1.2816)
    parent_share_frac: float = 0.92  # ... median share of the earlier request's blocks reused: 0.92
    parent_candidates: int = 8  # think-time samples a follow-up picks its parent from (model choice)

    def check(self, source: str | None = None, where: str = "prefix") -> None:
        def need(ok: bool, key: str, text: str) -> None:
            if not ok:
                raise InputError(f"{text}, got {getattr(self, key)!r}", source=source, where=f"{where}.{key}")

        need(self.block_tokens >= 1, "block_tokens", "expected >= 1")
        need(self.common_prefix_blocks >= 0, "common_prefix_blocks", "expected >= 0")
        need(self.system_prompts >= 0, "system_prompts", "expected >= 0")
        need(self.system_prompt_blocks >= 1, "system_prompt_blocks", "expected >= 1")
        need(self.system_prompt_zipf >= 0, "system_prompt_zipf", "expected >= 0")
        need(0 <= self.followup_prob <= 1, "followup_prob", "expected a probability in [0, 1]")
        need(self.turn_gap_median_s > 0, "turn_gap_median_s", "expected > 0 s")
        need(self.turn_gap_sigma >= 0, "turn_gap_sigma", "expected >= 0")
        need(0 <= self.parent_share_frac <= 1, "parent_share_frac", "expected a fraction in [0, 1]")
        need(1 <= self.parent_candidates <= 64, "parent_candidates", "expected 1 to 64")

    def as_dict(self) -> dict:
        return asdict(self)


MOONCAKE_CONV = PrefixModel()


def _root_of(parent: np.ndarray) -> np.ndarray:
    """Session root of every request by pointer jumping (parents are earlier rows, -1 at roots)."""
    root = np.where(parent >= 0, parent, np.arange(len(parent)))
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def add_prefix_structure(table: RequestTable, model: PrefixModel, seed: int) -> RequestTable:
    """The table with hashes, sessions and parents from ``model`` (replacing any it had)."""
    model.check()
    rng = np.random.default_rng(seed)
    rows = table.rows.copy()
    n = len(rows)
    arrival_s = rows["arrival_s"]
    block = model.block_tokens
    full = rows["input_tokens"] // block
    counts = blocks_needed(rows["input_tokens"], block)

    # Sessions: a follow-up's parent is the latest request at or before (arrival - think time).
    # Each follow-up looks at `parent_candidates` earlier requests, one per sampled think time, and
    # continues the longest one its own prompt can contain (a turn's prompt holds the previous turn's).
    wants_parent = np.flatnonzero(rng.random(n) < model.followup_prob)
    k = model.parent_candidates
    m = len(wants_parent)
    gap_s = np.exp(math.log(model.turn_gap_median_s) + model.turn_gap_sigma * rng.standard_normal((k, m)))
    # int32 halves the memory traffic of these k x m arrays (row counts stay far below 2**31).
    candidate = np.searchsorted(arrival_s, arrival_s[wants_parent] - gap_s, side="right").astype(np.int32) - 1
    np.minimum(candidate, (wants_parent - 1).astype(np.int32), out=candidate)
    full32 = full.astype(np.int32)
    exists = candidate >= 0
    cand_full = np.where(exists, full32[np.maximum(candidate, 0)], -1)
    fits = exists & (cand_full <= full32[wants_parent])
    best = np.argmax(np.where(fits, cand_full, -1), axis=0)
    none_fit = ~fits.any(axis=0)
    # With no candidate short enough, take the shortest one: the follow-up then reuses what fits.
    shortest = np.argmin(np.where(exists, cand_full, np.iinfo(np.int32).max), axis=0)
    choice = np.where(none_fit, shortest, best)
    parent = np.full(n, NO_ID, dtype=np.int64)
    parent[wants_parent] = candidate[choice, np.arange(m)]
    is_followup = parent >= 0  # the first requests may find no earlier one
    shared = np.zeros(n, dtype=np.int64)
    shared[is_followup] = np.minimum(
        np.floor(model.parent_share_frac * full[parent[is_followup]]).astype(np.int64), full[is_followup]
    )
    root = _root_of(parent)

    # System prompts are drawn per session and inherited by its turns.
    system_len = np.full(n, model.common_prefix_blocks, dtype=np.int64)
    system_id = np.zeros(n, dtype=np.int64)
    if model.system_prompts > 0:
        weights = 1.0 / np.arange(1, model.system_prompts + 1) ** model.system_prompt_zipf
        system_id = rng.choice(model.system_prompts, size=n, p=weights / weights.sum())[root]
        system_len += model.system_prompt_blocks

    # Block ids, like Mooncake's hash_ids: the common prefix takes ids 0..C-1, system prompt k its own
    # range after that, and every other block the id of the block that first held it (its owner's flat
    # position, offset past the reserved range). Only the leading `lead` blocks of a request can be
    # anything but new, so only they are resolved; the rest keep their own flat position.
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    common_blocks = model.common_prefix_blocks
    reserved = common_blocks + model.system_prompts * model.system_prompt_blocks
    system_blocks = np.minimum(system_len, full)
    hashes = np.empty(offsets[-1], dtype=np.uint64)
    assign_block_ids(parent, shared, offsets, system_blocks, system_id, common_blocks, model.system_prompt_blocks,
                     reserved, hashes)

    rows["parent_id"] = parent
    rows["session_id"] = np.unique(root, return_inverse=True)[1]
    if model.system_prompts > 0:
        rows["app_id"] = system_id
    meta = dict(table.meta, prefix_model=model.as_dict(), prefix_seed=seed)
    return RequestTable(rows, offsets, hashes, block, meta)


def calibrate_followup_prob(table: RequestTable, target_hit_frac: float, model: PrefixModel, seed: int) -> PrefixModel:
    """``model`` with the follow-up probability that gives ``target_hit_frac`` token hit on ``table``.

    Bisection on a fixed seed (hit grows with the probability; 14 steps resolve it to ~1e-4)."""
    def hit(p: float) -> float:
        return prefix_hit(add_prefix_structure(table, replace(model, followup_prob=p), seed))[1].token_hit_frac

    lo, hi = 0.0, 1.0
    if target_hit_frac >= hit(hi):
        return replace(model, followup_prob=1.0)
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        if hit(mid) < target_hit_frac:
            lo = mid
        else:
            hi = mid
    return replace(model, followup_prob=round(0.5 * (lo + hi), 4))
