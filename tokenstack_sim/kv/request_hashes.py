"""The chained hash of every full KV block a request can hold: prompt blocks from the trace, the rest
unique to the request.

A trace (Mooncake) hashes 512-token blocks; the engine caches ``block_size``-token blocks (vLLM: 16).
`tokenstack_sim.workload.hashing.reblock` expands each trace hash ``h`` into ``512 / 16 = 32`` sub-block
hashes ``derive(h, k)``; since ``h`` already names the whole prefix up to its block, the sub-block hashes
are chained too. What is assumed:

- Prompt block ``j < input_tokens // block_size`` (a *full* prompt block) takes the re-blocked trace hash
  ``j``. The trace's last, partial 512-token block is hashed by the trace over its partial content, so its
  full 16-token sub-blocks are shared exactly by requests whose trace hash for that block is equal.
- Every later block (the prompt's partial last block once decode fills it, and all decode-generated
  blocks) contains tokens this request sampled, so no other request shares it: its hash is
  ``derive(tail_seed, j)`` with ``tail_seed = derive(last full prompt hash, TAG + request_id)`` —
  chained from the prompt, unique per request. A preempted request that recomputes re-hits its own
  surviving decode blocks; a later request with the same prompt prefix reuses only the prompt part.
  (A follow-up turn whose prompt contains an earlier answer shares it only through the trace's own
  hashes; the simulator cannot recover answer tokens.)
- A table without prefix hashes has no sharing: every block of request ``r`` hashes as
  ``derive(derive(TAG2, r), j)``.
- Re-blocking needs ``block_size`` to divide the trace's hash block; otherwise InputError.
Hashes are 64-bit SplitMix values; collisions (probability ~n²/2⁶⁵) are ignored.
"""

from __future__ import annotations

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.hashing import derive
from tokenstack_sim.workload.table import RequestTable

_TAIL_TAG = np.uint64(0x7A11_0000_0000_0000)  # separates tail seeds from any trace-derived hash input
_UNIQUE_TAG = np.uint64(0x0DD5_EED0_0000_0001)  # root of per-request chains when the table has no hashes


class RequestHashes:
    """Per-request block hashes for a `RequestTable` at the engine's ``block_size``."""

    def __init__(self, table: RequestTable, block_size: int):
        n = len(table)
        ids = np.arange(n, dtype=np.uint64)
        input_tokens = table.rows["input_tokens"].astype(np.int64)
        if table.has_prefix:
            if table.hash_block_tokens % block_size:
                raise InputError(
                    f"block_size {block_size} must divide the trace's hash block of "
                    f"{table.hash_block_tokens} tokens", where="block_size")
            # reblock()'s formula, evaluated on demand so memory stays O(trace hashes).
            self._per = table.hash_block_tokens // block_size
            self._offsets = table.prefix_offsets
            self._flat = table.prefix_hashes
            self.prompt_full = input_tokens // block_size  # full prompt blocks keyed by the trace
            has_full = self.prompt_full > 0
            last = np.zeros(n, dtype=np.uint64)
            last[has_full] = self._trace_derived(np.flatnonzero(has_full), self.prompt_full[has_full] - 1)
            self.tail_seed = derive(last, ids + _TAIL_TAG)
        else:
            self._per = 1
            self._offsets = np.zeros(n + 1, dtype=np.int64)
            self._flat = np.zeros(0, dtype=np.uint64)
            self.prompt_full = np.zeros(n, dtype=np.int64)
            self.tail_seed = derive(np.full(n, _UNIQUE_TAG, dtype=np.uint64), ids)
        self.block_size = block_size

    def at(self, reqs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Hash of block ``idx[i]`` of request ``reqs[i]`` (vectorized)."""
        out = derive(self.tail_seed[reqs], idx)
        in_prompt = idx < self.prompt_full[reqs]
        if in_prompt.any():
            out[in_prompt] = self._trace_derived(reqs[in_prompt], idx[in_prompt])
        return out

    def _trace_derived(self, reqs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Sub-block ``idx`` of the trace hashes of ``reqs`` (equal to ``reblock``'s hashes)."""
        source = self._flat[self._offsets[reqs] + idx // self._per]
        return source if self._per == 1 else derive(source, idx % self._per)

    def first(self, r: int, count: int) -> list[int]:
        """Hashes of blocks ``0 .. count-1`` of request ``r``, as Python ints (for dict lookups)."""
        if count <= 0:
            return []
        idx = np.arange(count, dtype=np.int64)
        return self.at(np.full(count, r, dtype=np.int64), idx).tolist()
