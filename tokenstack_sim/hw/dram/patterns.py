"""Synthetic DRAM request patterns and the trace file formats.

Text trace: one request per line, `R ADDRESS` or `W ADDRESS`, or `TIME_NS R|W ADDRESS` for the
open-loop front end; addresses in hex (0x...) or decimal bytes; `#` starts a comment. Binary trace:
a `.npz` with `address` (uint64 bytes), `is_write` (bool) and optionally `time_ns` (float64).
An address names a byte; the request covers the one access (32 B on HBM) that holds it, so addresses
are aligned down to the access size. A larger request is several lines of the trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokenstack_sim.errors import InputError

PATTERNS = ("sequential", "random", "mixed", "strided")


@dataclass(frozen=True)
class Requests:
    address: np.ndarray  # uint64 bytes; aligned down to the device's access size when mapped
    is_write: np.ndarray  # bool
    time_ns: np.ndarray | None = None  # arrival times for the open-loop front end
    line: np.ndarray | None = None  # source line of each request (text traces), for error messages

    def where(self, k: int) -> str:
        """How an error names request k: its file line when known."""
        return f"line {int(self.line[k])}" if self.line is not None else f"request {k + 1}"

    def __len__(self) -> int:
        return len(self.address)


def generate(pattern: str, n: int, capacity_bytes: int, access_bytes: int, *, write_fraction: float | None = None,
             stride_bytes: int = 4096, seed: int = 0) -> Requests:
    """`sequential`, uniform `random`, `mixed` (random, one third writes unless told) or `strided`."""
    if pattern not in PATTERNS:
        raise InputError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}", where="--pattern")
    if n < 1:
        raise InputError(f"expected at least 1 request, got {n}", where="--requests")
    rng = np.random.default_rng(seed)
    lines = capacity_bytes // access_bytes
    if pattern == "sequential":
        idx = np.arange(n, dtype=np.int64) % lines
    elif pattern in ("random", "mixed"):
        idx = rng.integers(0, lines, size=n, dtype=np.int64)
    else:
        if stride_bytes <= 0 or stride_bytes % access_bytes:
            raise InputError(f"stride must be a positive multiple of {access_bytes} B", where="--stride")
        idx = (np.arange(n, dtype=np.int64) * (stride_bytes // access_bytes)) % lines
    if write_fraction is None:
        write_fraction = 1 / 3 if pattern == "mixed" else 0.0
    if not 0.0 <= write_fraction <= 1.0:
        raise InputError(f"expected a fraction in [0, 1], got {write_fraction}", where="--write-fraction")
    is_write = rng.random(n) < write_fraction
    return Requests(address=(idx * access_bytes).astype(np.uint64), is_write=is_write)


def read_trace(path: str | Path) -> Requests:
    path = Path(path)
    if not path.is_file():
        raise InputError("trace file not found", source=path)
    if path.suffix == ".npz":
        return _read_npz(path)
    addrs, writes, times, lines = [], [], [], []
    with open(path, "rb") as fh:
        for lineno, raw_bytes in enumerate(fh, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError("not UTF-8 text (is this a binary trace? binary traces are .npz)",
                                 source=path, where=f"line {lineno}") from None
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            try:
                if len(parts) == 2:
                    op, a = parts
                elif len(parts) == 3:
                    tm, op, a = parts
                    t_ns = float(tm)
                    if not math.isfinite(t_ns) or t_ns < 0:
                        raise InputError(f"expected a finite time >= 0 ns, got {tm!r}", source=path,
                                         where=f"line {lineno}")
                    times.append(t_ns)
                else:
                    raise ValueError
                if op not in ("R", "W"):
                    raise ValueError
                addr = int(a, 0)
            except ValueError:
                raise InputError(f"expected 'R|W ADDRESS' or 'TIME_NS R|W ADDRESS', got {line!r}",
                                 source=path, where=f"line {lineno}") from None
            if not 0 <= addr < 1 << 64:
                raise InputError(f"address {a} is outside 0 .. 2^64 - 1", source=path, where=f"line {lineno}")
            if times and len(times) != len(addrs) + 1:
                raise InputError("every line needs a time once one line has one", source=path, where=f"line {lineno}")
            addrs.append(addr)
            writes.append(op == "W")
            lines.append(lineno)
    if not addrs:
        raise InputError("trace has no requests", source=path)
    t = np.array(times, dtype=np.float64) if times else None
    return Requests(np.array(addrs, dtype=np.uint64), np.array(writes, dtype=bool), t, np.array(lines, np.int64))


def _read_npz(path: Path) -> Requests:
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # numpy raises several types for a bad or pickled archive
        raise InputError(f"not a readable .npz archive of plain arrays ({exc})", source=path) from None
    for key in ("address", "is_write"):
        if key not in arrays:
            raise InputError(f"missing array {key!r} (expected address, is_write, optional time_ns)", source=path)
    a, w, t = arrays["address"], arrays["is_write"], arrays.get("time_ns")
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"'address' must be a 1-D integer array, got {a.dtype} with shape {a.shape}", source=path)
    if w.ndim != 1 or not (w.dtype == bool or np.issubdtype(w.dtype, np.integer)):
        raise InputError(f"'is_write' must be a 1-D bool array, got {w.dtype} with shape {w.shape}", source=path)
    if t is not None and (t.ndim != 1 or not np.issubdtype(t.dtype, np.number)):
        raise InputError(f"'time_ns' must be a 1-D number array, got {t.dtype} with shape {t.shape}", source=path)
    if len(a) != len(w) or (t is not None and len(t) != len(a)):
        raise InputError("arrays address, is_write (and time_ns) must have one length", source=path)
    if len(a) == 0:
        raise InputError("trace has no requests", source=path)
    if np.issubdtype(a.dtype, np.signedinteger) and (a < 0).any():
        raise InputError(f"negative address at request {int(np.argmax(a < 0)) + 1}", source=path)
    if t is not None:
        t = t.astype(np.float64)
        bad = ~np.isfinite(t) | (t < 0)
        if bad.any():
            raise InputError(f"time_ns must be finite and >= 0; request {int(np.argmax(bad)) + 1} has "
                             f"{t[np.argmax(bad)]}", source=path)
    return Requests(a.astype(np.uint64), w.astype(bool), t)


def write_trace(req: Requests, path: str | Path) -> None:
    """Write a trace (text or .npz by suffix)."""
    path = Path(path)
    if path.suffix == ".npz":
        arrays = {"address": req.address, "is_write": req.is_write}
        if req.time_ns is not None:
            arrays["time_ns"] = req.time_ns
        np.savez(path, **arrays)
        return
    with open(path, "w") as fh:
        for k in range(len(req)):
            op = "W" if req.is_write[k] else "R"
            prefix = f"{req.time_ns[k]:.3f} " if req.time_ns is not None else ""
            fh.write(f"{prefix}{op} 0x{int(req.address[k]):x}\n")
