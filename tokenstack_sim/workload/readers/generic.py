"""Any CSV or JSONL trace, read through a column mapping.

``mapping`` maps table fields to source columns; ``arrival`` (alias ``arrival_s``), ``input_tokens`` and
``output_tokens`` are required, ``session_id``, ``app_id``, ``agent_id``, ``request_id`` and ``parent_id``
optional. Arrivals are numbers in ``time_unit`` (s, ms, us) or ISO-8601 date-times. Id columns may hold
any text; they become dense integers. ``parent_id`` refers to the ``request_id`` of an earlier line, which
must then be mapped. For JSONL, ``hash_ids`` may map to a list of chained prefix hashes over
``hash_block_tokens``-token blocks.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.readers._rows import BadRows, build_table, open_text, parse_count
from tokenstack_sim.workload.table import NO_ID, RequestTable

TIME_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
REQUIRED_FIELDS = ("arrival", "input_tokens", "output_tokens")
OPTIONAL_FIELDS = ("session_id", "app_id", "agent_id", "request_id", "parent_id", "hash_ids")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _normalize_mapping(mapping: dict[str, str], source: Path) -> dict[str, str]:
    fields = {("arrival" if k == "arrival_s" else k): v for k, v in mapping.items()}
    valid = REQUIRED_FIELDS + OPTIONAL_FIELDS
    for key in fields:
        if key not in valid:
            raise InputError(f"unknown mapping field {key!r}; valid: {', '.join(valid)}", source=source, where="mapping")
    missing = [k for k in REQUIRED_FIELDS if k not in fields]
    if missing:
        raise InputError(f"mapping lacks {', '.join(missing)}", source=source, where="mapping")
    if "parent_id" in fields and "request_id" not in fields:
        raise InputError("mapping has parent_id but no request_id to resolve it against", source=source, where="mapping")
    return fields


def _time_s(value, unit_s: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) * unit_s
    text = str(value).strip()
    try:
        return float(text) * unit_s
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text)  # ValueError names the bad text for the caller
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return (stamp - _EPOCH).total_seconds()


def _records(path: Path, kind: str, needed: list[str], bad: BadRows):
    """Yield (line number, dict of needed columns) or (line number, error message)."""
    with open_text(path, bad) as handle:
        if kind == "csv":
            reader = csv.reader(handle)
            header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
            absent = [c for c in needed if c not in header]
            if absent:
                raise InputError(f"column(s) {', '.join(absent)} not in header {header}", source=path, where="line 1")
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    yield reader.line_num, f"expected {len(header)} fields, found {len(fields)}"
                    continue
                yield reader.line_num, dict(zip(header, fields))
        else:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    yield line_no, f"not valid JSON ({exc.msg})"
                    continue
                if not isinstance(record, dict):
                    yield line_no, "expected a JSON object"
                    continue
                yield line_no, record


def read_generic(
    path: str | Path,
    mapping: dict[str, str],
    *,
    time_unit: str = "s",
    kind: str | None = None,
    hash_block_tokens: int = 0,
    skip_bad: bool = False,
) -> RequestTable:
    path = Path(path)
    fields = _normalize_mapping(mapping, path)
    if time_unit not in TIME_UNITS_S:
        raise InputError(f"time unit {time_unit!r} is not one of {', '.join(TIME_UNITS_S)}", source=path)
    kind = kind or ("jsonl" if path.suffix.lower() in (".jsonl", ".json") else "csv")
    if kind not in ("csv", "jsonl"):
        raise InputError(f"generic kind {kind!r} is not csv or jsonl", source=path)
    if "hash_ids" in fields and (kind != "jsonl" or hash_block_tokens < 1):
        raise InputError("hash_ids needs a JSONL trace and hash_block_tokens >= 1", source=path, where="mapping")
    unit_s = TIME_UNITS_S[time_unit]
    bad = BadRows(path, skip_bad)
    arrival_s: list[float] = []
    input_tokens: list[int] = []
    output_tokens: list[int] = []
    id_fields = [k for k in ("session_id", "app_id", "agent_id", "request_id", "parent_id") if k in fields]
    id_values: dict[str, list] = {k: [] for k in id_fields}
    hash_counts: list[int] = []
    hashes: list[int] = []
    request_row: dict[str, int] = {}  # request_id -> row of its first kept line
    parents: list[int] = []
    for line_no, record in _records(path, kind, list(fields.values()), bad):
        if isinstance(record, str):
            bad.report(line_no, record)
            continue
        try:
            for name, column in fields.items():
                if column not in record:
                    raise ValueError(f"missing column {column!r}")
            t_s = _time_s(record[fields["arrival"]], unit_s)
            if not math.isfinite(t_s):
                raise ValueError(f"{fields['arrival']} is {record[fields['arrival']]!r}, expected a finite time")
            n_in = parse_count(record[fields["input_tokens"]], fields["input_tokens"], minimum=1)
            n_out = parse_count(record[fields["output_tokens"]], fields["output_tokens"])
            ids = None
            if "hash_ids" in fields:
                ids = record[fields["hash_ids"]]
                need = -(-n_in // hash_block_tokens)
                if not isinstance(ids, list) or len(ids) != need or not all(type(h) is int and 0 <= h < 1 << 64 for h in ids):
                    raise ValueError(f"{fields['hash_ids']} must list {need} integer hashes for {n_in} tokens")
            parent = NO_ID
            if "parent_id" in fields:
                value = record[fields["parent_id"]]
                key = None if value in ("", None) else str(value)
                if key is not None and key != "-1":
                    if key not in request_row:
                        raise ValueError(f"parent_id {key!r} names no request on an earlier line")
                    parent = request_row[key]
        except ValueError as exc:
            bad.report(line_no, str(exc))
            continue
        if "request_id" in fields:
            value = record[fields["request_id"]]
            if value not in ("", None):
                request_row.setdefault(str(value), len(input_tokens))
        parents.append(parent)
        arrival_s.append(t_s)
        input_tokens.append(n_in)
        output_tokens.append(n_out)
        for name in id_fields:
            value = record[fields[name]]
            id_values[name].append(None if value in ("", None) else str(value))
        if ids is not None:
            hash_counts.append(len(ids))
            hashes.extend(ids)
    columns = {}
    for name in ("session_id", "app_id", "agent_id"):
        if name in id_values:
            dense: dict[str, int] = {}
            columns[name] = [NO_ID if v is None else dense.setdefault(v, len(dense)) for v in id_values[name]]
    if "parent_id" in fields:
        columns["parent_id"] = parents
    meta = {"format": "generic", "source": path.name, "mapping": dict(fields), "time_unit": time_unit}
    bad.annotate(meta)
    has_hashes = "hash_ids" in fields
    table = build_table(
        np.asarray(arrival_s, dtype=np.float64),
        input_tokens,
        output_tokens,
        source=path,
        meta=meta,
        columns=columns,
        hash_counts=hash_counts if has_hashes else None,
        hashes=hashes if has_hashes else None,
        hash_block_tokens=hash_block_tokens if has_hashes else 0,
    )
    return table
