"""Measured kernel times imported from a CSV file, interpolated in log space on their grid.

Format (docs/gpu_calibration.md): a header row naming exactly the columns `op, dtype, m, n, k, time_us,
gpu` (any order); `#` comment lines and blank lines are skipped. `op` is `gemm` or `attention`; `dtype`
is bf16, fp16 or fp8; m, n, k are positive numbers (for attention: m = query tokens of the kernel,
n = mean attended keys per query, k = heads_q * head_dim); `time_us` is the measured time of one kernel
(launch included as measured: no launch overhead is added to a table time); `gpu` is the GPU preset name.

For each (op, gpu, dtype) the points must form a full grid (every combination of the listed m, n and k
values, once). A query is interpolated multilinearly in (log m, log n, log k) on log(time); it is exact
at grid points. A query outside the grid (or a table that is missing) is REFUSED with an InputError,
unless the caller opts into `fallback="roofline"`, which times those points with the roofline instead.

Left out: extrapolation of any kind, scattered (non-grid) measurements, per-row memory bandwidth (a table
is valid for the memory system it was measured on).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokenstack_sim.config.gpu import DTYPES
from tokenstack_sim.errors import InputError

COLUMNS = ("op", "dtype", "m", "n", "k", "time_us", "gpu")
OPS = ("gemm", "attention")
FALLBACKS = ("error", "roofline")
_LOG_EPS = 1e-9  # a query within this (relative) of a grid edge counts as on it


@dataclass(frozen=True)
class Grid:
    """One (op, gpu, dtype) table: sorted log-axes and log-times shaped (len m, len n, len k)."""
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    log_time_s: np.ndarray
    lines: int

    def ranges(self) -> str:
        return ", ".join(f"{a} in [{math.exp(ax[0]):g}, {math.exp(ax[-1]):g}]" for a, ax in zip("mnk", self.axes))


@dataclass
class KernelTable:
    """Measured kernel times keyed by (op, gpu, dtype)."""
    source: str
    grids: dict[tuple[str, str, str], Grid] = field(default_factory=dict)

    def keys(self) -> list[tuple[str, str, str]]:
        return sorted(self.grids)

    def lookup(self, op: str, gpu: str, dtype: str, m, n, k, *, fallback: str = "error", roofline=None):
        """Times in seconds for broadcast (m, n, k); `roofline(mask)` times the points outside the grid
        when `fallback == "roofline"`."""
        if fallback not in FALLBACKS:
            raise InputError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}", where="fallback")
        M, N, K = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (m, n, k)))
        grid = self.grids.get((op, gpu, dtype))
        if grid is None:
            if fallback == "roofline":
                return roofline(np.ones(M.shape, bool)).reshape(M.shape)
            have = "; ".join("/".join(key) for key in self.keys()) or "nothing"
            raise InputError(f"no measured {op} kernels for gpu {gpu!r}, dtype {dtype}; the table holds {have} "
                             "(add measurements, or opt into fallback='roofline')", source=self.source)
        logs = [np.log(np.maximum(x, 1e-300)) for x in (M, N, K)]
        inside = np.ones(M.shape, bool)
        idx, frac = [], []
        for x, ax in zip(logs, grid.axes):
            tol = _LOG_EPS * max(1.0, abs(ax[-1]))
            inside &= (x >= ax[0] - tol) & (x <= ax[-1] + tol)
            if len(ax) == 1:
                idx.append(np.zeros(x.shape, np.int64))
                frac.append(np.zeros(x.shape))
                continue
            xc = np.clip(x, ax[0], ax[-1])
            i = np.clip(np.searchsorted(ax, xc, side="right") - 1, 0, len(ax) - 2)
            idx.append(i)
            frac.append((xc - ax[i]) / (ax[i + 1] - ax[i]))
        if not inside.all() and fallback == "error":
            bad = np.argwhere(~inside)[0] if M.ndim else ()
            at = tuple(bad)
            raise InputError(
                f"{op} m={M[at]:g}, n={N[at]:g}, k={K[at]:g} ({dtype}, gpu {gpu!r}) lies outside the measured "
                f"grid ({grid.ranges()}); the table is never extrapolated: add measurements, or opt into "
                "fallback='roofline'", source=self.source)
        out = np.zeros(M.shape)
        for corner in range(8):
            w = np.ones(M.shape)
            pos = []
            for d in range(3):
                hi = (corner >> d) & 1
                n_ax = len(grid.axes[d])
                pos.append(np.minimum(idx[d] + hi, n_ax - 1))
                w = w * (frac[d] if hi else 1.0 - frac[d])
            out += w * grid.log_time_s[pos[0], pos[1], pos[2]]
        t = np.exp(out)
        if not inside.all():
            t[~inside] = roofline(~inside)
        return t


def _number(text: str, *, path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"expected a number, got {text!r}", source=path, where=f"line {line}, column {column}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"expected a positive number, got {text!r}", source=path, where=f"line {line}, column {column}")
    return value


def load_kernel_table(path: str | Path) -> KernelTable:
    """Read and validate a calibration CSV (see the module docstring and docs/gpu_calibration.md)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError("file not found", source=path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=path) from None
    rows: list[tuple[int, list[str]]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        rows.append((lineno, next(csv.reader([raw]))))
    if not rows:
        raise InputError("empty calibration table (expected a header row: " + ",".join(COLUMNS) + ")", source=path)
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    for i, h in enumerate(header):
        if h not in COLUMNS:
            raise InputError(f"unknown column {h!r}; the columns are {', '.join(COLUMNS)}", source=path,
                             where=f"line {header_line}, column {i + 1}")
        if header.index(h) != i:
            raise InputError(f"column {h!r} appears twice", source=path, where=f"line {header_line}, column {i + 1}")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InputError(f"missing columns: {', '.join(missing)}", source=path, where=f"line {header_line}")
    col = {h: i for i, h in enumerate(header)}
    points: dict[tuple[str, str, str], dict[tuple[float, float, float], tuple[float, int]]] = {}
    for lineno, cells in rows[1:]:
        if len(cells) != len(header):
            raise InputError(f"expected {len(header)} fields, got {len(cells)}", source=path, where=f"line {lineno}")
        cell = {c: cells[col[c]].strip() for c in COLUMNS}
        if cell["op"] not in OPS:
            raise InputError(f"expected one of {', '.join(OPS)}, got {cell['op']!r}", source=path,
                             where=f"line {lineno}, column op")
        if cell["dtype"] not in DTYPES:
            raise InputError(f"expected one of {', '.join(DTYPES)}, got {cell['dtype']!r}", source=path,
                             where=f"line {lineno}, column dtype")
        if not cell["gpu"]:
            raise InputError("expected a GPU preset name", source=path, where=f"line {lineno}, column gpu")
        mnk = tuple(_number(cell[c], path=path, line=lineno, column=c) for c in ("m", "n", "k"))
        t_us = _number(cell["time_us"], path=path, line=lineno, column="time_us")
        group = points.setdefault((cell["op"], cell["gpu"], cell["dtype"]), {})
        if mnk in group:
            raise InputError(f"duplicate point m={mnk[0]:g}, n={mnk[1]:g}, k={mnk[2]:g} (first on line "
                             f"{group[mnk][1]})", source=path, where=f"line {lineno}")
        group[mnk] = (t_us * 1e-6, lineno)
    table = KernelTable(source=str(path))
    for key, group in points.items():
        axes_vals = [sorted({p[d] for p in group}) for d in range(3)]
        shape = tuple(len(a) for a in axes_vals)
        if len(group) != shape[0] * shape[1] * shape[2]:
            for mv in axes_vals[0]:
                for nv in axes_vals[1]:
                    for kv in axes_vals[2]:
                        if (mv, nv, kv) not in group:
                            raise InputError(
                                f"{'/'.join(key)}: the points do not form a full grid; missing m={mv:g}, n={nv:g}, "
                                f"k={kv:g} (every combination of the listed m, n, k values must be measured)",
                                source=path)
        log_t = np.empty(shape)
        pos = [{v: i for i, v in enumerate(a)} for a in axes_vals]
        for (mv, nv, kv), (t, _line) in group.items():
            log_t[pos[0][mv], pos[1][nv], pos[2][kv]] = math.log(t)
        table.grids[key] = Grid(tuple(np.log(np.array(a)) for a in axes_vals), log_t, len(group))
    return table
