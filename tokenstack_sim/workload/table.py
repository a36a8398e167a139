"""The request table: one structured numpy array that every reader and generator produces.

Models what the serving engine needs to know about a request before it runs: when it arrives, how many
prompt tokens it brings and how many it will generate, which prompt blocks it shares with other
requests (chained prefix-block hashes), and which session / application / agent it belongs to, with an
optional parent request it depends on.
Leaves out prompt text, sampling parameters and anything measured after admission (latencies).

Prefix hashes are ragged (each request has ``ceil(input_tokens / hash_block_tokens)`` of them), so they
live beside the row array as CSR-style ``prefix_offsets`` (n + 1 int64) and flat ``prefix_hashes``
(uint64). A hash is *chained*: equal hashes at block ``j`` mean the whole prefix up to and including
block ``j`` is equal, which is what vLLM-style prefix caching keys on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tokenstack_sim.errors import InputError

NO_ID = -1  # session / app / agent / parent id meaning "none"

FLAG_FAILED = 1  # the source logged the request as failed (e.g. BurstGPT 0-token response), kept on request

REQUEST_DTYPE = np.dtype(
    [
        ("request_id", np.int64),  # equals the row position once the table is built
        ("arrival_s", np.float64),  # seconds since the table's origin
        ("input_tokens", np.int64),
        ("output_tokens", np.int64),
        ("session_id", np.int64),
        ("app_id", np.int64),
        ("agent_id", np.int64),
        ("parent_id", np.int64),  # request this one depends on (an earlier row), NO_ID if none
        ("flags", np.uint8),
    ]
)


def empty_rows(n: int) -> np.ndarray:
    """Rows with every id set to NO_ID and zero lengths, ready to be filled."""
    rows = np.zeros(n, dtype=REQUEST_DTYPE)
    rows["request_id"] = np.arange(n)
    for name in ("session_id", "app_id", "agent_id", "parent_id"):
        rows[name] = NO_ID
    return rows


@dataclass
class RequestTable:
    """Rows sorted by arrival plus optional ragged prefix hashes and free-form provenance."""

    rows: np.ndarray
    prefix_offsets: np.ndarray | None = None
    prefix_hashes: np.ndarray | None = None
    hash_block_tokens: int = 0  # tokens per hashed block; 0 when the table has no hashes
    meta: dict = field(default_factory=dict)  # source, origin timestamp, app names, dropped-row counts

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def has_prefix(self) -> bool:
        return self.prefix_hashes is not None

    def hashes_of(self, i: int) -> np.ndarray:
        """Prefix-block hashes of row ``i``."""
        if self.prefix_offsets is None or self.prefix_hashes is None:
            return np.zeros(0, dtype=np.uint64)
        return self.prefix_hashes[self.prefix_offsets[i] : self.prefix_offsets[i + 1]]

    def take(self, index: np.ndarray) -> "RequestTable":
        """A new table of the given rows (in the given order), renumbered; parents outside become NO_ID."""
        index = np.asarray(index, dtype=np.int64)
        rows = self.rows[index].copy()
        old_to_new = np.full(len(self.rows), NO_ID, dtype=np.int64)
        old_to_new[rows["request_id"]] = np.arange(len(rows))
        parent = rows["parent_id"]
        has_parent = parent >= 0
        parent[has_parent] = old_to_new[parent[has_parent]]
        rows["request_id"] = np.arange(len(rows))
        offsets = hashes = None
        if self.prefix_offsets is not None and self.prefix_hashes is not None:
            counts = np.diff(self.prefix_offsets)[index]
            offsets = np.zeros(len(index) + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            starts = self.prefix_offsets[:-1][index]
            # Flat gather of each selected segment: start of its segment + position within it.
            within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], counts)
            hashes = self.prefix_hashes[np.repeat(starts, counts) + within]
        return RequestTable(rows, offsets, hashes, self.hash_block_tokens, dict(self.meta))

    def sorted_by_arrival(self) -> "RequestTable":
        order = np.argsort(self.rows["arrival_s"], kind="stable")
        if np.all(order == np.arange(len(order))):
            return self
        return self.take(order)


def blocks_needed(input_tokens: np.ndarray, block_tokens: int) -> np.ndarray:
    """Hashed blocks per request: the last, partial block is hashed too (the Mooncake convention)."""
    return -(-np.asarray(input_tokens, dtype=np.int64) // block_tokens)


def validate(table: RequestTable, *, source: str | None = None) -> None:
    """Raise InputError unless the table keeps every invariant the engine relies on."""
    rows = table.rows
    if rows.dtype != REQUEST_DTYPE:
        raise InputError(f"rows have dtype {rows.dtype}, expected REQUEST_DTYPE", source=source)
    n = len(rows)

    def fail(message: str, bad: np.ndarray) -> None:
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{message} ({int(bad.sum())} rows)", source=source, where=f"request {i}")

    if n == 0:
        raise InputError("the request table is empty", source=source)
    if not np.array_equal(rows["request_id"], np.arange(n)):
        fail("request_id must equal the row position", rows["request_id"] != np.arange(n))
    arrival_s = rows["arrival_s"]
    if not np.all(np.isfinite(arrival_s)):
        fail("arrival_s is not finite", ~np.isfinite(arrival_s))
    backwards = np.zeros(n, dtype=bool)
    backwards[1:] = np.diff(arrival_s) < 0
    if backwards.any():
        fail("rows are not sorted by arrival_s", backwards)
    if np.any(rows["input_tokens"] < 1):
        fail("input_tokens must be >= 1", rows["input_tokens"] < 1)
    if np.any(rows["output_tokens"] < 0):
        fail("output_tokens must be >= 0", rows["output_tokens"] < 0)
    parent = rows["parent_id"]
    bad_parent = (parent != NO_ID) & ((parent < 0) | (parent >= np.arange(n)))
    if bad_parent.any():
        fail("parent_id must be -1 or an earlier request", bad_parent)
    if table.prefix_hashes is None:
        if table.prefix_offsets is not None:
            raise InputError("prefix_offsets given without prefix_hashes", source=source)
        return
    offsets = table.prefix_offsets
    if offsets is None or len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != len(table.prefix_hashes):
        raise InputError("prefix_offsets must have n + 1 entries from 0 to len(prefix_hashes)", source=source)
    if table.hash_block_tokens < 1:
        raise InputError("hash_block_tokens must be >= 1 when hashes are present", source=source)
    counts = np.diff(offsets)
    expected = blocks_needed(rows["input_tokens"], table.hash_block_tokens)
    if np.any(counts != expected):
        fail(f"each request needs ceil(input_tokens / {table.hash_block_tokens}) hashes", counts != expected)
