"""Prefix caching in the serving engine with a bounded KV cache, against a plain-Python LRU reference.

The reference (`LruBlockCache`) is written here from vLLM V1's block-pool rules (serving.md §2.3), not
from kv/block_pool.py: a block is cached under its chained hash once full; a lookup walks a prompt's
full-block hashes until the first miss, capped at num_tokens - 1 tokens; hit blocks are taken off the
free queue; new blocks come from the least recently freed end of the free queue and lose their hash
there; a finished request's blocks go back to the free queue in reverse order, hashes kept. Block
identity comes straight from the Mooncake JSONL: block j of a prompt is (hash_ids[j // 32], j % 32) when
the 16-token block is full, and unique to the request otherwise (partial prompt block, generated tokens).

Exact agreement needs the reference to see the same sequence of pool operations as the scheduler. With
requests served one at a time (arrivals spaced so each finishes before the next arrives, asserted) a plain
LRU is exact: a request's lookup, its allocations across prefill chunks and decode steps, and its free
happen in one block of time with nothing else touching the pool. Under concurrency the reference would
have to model the whole scheduler (chunking, admission, preemption), so the concurrent test checks a
bound instead: a request admitted once can hit at most the longest prefix of its prompt that some earlier
request's prompt holds (an unbounded cache of everything seen before it).
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest

from tokenstack_sim.runtime import scheduler as scheduler_mod
from tokenstack_sim.sim.engine import RunSpec, prepare, run_prepared
from tokenstack_sim.sim.step_cost import EngineOptions
from tokenstack_sim.workload.readers import read_trace
from tokenstack_sim.workload.table import RequestTable, empty_rows

from _traces import real_trace  # tests/_traces.py

pytestmark = pytest.mark.unit

MODEL = "llama-3.1-8b"
ROOFLINE = EngineOptions(memory_timing="roofline")
BS = 16  # the engine's default block size
TRACE_BLOCK = 512  # Mooncake hashes 512-token blocks
MOONCAKE = "mooncake_fast25/conversation_trace.jsonl"


class LruBlockCache:
    """vLLM-V1 block pool with prefix caching, in plain Python (module docstring)."""

    def __init__(self, num_blocks: int):
        self.free = OrderedDict.fromkeys(range(num_blocks))  # first = least recently freed
        self.ref = [0] * num_blocks
        self.key_of: list = [None] * num_blocks
        self.blocks_of: dict = {}  # key -> blocks carrying it, oldest first
        self.evictions = 0  # blocks that lost a cached key on reuse

    def lookup(self, keys) -> list[int]:
        hit = []
        for k in keys:
            carriers = self.blocks_of.get(k)
            if not carriers:
                break
            hit.append(carriers[0])
        return hit

    def touch(self, blocks) -> None:
        for b in blocks:
            if self.ref[b] == 0:
                del self.free[b]
            self.ref[b] += 1

    def allocate(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            b, _ = self.free.popitem(last=False)
            k = self.key_of[b]
            if k is not None:
                carriers = self.blocks_of[k]
                carriers.remove(b)
                if not carriers:
                    del self.blocks_of[k]
                self.key_of[b] = None
                self.evictions += 1
            self.ref[b] = 1
            out.append(b)
        return out

    def cache(self, block: int, key) -> None:
        self.key_of[block] = key
        self.blocks_of.setdefault(key, []).append(block)

    def release(self, blocks) -> None:
        for b in reversed(blocks):
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.free[b] = None

    @property
    def in_use(self) -> int:
        return len(self.ref) - len(self.free)


def block_key(hash_ids, prompt: int, request: int, j: int, trace_block: int = TRACE_BLOCK):
    """Identity of 16-token block j of a request (module docstring)."""
    if j < prompt // BS:
        return hash_ids[j * BS // trace_block], j % (trace_block // BS)
    return "own", request, j


def reference_sequential(raw: list[dict], outputs: np.ndarray, num_blocks: int, trace_block: int = TRACE_BLOCK):
    """Prefix hit tokens per request, served one at a time on an LRU cache of `num_blocks`."""
    pool = LruBlockCache(num_blocks)
    hits = np.zeros(len(raw), np.int64)
    for r, row in enumerate(raw):
        prompt, ids, out = row["input_length"], row["hash_ids"], int(outputs[r])
        computed = prompt + out - 1 if out > 0 else prompt  # the last sampled token is never fed back
        hit = pool.lookup([block_key(ids, prompt, r, j, trace_block) for j in range((prompt - 1) // BS)])
        pool.touch(hit)
        table = hit + pool.allocate(-(-computed // BS) - len(hit))
        for j in range(len(hit), computed // BS):
            pool.cache(table[j], block_key(ids, prompt, r, j, trace_block))
        pool.release(table)
        hits[r] = len(hit) * BS
    assert pool.in_use == 0
    return hits, pool.evictions


def unbounded_bound(raw: list[dict]) -> np.ndarray:
    """Per request: the longest cached prefix an unbounded cache of all earlier prompts would give."""
    seen: set = set()
    out = np.zeros(len(raw), np.int64)
    for r, row in enumerate(raw):
        prompt, ids = row["input_length"], row["hash_ids"]
        keys = [block_key(ids, prompt, r, j) for j in range(prompt // BS)]
        n = 0
        for k in keys[: (prompt - 1) // BS]:
            if k not in seen:
                break
            n += 1
        out[r] = n * BS
        seen.update(keys)
    return out


class _Recording(scheduler_mod.VllmScheduler):
    last = None

    def __init__(self, table, params):
        super().__init__(table, params)
        _Recording.last = self


def _mooncake(n: int):
    path = real_trace(MOONCAKE)
    with open(path) as fh:
        raw = [json.loads(line) for _, line in zip(range(n), fh)]
    table = read_trace(path).take(np.arange(n))
    # the reader keeps the file's order here (timestamps do not decrease), so rows match the raw lines
    np.testing.assert_array_equal(table.rows["input_tokens"], [x["input_length"] for x in raw])
    np.testing.assert_array_equal(table.rows["arrival_s"], [x["timestamp"] / 1000 for x in raw])
    return raw, table


def test_bounded_cache_matches_lru_reference_on_mooncake_sequential(monkeypatch):
    """First 1,000 Mooncake conversation requests served one at a time (arrivals 100 s apart, outputs cut
    to 8 tokens to keep the run short) on a 150,000-block pool (2.4 M tokens: ~20% of the blocks these
    requests fill, so blocks are reused and cached prefixes evicted): prefix hit tokens of every request
    and the number of evicted cached blocks equal the LRU reference's."""
    n, num_blocks = 1000, 150_000
    raw, table = _mooncake(n)
    table.rows["arrival_s"] = np.arange(n) * 100.0
    table.rows["output_tokens"] = np.minimum(table.rows["output_tokens"], 8)
    monkeypatch.setitem(scheduler_mod.SCHEDULERS, "vllm", _Recording)
    prep = prepare("gpu-hbm4", MODEL, options=ROOFLINE, kv_blocks=num_blocks)
    res = run_prepared(prep, RunSpec("mooncake", warmup_frac=0.0, drain_frac=0.0, kv_blocks=num_blocks), table=table)
    req = res.requests
    assert np.all(req["finish_s"][:-1] < req["arrival_s"][1:]), "requests must not overlap (the reference's premise)"
    assert res.summary["preemptions"] == 0

    want, evictions = reference_sequential(raw, table.rows["output_tokens"], num_blocks)
    bad = np.flatnonzero(req["prefix_hit_tokens"] != want)
    assert len(bad) == 0, (f"{len(bad)} requests differ, first {bad[:5].tolist()}: engine "
                           f"{req['prefix_hit_tokens'][bad[:5]].tolist()} reference {want[bad[:5]].tolist()}")
    pool = _Recording.last.pool
    assert pool.evictions == evictions
    assert pool.num_in_use == 0
    # the setting is not trivial: the bound cache hits, but less than an unbounded one would
    unbounded = unbounded_bound(raw)
    assert 0 < want.sum() < 0.75 * unbounded.sum()
    assert evictions > num_blocks
    assert res.summary["prefix_hit_rate"] == pytest.approx(want.sum() / table.rows["input_tokens"].sum())


def test_bounded_cache_under_concurrency_never_beats_an_unbounded_one():
    """The same requests at 10x their rate (outputs cut to 16), a 20,000-block pool: requests overlap.
    A request admitted once hits no more than an unbounded cache of the earlier prompts, and the pool
    ends empty."""
    n, num_blocks = 1000, 20_000
    raw, table = _mooncake(n)
    table.rows["arrival_s"] *= 0.1
    table.rows["output_tokens"] = np.minimum(table.rows["output_tokens"], 16)
    prep = prepare("gpu-hbm4", MODEL, options=ROOFLINE, kv_blocks=num_blocks)
    res = run_prepared(prep, RunSpec("mooncake", warmup_frac=0.0, drain_frac=0.0, kv_blocks=num_blocks), table=table)
    req = res.requests
    overlap = np.count_nonzero(req["arrival_s"][1:] < req["finish_s"][:-1])
    assert overlap > n // 10, "the point is concurrency"
    bound = unbounded_bound(raw)
    once = req["preemptions"] == 0
    assert once.mean() > 0.9
    worse = np.flatnonzero(once & (req["prefix_hit_tokens"] > bound))
    assert len(worse) == 0, worse[:5]
    assert np.all(req["prefix_hit_tokens"] % BS == 0)
    assert np.all(req["prefix_hit_tokens"][once] <= (req["input_tokens"][once] - 1) // BS * BS)
    assert 0 < req["prefix_hit_tokens"].sum() < bound.sum()


def _hashed_table(prompts, hashes, arrivals) -> RequestTable:
    rows = empty_rows(len(prompts))
    rows["input_tokens"] = prompts
    rows["output_tokens"] = 2
    rows["arrival_s"] = arrivals
    offsets = np.zeros(len(prompts) + 1, np.int64)
    np.cumsum([len(h) for h in hashes], out=offsets[1:])
    flat = np.array([x for h in hashes for x in h], np.uint64)
    return RequestTable(rows, offsets, flat, BS)


def test_prefix_hits_by_hand():
    """16-token trace blocks, one request at a time. The hit is capped at num_tokens - 1 (a prompt fully
    cached still computes its last block), the walk stops at the first miss, and a pool too small to keep
    an old prefix evicts it (LRU)."""
    prompts = [32, 32, 48, 40, 33, 32]
    hashes = [[1, 2], [1, 2], [1, 2, 3], [1, 2, 9], [1, 7, 8], [5, 6]]
    table = _hashed_table(prompts, hashes, np.arange(len(prompts)) * 10.0)
    prep = prepare("gpu-hbm4", MODEL, options=ROOFLINE)
    res = run_prepared(prep, RunSpec("hand", warmup_frac=0.0, drain_frac=0.0), table=table)
    assert res.requests["prefix_hit_tokens"].tolist() == [0, 16, 32, 32, 16, 0]

    # 4 blocks: request 0 fills 3 (32 prompt + 1 fed-back token), its 2 full blocks cached. Request 1
    # [5, 6] takes the free block then the least recently freed ones — request 0's blocks go back in
    # reverse order, so its own third block, then block 1 (hash 2) — keeping hash 1 alive for request 2.
    table = _hashed_table([32, 32, 48], [[1, 2], [5, 6], [1, 2, 3]], [0.0, 10.0, 20.0])
    prep = prepare("gpu-hbm4", MODEL, options=ROOFLINE, kv_blocks=4)
    res = run_prepared(prep, RunSpec("hand", warmup_frac=0.0, drain_frac=0.0, kv_blocks=4), table=table)
    assert res.requests["prefix_hit_tokens"].tolist() == [0, 0, 16]
    raw = [{"input_length": 32, "hash_ids": [1, 2]}, {"input_length": 32, "hash_ids": [5, 6]},
           {"input_length": 48, "hash_ids": [1, 2, 3]}]
    hits, evictions = reference_sequential(raw, np.full(3, 2), 4, trace_block=BS)  # the reference agrees
    assert hits.tolist() == [0, 0, 16] and evictions == 3  # hash 2, then hashes 6 and 5
