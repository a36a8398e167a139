"""Numba kernels of the block pool's free queue: a doubly linked list stored in two int32 arrays.

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
