"""The vLLM-like scheduler for agent workloads, and the blocks an agent runtime holds outside requests.

`AgentScheduler` is `VllmScheduler` (unchanged policy) whose block hashes come from the agent DAG's
segments (`workload/agent_apps.py`): a call's prompt *and output* blocks carry the hashes its successors'
prompts start with, so a successor hits its predecessor's output KV when it is still cached (a plain
trace's hashes stop at the prompt: its decode blocks are unique per request).

`Pins` holds blocks on behalf of a *finished* call (its owner): the KV of an agent stalled on a tool
call, or blocks uploaded for a call about to run. Pinned blocks have a reference in the pool (they are
neither free nor evictable) and the owner as a holder in `TieredKv` (a finished request runs no more, so
its counters never reach a batch; `TieredKv.released` lets go of an owner's whole set at once, so a
set is released whole). Blocks allocated for an upload carry no hash until the copy lands (`land`).
`cached_prefix` walks the pool's hash map without counting a prefix-cache query.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tokenstack_sim.runtime.params import SchedulerParams
from tokenstack_sim.runtime.scheduler import VllmScheduler


class DagHashes:
    """Block hashes of every request's full sequence (prompt + output) from the DAG's segments; the
    `RequestHashes` interface (`at`, `first`)."""

    def __init__(self, dag, block_size: int, output_tokens: np.ndarray, fallback):
        self.offsets, self.flat = dag.hashes(block_size, output_tokens)
        self.counts = np.diff(self.offsets)
        self.fallback = fallback
        self.block_size = block_size

    def at(self, reqs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        reqs = np.asarray(reqs, np.int64)
        idx = np.asarray(idx, np.int64)
        inside = idx < self.counts[reqs]
        if inside.all():
            return self.flat[self.offsets[reqs] + idx]
        out = self.fallback.at(reqs, idx)
        out[inside] = self.flat[self.offsets[reqs[inside]] + idx[inside]]
        return out

    def first(self, r: int, count: int) -> list[int]:
        if count <= 0:
            return []
        if count <= self.counts[r]:
            return self.flat[self.offsets[r]:self.offsets[r] + count].tolist()
        return self.at(np.full(count, r), np.arange(count)).tolist()

    def seq(self, r: int) -> np.ndarray:
        """All block hashes of request r's sequence (the last block may be partial)."""
        return self.flat[self.offsets[r]:self.offsets[r + 1]]


class AgentScheduler(VllmScheduler):
    """`VllmScheduler` with DAG hashes (module docstring)."""

    def __init__(self, table, params: SchedulerParams):
        dag = getattr(table, "dag", None)
        segmented = dag is not None and dag.seg_ids is not None
        # the base class hashes a segmented table's prompts at the table's block; build it without them (any
        # block size works) and put the DAG's hashes in place
        base = dataclasses.replace(table, prefix_offsets=None, prefix_hashes=None, hash_block_tokens=0) \
            if segmented else table
        super().__init__(base, params)
        self.table = table
        if segmented and self.hashes is not None:
            self.hashes = DagHashes(dag, params.block_size, self.output_tokens, self.hashes)


def cached_prefix(pool, hashes, limit: int | None = None) -> list[int]:
    """Blocks of the longest cached prefix of `hashes` (at most `limit`), without counting a query."""
    get = pool._cached.get  # read only: BlockPool's hash -> block map
    if isinstance(hashes, np.ndarray):
        hashes = hashes.tolist()
    out = []
    for h in (hashes if limit is None or limit >= len(hashes) else hashes[:max(limit, 0)]):
        b = get(h)
        if b is None:
            break
        out.append(b)
    return out


class Pins:
    """Blocks held for finished calls (module docstring). One set per owner, released whole."""

    def __init__(self, sched, kv=None):
        self.sched = sched
        self.pool = sched.pool
        self.kv = kv
        self.sets: dict[int, list[int]] = {}
        self._members: dict[int, set] = {}
        self.count: dict[int, int] = {}  # block -> pins on it (across owners)
        self._unlanded: dict[int, list[tuple[int, int]]] = {}  # owner -> (block, hash) waiting for a copy
        self.version = 0  # bumped on every change (callers cache what they derive from the pins)
        self._arrays_version = -1  # `pinned_only`'s arrays are of this version

    def __contains__(self, owner: int) -> bool:
        return owner in self.sets

    def blocks(self, owner: int) -> list[int]:
        return self.sets.get(owner, [])

    @property
    def total(self) -> int:
        return len(self.count)

    def _add(self, owner: int, blocks: list[int]) -> None:
        s = self.sets.setdefault(owner, [])
        m = self._members.setdefault(owner, set())
        s.extend(blocks)
        m.update(blocks)
        for b in blocks:
            self.count[b] = self.count.get(b, 0) + 1
        self.version += 1

    def pin_cached(self, owner: int, hashes, limit: int | None = None) -> int:
        """Pin the cached prefix of `hashes` for `owner` (blocks it already holds are kept once); returns
        how many leading hashes are cached (pinned now or before)."""
        blocks = cached_prefix(self.pool, hashes, limit)
        m = self._members.get(owner, ())
        new = [b for b in blocks if b not in m]
        if new:
            arr = np.asarray(new, np.int32)
            self.pool.touch(arr)
            if self.kv is not None:
                self.kv.attached(owner, arr)
            self._add(owner, new)
        return len(blocks)

    def allocate(self, owner: int, hashes: list[int]) -> np.ndarray:
        """New blocks for `hashes` (an upload); they get their hashes in `land`. The caller checks that
        the pool has that many free blocks."""
        n = len(hashes)
        blocks = self.pool.allocate(n)
        if n:
            if self.kv is not None:
                self.kv.allocated(np.full(n, owner, np.int64), blocks)
            bl = blocks.tolist()
            self._add(owner, bl)
            self._unlanded.setdefault(owner, []).extend(zip(bl, hashes))
        return blocks

    def land(self, owner: int, only=None) -> list[int]:
        """The owner's uploaded blocks (those of hashes in `only`, default all) become hittable (their
        copies landed); returns their hashes."""
        items = self._unlanded.pop(owner, [])
        if only is not None:
            keep = [x for x in items if x[1] not in only]
            items = [x for x in items if x[1] in only]
            if keep:
                self._unlanded[owner] = keep
        if items:
            blocks = np.asarray([b for b, _ in items], np.int32)
            hashes = np.asarray([h for _, h in items], np.uint64)
            self.pool.cache(blocks, hashes)
        return [h for _, h in items]

    def release(self, owner: int) -> int:
        """Let go of the owner's set (uploads not landed are dropped); returns its size."""
        blocks = self.sets.pop(owner, None)
        self._members.pop(owner, None)
        self._unlanded.pop(owner, None)
        if not blocks:
            return 0
        arr = np.asarray(blocks, np.int32)
        if self.kv is not None:
            self.kv.released(owner, arr)
        self.pool.free(arr)
        for b in blocks:
            c = self.count[b] - 1
            if c:
                self.count[b] = c
            else:
                del self.count[b]
        self.version += 1
        return len(blocks)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The pinned blocks and their pin counts, gathered once per change of the pins (`version`)."""
        if self._arrays_version != self.version:
            self._blocks_arr = np.fromiter(self.count.keys(), np.int64, len(self.count))
            self._counts_arr = np.fromiter(self.count.values(), np.int64, len(self.count))
            self._arrays_version = self.version
        return self._blocks_arr, self._counts_arr

    def pinned_only(self, *others: "Pins") -> int:
        """Pinned blocks that no running request holds (idle memory), over these pins and `others` (a
        block pinned by several sets counts once: idle when every reference on it is a pin)."""
        sets = [x for x in (self,) + others if x.count]
        if not sets:
            return 0
        if len(sets) == 1:
            b, c = sets[0].arrays()
            return int(np.count_nonzero(self.pool.ref_cnt[b] == c))
        b = np.concatenate([x.arrays()[0] for x in sets])
        c = np.concatenate([x.arrays()[1] for x in sets])
        ub, inv = np.unique(b, return_inverse=True)
        total = np.bincount(inv, weights=c).astype(np.int64)
        return int(np.count_nonzero(self.pool.ref_cnt[ub] == total))