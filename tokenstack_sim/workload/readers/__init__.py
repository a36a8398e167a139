"""Trace readers: each turns one public trace format into a `RequestTable`.

`read_trace` picks the reader from ``fmt`` or, when it is None, from the file's suffix and first line.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.readers.azure import read_azure
from tokenstack_sim.workload.readers.burstgpt import read_burstgpt
from tokenstack_sim.workload.readers.generic import read_generic
from tokenstack_sim.workload.readers.mooncake import read_mooncake
from tokenstack_sim.workload.store import load_npz
from tokenstack_sim.workload.table import RequestTable

FORMATS = ("azure", "mooncake", "burstgpt", "generic", "npz")

__all__ = ["FORMATS", "detect_format", "read_trace", "read_azure", "read_burstgpt", "read_generic", "read_mooncake"]


def detect_format(path: str | Path) -> str:
    """Guess the format from the suffix and the first line; InputError when it cannot tell."""
    path = Path(path)
    if not path.is_file():
        raise InputError("trace file not found", source=path)
    if path.suffix == ".npz":
        return "npz"
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline().strip().lstrip("\ufeff")
    if first.startswith("{"):
        try:
            keys = set(json.loads(first))
        except ValueError:
            keys = set()
        if {"timestamp", "input_length", "output_length", "hash_ids"} <= keys:
            return "mooncake"
    elif first.replace(" ", "") == "TIMESTAMP,ContextTokens,GeneratedTokens":
        return "azure"
    elif "Request tokens" in first and "Response tokens" in first:
        return "burstgpt"
    raise InputError(f"cannot tell the trace format; give one of {', '.join(FORMATS)}", source=path, where="line 1")


def read_trace(
    path: str | Path,
    fmt: str | None = None,
    *,
    skip_bad: bool = False,
    mapping: dict[str, str] | None = None,
    time_unit: str = "s",
    failed: str = "drop",
) -> RequestTable:
    fmt = fmt or detect_format(path)
    if fmt == "azure":
        return read_azure(path, skip_bad=skip_bad)
    if fmt == "mooncake":
        return read_mooncake(path, skip_bad=skip_bad)
    if fmt == "burstgpt":
        return read_burstgpt(path, skip_bad=skip_bad, failed=failed)
    if fmt == "generic":
        if not mapping:
            raise InputError("the generic format needs a column mapping (--map FIELD=COLUMN)", source=path)
        return read_generic(path, mapping, time_unit=time_unit, skip_bad=skip_bad)
    if fmt == "npz":
        return load_npz(path)
    raise InputError(f"unknown trace format {fmt!r}; known: {', '.join(FORMATS)}", source=path)
