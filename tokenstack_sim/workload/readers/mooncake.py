"""Mooncake / Kimi FAST'25 JSONL traces: ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``.

``hash_ids`` are chained prefix hashes over 512-token blocks, ``ceil(input_length / 512)`` of them (the
last block may be partial); the reader checks that count on every row. They are stored as they are at
512 tokens per block; `tokenstack_sim.workload.hashing.reblock` derives the engine's block size (e.g.
16 tokens: each 512-token hash expands into 32 chained sub-block hashes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tokenstack_sim.workload.readers._rows import BadRows, build_table, open_text
from tokenstack_sim.workload.table import RequestTable

MOONCAKE_BLOCK_TOKENS = 512  # Mooncake FAST'25 traces README: "block size 512"


def _int(row: dict, key: str, minimum: int) -> int:
    value = row.get(key)
    if type(value) is not int:  # bool and float are not token counts
        if key not in row:
            raise ValueError(f"missing key {key!r}")
        raise ValueError(f"{key} is {value!r}, expected an integer")
    if value < minimum:
        raise ValueError(f"{key} is {value}, expected >= {minimum}")
    return value


def _checked_hashes(hashes: list, counts: list[int], line_nos: list[int], bad: BadRows) -> np.ndarray | None:
    """The flat hashes as uint64; per-row checks run only when the fast whole-array check fails.

    Returns None when bad rows were found and skipped (the caller drops them)."""
    flat = np.array(hashes)
    if len(flat) == 0 or (flat.dtype.kind in "iu" and flat.min() >= 0):
        return flat.astype(np.uint64)
    start = 0
    for n, line_no in zip(counts, line_nos):
        row = hashes[start : start + n]
        start += n
        if not all(type(h) is int and 0 <= h < 1 << 64 for h in row):
            bad.report(line_no, "hash_ids must be integers in [0, 2**64)")
            bad.lines.add(line_no)
    return None


def read_mooncake(path: str | Path, *, skip_bad: bool = False) -> RequestTable:
    path = Path(path)
    bad = BadRows(path, skip_bad)
    arrival_ms: list[float] = []
    input_tokens: list[int] = []
    output_tokens: list[int] = []
    hash_counts: list[int] = []
    hashes: list[int] = []
    line_nos: list[int] = []
    loads = json.loads
    with open_text(path, bad) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = loads(line)
            except ValueError as exc:
                bad.report(line_no, f"not valid JSON ({exc.msg})")
                continue
            try:
                if not isinstance(row, dict):
                    raise ValueError("expected a JSON object")
                t_ms = row.get("timestamp")
                if type(t_ms) not in (int, float) or not (math.isfinite(t_ms) and t_ms >= 0):
                    raise ValueError(f"timestamp is {t_ms!r}, expected milliseconds >= 0")
                n_in = _int(row, "input_length", 1)
                n_out = _int(row, "output_length", 0)
                ids = row.get("hash_ids")
                if not isinstance(ids, list):
                    raise ValueError(f"hash_ids is {ids!r}, expected a list of integers")
                need = -(-n_in // MOONCAKE_BLOCK_TOKENS)
                if len(ids) != need:
                    raise ValueError(
                        f"hash_ids has {len(ids)} entries, input_length {n_in} needs {need} "
                        f"at {MOONCAKE_BLOCK_TOKENS} tokens per block"
                    )
            except ValueError as exc:
                bad.report(line_no, str(exc))
                continue
            line_nos.append(line_no)
            arrival_ms.append(t_ms)
            input_tokens.append(n_in)
            output_tokens.append(n_out)
            hash_counts.append(need)
            hashes.extend(ids)
    flat = _checked_hashes(hashes, hash_counts, line_nos, bad)
    if flat is None:  # rows with bad hashes were skipped: rebuild the columns without them
        keep = [i for i, n in enumerate(line_nos) if n not in bad.lines]
        arrival_ms = [arrival_ms[i] for i in keep]
        input_tokens = [input_tokens[i] for i in keep]
        output_tokens = [output_tokens[i] for i in keep]
        starts = np.concatenate([[0], np.cumsum(hash_counts)])
        hashes = [h for i in keep for h in hashes[starts[i] : starts[i + 1]]]
        hash_counts = [hash_counts[i] for i in keep]
        flat = np.asarray(hashes, dtype=np.uint64)
    meta = {"format": "mooncake", "source": path.name}
    bad.annotate(meta)
    return build_table(
        np.asarray(arrival_ms, dtype=np.float64) / 1000.0,
        input_tokens,
        output_tokens,
        source=path,
        meta=meta,
        hash_counts=hash_counts,
        hashes=flat,
        hash_block_tokens=MOONCAKE_BLOCK_TOKENS,
    )
