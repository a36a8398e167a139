"""The project's own trace format: one ``.npz`` file per request table.

Arrays: ``rows`` (REQUEST_DTYPE), and when the table has prefix hashes ``prefix_offsets`` (int64, n + 1)
and ``prefix_hashes`` (uint64); ``header`` holds a JSON document with ``format_version``,
``hash_block_tokens`` and the table's ``meta``. Written to a temporary file in the target folder and
renamed over the target, so a crash never leaves a half-written trace.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.workload.table import REQUEST_DTYPE, RequestTable, validate

FORMAT_VERSION = 1


def save_npz(table: RequestTable, path: str | Path) -> Path:
    path = Path(path)
    validate(table)
    header = {"format_version": FORMAT_VERSION, "hash_block_tokens": table.hash_block_tokens, "meta": table.meta}
    arrays = {"rows": table.rows, "header": np.frombuffer(json.dumps(header, default=str).encode(), dtype=np.uint8)}
    if table.has_prefix:
        arrays["prefix_offsets"] = table.prefix_offsets
        arrays["prefix_hashes"] = table.prefix_hashes
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_npz(path: str | Path) -> RequestTable:
    path = Path(path)
    if not path.is_file():
        raise InputError("trace file not found", source=path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            rows = data["rows"]
            offsets = data["prefix_offsets"] if "prefix_offsets" in data else None
            hashes = data["prefix_hashes"] if "prefix_hashes" in data else None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise InputError(f"not a tokenstack .npz trace ({exc})", source=path) from None
    if header.get("format_version") != FORMAT_VERSION:
        raise InputError(f"format_version {header.get('format_version')!r}, expected {FORMAT_VERSION}", source=path)
    if rows.dtype != REQUEST_DTYPE:
        raise InputError(f"rows dtype {rows.dtype} is not this version's request dtype", source=path)
    table = RequestTable(rows, offsets, hashes, int(header.get("hash_block_tokens", 0)), header.get("meta", {}))
    validate(table, source=str(path))
    return table
