"""Numba kernels of the KV pool: the block pool's free queue, and the PIM unit choice of TieredKv.

The free queue is a doubly linked list stored in two int32 arrays.

Nodes ``0 .. N-1`` are blocks; node ``N`` is the fake head and ``N + 1`` the fake tail (as in vLLM's
``FreeKVCacheBlockQueue``), so no operation special-cases an empty queue. A block outside the queue has
``prev == next == -1``. Each kernel does O(1) work per block it is given; none scans the pool.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def pop_head(prev, nxt, count, out):
    """Pop ``len(out)`` blocks from the head (least recently freed first) into ``out``."""
    head = prev.shape[0] - 2
    for i in range(out.shape[0]):
        b = nxt[head]
        after = nxt[b]
        nxt[head] = after
        prev[after] = head
        prev[b] = -1
        nxt[b] = -1
        out[i] = b
    count[0] -= out.shape[0]


@njit(cache=True)
def append_tail(prev, nxt, count, blocks):
    """Append ``blocks`` in the given order at the tail (most recently freed last)."""
    tail = prev.shape[0] - 1
    for i in range(blocks.shape[0]):
        b = blocks[i]
        before = prev[tail]
        nxt[before] = b
        prev[b] = before
        nxt[b] = tail
        prev[tail] = b
    count[0] += blocks.shape[0]


@njit(cache=True)
def remove(prev, nxt, count, blocks):
    """Unlink ``blocks`` (each must be in the queue) from wherever they are."""
    for i in range(blocks.shape[0]):
        b = blocks[i]
        p = prev[b]
        n = nxt[b]
        nxt[p] = n
        prev[n] = p
        prev[b] = -1
        nxt[b] = -1
    count[0] -= blocks.shape[0]


@njit(cache=True)
def most_free(P, used, reclaim, U):
    """The unit among 0 .. U-1 with the most room ``P - used + reclaim`` (free slots, and slots that hold
    only what can give them up: cached free blocks and replicas), the first on ties (numpy's argmax)."""
    best = 0
    most = P[0] - used[0] + reclaim[0]
    for u in range(1, U):
        v = P[u] - used[u] + reclaim[u]
        if v > most:
            best = u
            most = v
    return best


@njit(cache=True)
def topology_unit(r, home, width, placed, P, used, reclaim, num_tokens, U, local_tokens):
    """TieredKv's topology-aware unit for request r's next block (kv/tiered.py: `_choose_unit`, the same
    operations): a request without a home gets the unit with the most room (`most_free`) and a stripe width
    ceil(num_tokens[r] / local_tokens), at most U; block i of the request goes to unit
    (home + i mod width) mod U, or, where that unit has no room, to the unit with the most room if it
    has any."""
    h = home[r]
    if h < 0:
        h = most_free(P, used, reclaim, U)
        home[r] = h
        width[r] = min(U, max(1, -(-num_tokens[r] // local_tokens)))
    u = (h + placed[r] % width[r]) % U
    placed[r] += 1
    if used[u] - reclaim[u] < P[u]:
        return u
    v = most_free(P, used, reclaim, U)
    return v if used[v] - reclaim[v] < P[v] else u


def warmup() -> None:
    """Compile every kernel once (numba also caches them on disk)."""
    n = 2
    prev = np.full(n + 2, -1, dtype=np.int32)
    nxt = np.full(n + 2, -1, dtype=np.int32)
    nxt[n], prev[n + 1] = n + 1, n
    count = np.zeros(1, dtype=np.int64)
    blocks = np.arange(n, dtype=np.int32)
    append_tail(prev, nxt, count, blocks)
    remove(prev, nxt, count, blocks[:1])
    pop_head(prev, nxt, count, np.empty(1, dtype=np.int32))
    P = np.full(2, 2, np.int64)
    used = np.zeros(2, np.int64)
    reclaim = np.zeros(2, np.int64)
    topology_unit(0, np.full(1, -1, np.int32), np.ones(1, np.int32), np.zeros(1, np.int64), P, used, reclaim,
                  np.ones(1, np.int64), 2, 16)
    most_free(P, used, reclaim, 2)
