"""A paged KV block pool for one memory tier, with vLLM-V1 automatic prefix caching.

Models ``vllm/v1/core/block_pool.py`` as described in ../shared/reference/serving.md §2.3: a block has an
id, a reference count and (once full) a prefix hash; free blocks sit in a doubly linked LRU queue;
allocation pops the head and evicts the popped block's hash; freeing appends to the tail (the caller
passes a request's blocks and they are appended in *reverse* order, so a request's last block is evicted
first); a prefix hit "touches" blocks (ref_cnt + 1, unlinked from the free queue). Only full blocks carry
hashes. Several blocks may carry the same hash (two requests computed the same block before either was
cached); as in vLLM's ``BlockHashToBlockMap``, lookup returns one of them and each is evicted on its own.

State lives in numpy arrays (``ref_cnt``, ``block_hash``, ``has_hash``, queue links); the hash → block
map is a Python dict keyed by the hash as an int. Every operation is O(1) per block it touches.
Leaves out: the null block, KV-cache groups (hybrid models), block sizes per layer, multi-tier placement.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.kv import kernels

DEFAULT_BLOCK_SIZE = 16  # tokens per KV block; vLLM default `block_size` 16 (serving.md §2.1)


class BlockPool:
    """N blocks of ``block_size`` tokens; see the module docstring for the policy."""

    def __init__(self, num_blocks: int, block_size: int = DEFAULT_BLOCK_SIZE):
        if num_blocks < 1:
            raise InputError(f"num_kv_blocks must be >= 1, got {num_blocks}", where="num_kv_blocks")
        if block_size < 1:
            raise InputError(f"block_size must be >= 1, got {block_size}", where="block_size")
        self.num_blocks = int(num_blocks)
        self.block_size = int(block_size)
        n = self.num_blocks
        self.ref_cnt = np.zeros(n, dtype=np.int32)
        self.block_hash = np.zeros(n, dtype=np.uint64)
        self.has_hash = np.zeros(n, dtype=bool)
        # Free-queue links; nodes n and n + 1 are the fake head and tail (kernels.py).
        self._prev = np.full(n + 2, -1, dtype=np.int32)
        self._next = np.full(n + 2, -1, dtype=np.int32)
        self._next[n], self._prev[n + 1] = n + 1, n
        self._free = np.zeros(1, dtype=np.int64)
        kernels.append_tail(self._prev, self._next, self._free, np.arange(n, dtype=np.int32))
        self._cached: dict[int, int] = {}  # hash -> one block carrying it
        self._duplicates: dict[int, list[int]] = {}  # hash -> further blocks carrying it (rare)
        # Counters (tokens for hits/queries, as vLLM's PrefixCacheStats).
        self.query_tokens = 0
        self.hit_tokens = 0
        self.evictions = 0  # cached blocks whose hash was dropped on reallocation

    # ---- queries -------------------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks with ref_cnt 0 (cached or not); all of them can be allocated."""
        return int(self._free[0])

    @property
    def num_in_use(self) -> int:
        return self.num_blocks - int(self._free[0])

    @property
    def num_cached(self) -> int:
        """Blocks carrying a hash (in use or free)."""
        return len(self._cached) + sum(len(v) for v in self._duplicates.values())

    def free_order(self) -> list[int]:
        """The free queue head to tail (for tests and debugging; O(free blocks))."""
        out, b, tail = [], int(self._next[self.num_blocks]), self.num_blocks + 1
        while b != tail:
            out.append(b)
            b = int(self._next[b])
        return out

    def lookup(self, hashes: list[int], num_tokens: int) -> list[int]:
        """Blocks of the longest cached prefix: walk ``hashes`` (a request's full-block hashes, in
        order) until the first miss, capped at ``num_tokens - 1`` tokens so at least one token is
        computed (vLLM's ``max_cache_hit_length``). Counts ``num_tokens`` queried and the hit tokens;
        touches nothing (the caller touches on successful allocation)."""
        limit = min(len(hashes), (num_tokens - 1) // self.block_size)
        cached = self._cached
        hit: list[int] = []
        for j in range(limit):
            b = cached.get(hashes[j])
            if b is None:
                break
            hit.append(b)
        self.query_tokens += num_tokens
        self.hit_tokens += len(hit) * self.block_size
        return hit

    def num_evictable(self, blocks: np.ndarray) -> int:
        """How many of ``blocks`` (hit blocks about to be touched) are in the free queue now."""
        return int(np.count_nonzero(self.ref_cnt[blocks] == 0)) if len(blocks) else 0

    # ---- updates -------------------------------------------------------------------------------------
    def touch(self, blocks: np.ndarray) -> None:
        """Take a reference on hit blocks, unlinking those that were free."""
        if len(blocks) == 0:
            return
        blocks = np.asarray(blocks, dtype=np.int32)
        idle = blocks[self.ref_cnt[blocks] == 0]
        if len(idle):
            kernels.remove(self._prev, self._next, self._free, idle)
        self.ref_cnt[blocks] += 1

    def allocate(self, count: int) -> np.ndarray:
        """Pop ``count`` blocks from the free-queue head (LRU), dropping the hashes they carried."""
        if count > self._free[0]:
            raise RuntimeError(f"allocate({count}) with {int(self._free[0])} free blocks")  # caller checks
        out = np.empty(count, dtype=np.int32)
        if count == 0:
            return out
        kernels.pop_head(self._prev, self._next, self._free, out)
        self.ref_cnt[out] = 1
        stale = out[self.has_hash[out]]
        if len(stale):
            if self._duplicates:
                for b, h in zip(stale.tolist(), self.block_hash[stale].tolist()):
                    self._drop_hash(b, h)
            else:  # no hash is carried twice, so each stale hash maps to its own block
                deque(map(self._cached.__delitem__, self.block_hash[stale].tolist()), maxlen=0)
            self.has_hash[stale] = False
            self.evictions += len(stale)
        return out

    def cache(self, blocks: np.ndarray, hashes: np.ndarray) -> None:
        """Give newly full ``blocks`` their prefix ``hashes`` so later lookups can hit them."""
        if len(blocks) == 0:
            return
        self.block_hash[blocks] = hashes
        self.has_hash[blocks] = True
        cached, dups = self._cached, self._duplicates
        bl = np.asarray(blocks).tolist()
        hl = np.asarray(hashes, dtype=np.uint64).tolist()
        if cached.keys().isdisjoint(hl) and len(set(hl)) == len(hl):
            cached.update(zip(hl, bl))  # the usual case: no hash is carried twice
            return
        for b, h in zip(bl, hl):
            if h in cached:
                dups.setdefault(h, []).append(b)
            else:
                cached[h] = b

    def free(self, blocks: np.ndarray) -> None:
        """Drop one reference on each of a request's ``blocks`` (block-table order); those reaching 0
        go to the free-queue tail in reverse order, hashes kept, so the last block is evicted first."""
        if len(blocks) == 0:
            return
        rev = np.asarray(blocks, dtype=np.int32)[::-1]
        self.ref_cnt[rev] -= 1
        done = rev[self.ref_cnt[rev] == 0]
        if len(done):
            kernels.append_tail(self._prev, self._next, self._free, np.ascontiguousarray(done))

    def uncache(self, block: int) -> None:
        """Forget a free block's prefix hash (its data was dropped from the tier that held it); it stays
        in the free queue where it was. A block without a hash is left alone."""
        if self.has_hash[block]:
            if self.ref_cnt[block] != 0:
                raise RuntimeError(f"uncache({block}) of a block in use")
            self._drop_hash(block, int(self.block_hash[block]))
            self.has_hash[block] = False
            self.evictions += 1

    def _drop_hash(self, block: int, h: int) -> None:
        if self._cached.get(h) == block:
            extra = self._duplicates.get(h)
            if extra:
                self._cached[h] = extra.pop()
                if not extra:
                    del self._duplicates[h]
            else:
                del self._cached[h]
        else:
            extra = self._duplicates[h]
            extra.remove(block)
            if not extra:
                del self._duplicates[h]
