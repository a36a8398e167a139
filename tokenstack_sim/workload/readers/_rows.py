"""Shared plumbing of the trace readers: bad-row handling, column builders and table assembly.

A reader either stops at the first bad row with ``InputError(..., source=file, where="line N")`` or, with
``skip_bad=True``, skips it and counts it; the count and the first message land in ``table.meta`` so the
CLI can report them. Nothing is ever filled in with a default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.table import RequestTable, empty_rows, validate


class BadRows:
    """Raises on a bad row, or counts it when skipping is allowed."""

    def __init__(self, source: Path, skip_bad: bool):
        self.source = source
        self.skip_bad = skip_bad
        self.count = 0
        self.first: str | None = None
        self.lines: set[int] = set()  # lines skipped after the first pass (readers that check late)

    def report(self, line_no: int, message: str) -> None:
        error = InputError(message, source=self.source, where=f"line {line_no}")
        if not self.skip_bad:
            raise error
        self.count += 1
        if self.first is None:
            self.first = str(error)

    def annotate(self, meta: dict) -> None:
        meta["skipped_rows"] = self.count
        if self.first:
            meta["first_skipped"] = self.first


def parse_count(text: str, name: str, minimum: int = 0) -> int:
    """A token count: a non-negative integer (``12`` or ``12.0``); ValueError names the column."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        try:
            as_float = float(text)
        except (TypeError, ValueError):
            raise ValueError(f"{name} is {text!r}, expected an integer") from None
        if not as_float.is_integer():
            raise ValueError(f"{name} is {text!r}, expected an integer") from None
        value = int(as_float)
    if value < minimum:
        raise ValueError(f"{name} is {value}, expected >= {minimum}")
    return value


class _Utf8Lines:
    """Lines of a file decoded one by one, so bytes that are not UTF-8 are located by line.

    A line that does not decode goes to ``bad`` (which raises, or counts it with ``--skip-bad``) and is
    replaced by an empty line, which every reader skips; line numbering (``csv`` ``line_num`` included)
    stays that of the file."""

    def __init__(self, path: Path, bad: "BadRows | None"):
        self.path = path
        self.bad = bad
        self.handle = open(path, "rb")
        self.line_no = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = next(self.handle)
        self.line_no += 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            if self.bad is None or self.line_no == 1:
                raise InputError(message, source=self.path, where=f"line {self.line_no}") from None
            self.bad.report(self.line_no, message)
            return "\n"

    def readline(self) -> str:
        try:
            return next(self)
        except StopIteration:
            return ""


def open_text(path: Path, bad: BadRows | None = None) -> _Utf8Lines:
    """The trace's lines as UTF-8 text; a line that does not decode is reported through ``bad``."""
    if not path.is_file():
        raise InputError("trace file not found", source=path)
    return _Utf8Lines(path, bad)


def build_table(
    arrival_s: list[float] | np.ndarray,
    input_tokens: list[int],
    output_tokens: list[int],
    *,
    source: Path,
    meta: dict,
    columns: dict[str, list[int]] | None = None,
    hash_counts: list[int] | None = None,
    hashes: list[int] | None = None,
    hash_block_tokens: int = 0,
) -> RequestTable:
    """Assemble, sort by arrival (stable) and validate a table from parsed columns."""
    n = len(input_tokens)
    if n == 0:
        raise InputError("no requests could be read", source=source)
    rows = empty_rows(n)
    rows["arrival_s"] = np.asarray(arrival_s, dtype=np.float64)
    rows["input_tokens"] = input_tokens
    rows["output_tokens"] = output_tokens
    for name, values in (columns or {}).items():
        rows[name] = values
    offsets = flat = None
    if hashes is not None and hash_counts is not None:
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.asarray(hash_counts, dtype=np.int64), out=offsets[1:])
        flat = np.asarray(hashes, dtype=np.uint64)
    table = RequestTable(rows, offsets, flat, hash_block_tokens, meta)
    if not np.all(np.diff(rows["arrival_s"]) >= 0):
        table.meta["resorted"] = True
        table = table.sorted_by_arrival()
    # Times are kept relative to the first arrival so tables from any source line up at t = 0.
    start_s = float(table.rows["arrival_s"][0])
    table.rows["arrival_s"] -= start_s
    table.meta["time_origin_s"] = table.meta.get("time_origin_s", 0.0) + start_s
    validate(table, source=str(source))
    return table
