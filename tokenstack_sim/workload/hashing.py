"""Prefix-block hashes: re-blocking a trace's hashes to the engine's KV block size, and the mixer.

Mooncake hashes one id per 512-token block; a vLLM-style engine hashes 16-token blocks. Re-blocking to
``block_tokens`` (which must divide the source block size) expands each source hash ``h`` into
``source // block_tokens`` derived hashes ``mix(h, k)`` for sub-block ``k``, keeping only as many as
``ceil(input_tokens / block_tokens)``. Because ``h`` is already chained (it names the whole prefix up to
its block), the derived hashes are chained too: two requests share sub-block ``k`` of block ``j`` exactly
when they share block ``j``.
What this leaves out: a real engine would also find the partially matching tokens *inside* a 512-token
block that two requests share only in part; the source trace does not record that, so neither can we.
"""

from __future__ import annotations

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.table import RequestTable, blocks_needed

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: a bijection on uint64 that spreads nearby ids over the whole range."""
    z = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def derive(parent_hash: np.ndarray, index: np.ndarray) -> np.ndarray:
    """A hash for item ``index`` under ``parent_hash`` (sub-block of a block, block of an owner)."""
    with np.errstate(over="ignore"):
        return mix64(np.asarray(parent_hash, dtype=np.uint64) * _GOLDEN + np.asarray(index, dtype=np.uint64))


def reblock(table: RequestTable, block_tokens: int) -> RequestTable:
    """The same table with hashes over ``block_tokens``-token blocks (see the module docstring)."""
    if not table.has_prefix:
        raise InputError("the table has no prefix hashes to re-block")
    source_tokens = table.hash_block_tokens
    if block_tokens < 1 or source_tokens % block_tokens:
        raise InputError(f"block size {block_tokens} must divide the trace's hash block of {source_tokens} tokens")
    if block_tokens == source_tokens:
        return table
    per_block = source_tokens // block_tokens
    counts = blocks_needed(table.rows["input_tokens"], block_tokens)
    offsets = np.zeros(len(table) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    sub_index = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], counts)
    source_pos = np.repeat(table.prefix_offsets[:-1], counts) + sub_index // per_block
    hashes = derive(table.prefix_hashes[source_pos], sub_index % per_block)
    meta = dict(table.meta, reblocked_from_tokens=source_tokens)
    return RequestTable(table.rows, offsets, hashes, block_tokens, meta)
