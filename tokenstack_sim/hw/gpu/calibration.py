"""Measured kernel times imported from a CSV file, interpolated in log space on their grid.

Format (docs/gpu_calibration.md): a header row naming exactly the columns `op, dtype, m, n, k, n_heads_kv,
mem_bw_GBps, time_us, gpu` (any order); `#` comment lines and blank lines are skipped. `op` is `gemm` or
`attention`; `dtype` is bf16, fp16 or fp8; m, n, k are positive numbers (for attention: m = query tokens of
the kernel, n = mean attended keys per query, k = heads_q * head_dim); `n_heads_kv` is the attention
kernel's KV heads (a positive integer; empty on gemm rows); `mem_bw_GBps` is the peak bandwidth of the
memory the GPU was attached to when measured; `time_us` is the measured time of one kernel (launch
included as measured: no launch overhead is added to a table time); `gpu` is the GPU preset name.

For each key (op, gpu, dtype, n_heads_kv, mem_bw_GBps) the points must form a full grid (every
combination of the listed m, n and k values, once). A query is interpolated multilinearly in
(log m, log n, log k) on log(time); it is exact at grid points.

Refused with an InputError, always (a table measured elsewhere says nothing about this system):
a lookup for a GPU the table holds no rows for (and, with `load_kernel_table(path, gpu=...)`, any row for
another GPU), and a lookup at a memory bandwidth the table was not measured at for that GPU (equal within
a relative 1e-6). Refused unless the caller opts into `fallback="roofline"` (which times those points
with the roofline instead): a query outside the grid, or a key the table lacks at a matching GPU and
bandwidth (another op, dtype or, for attention, number of KV heads).

Left out: extrapolation of any kind, scattered (non-grid) measurements, interpolation across bandwidths.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokenstack_sim.config.gpu import DTYPES
from tokenstack_sim.errors import InputError

COLUMNS = ("op", "dtype", "m", "n", "k", "n_heads_kv", "mem_bw_GBps", "time_us", "gpu")
OPS = ("gemm", "attention")
FALLBACKS = ("error", "roofline")
BW_REL_TOL = 1e-6  # a lookup's mem_bw_GBps matches a table's within this relative difference
_LOG_EPS = 1e-9  # a query within this (relative) of a grid edge counts as on it

# (op, gpu, dtype, n_heads_kv (0 for gemm), mem_bw_GBps)
Key = tuple[str, str, str, int, float]


def key_name(key: Key) -> str:
    """`gemm/h100-sxm/bf16 @ 3352 GB/s`, `attention/h100-sxm/bf16/kv8 @ 3352 GB/s`."""
    op, gpu, dtype, hkv, bw = key
    return f"{op}/{gpu}/{dtype}" + (f"/kv{hkv}" if op == "attention" else "") + f" @ {bw:g} GB/s"


@dataclass(frozen=True)
class Grid:
    """One key's table: sorted log-axes and log-times shaped (len m, len n, len k)."""
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    log_time_s: np.ndarray
    lines: int

    def ranges(self) -> str:
        return ", ".join(f"{a} in [{math.exp(ax[0]):g}, {math.exp(ax[-1]):g}]" for a, ax in zip("mnk", self.axes))

    def interpolate(self, M: np.ndarray, N: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(times in s, inside-the-grid mask) for flat arrays; outside points get a clipped value."""
        logs = [np.log(np.maximum(x, 1e-300)) for x in (M, N, K)]
        inside = np.ones(M.shape, bool)
        idx, frac = [], []
        for x, ax in zip(logs, self.axes):
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
        out = np.zeros(M.shape)
        for corner in range(8):
            w = np.ones(M.shape)
            pos = []
            for d in range(3):
                hi = (corner >> d) & 1
                pos.append(np.minimum(idx[d] + hi, len(self.axes[d]) - 1))
                w = w * (frac[d] if hi else 1.0 - frac[d])
            out += w * self.log_time_s[pos[0], pos[1], pos[2]]
        return np.exp(out), inside


@dataclass
class KernelTable:
    """Measured kernel times keyed by (op, gpu, dtype, n_heads_kv, mem_bw_GBps)."""
    source: str
    grids: dict[Key, Grid] = field(default_factory=dict)

    def keys(self) -> list[Key]:
        return sorted(self.grids)

    def gpus(self) -> list[str]:
        return sorted({key[1] for key in self.grids})

    def bandwidths(self, gpu: str) -> list[float]:
        """The memory bandwidths (GB/s) the table was measured at for `gpu`."""
        return sorted({key[4] for key in self.grids if key[1] == gpu})

    def lookup(self, op: str, gpu: str, dtype: str, m, n, k, *, mem_bw_GBps, n_heads_kv: int | None = None,
               fallback: str = "error", roofline=None):
        """Times in seconds for broadcast (m, n, k, mem_bw_GBps); `roofline(mask)` times the points (a
        boolean mask of the broadcast shape) that `fallback == "roofline"` lets through."""
        if fallback not in FALLBACKS:
            raise InputError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}", where="fallback")
        if op not in OPS:
            raise InputError(f"unknown op {op!r}; known: {', '.join(OPS)}", where="op")
        if op == "attention":
            if n_heads_kv is None or int(n_heads_kv) != n_heads_kv or n_heads_kv < 1:
                raise InputError(f"an attention lookup needs n_heads_kv, a positive integer (got {n_heads_kv!r})",
                                 where="n_heads_kv")
            hkv = int(n_heads_kv)
        else:
            hkv = 0
        M, N, K, BW = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (m, n, k, mem_bw_GBps)))
        shape = M.shape
        M, N, K, BW = (x.ravel() for x in (M, N, K, BW))
        if gpu not in self.gpus():
            raise InputError(f"the table holds measurements for gpu {', '.join(map(repr, self.gpus())) or 'none'}, "
                             f"not {gpu!r}: a table measured on another GPU is never used", source=self.source,
                             where="gpu")
        have_bw = self.bandwidths(gpu)
        out = np.empty(M.shape)
        for bw in np.unique(BW):
            match = [b for b in have_bw if math.isclose(b, bw, rel_tol=BW_REL_TOL)]
            key = (op, gpu, dtype, hkv, match[0] if match else float(bw))
            if not match:
                raise InputError(
                    f"{key_name(key)}: the table was measured for gpu {gpu!r} at mem_bw_GBps "
                    f"{', '.join(f'{b:g}' for b in have_bw)} only; it is never used at another memory bandwidth "
                    "(measure at this one)", source=self.source, where="mem_bw_GBps")
            sel = BW == bw
            grid = self.grids.get(key)
            if grid is None:
                if fallback == "roofline":
                    out[sel] = roofline(sel.reshape(shape))
                    continue
                have = "; ".join(key_name(kk) for kk in self.keys())
                raise InputError(f"no measured kernels for {key_name(key)}; the table holds {have} "
                                 "(add measurements, or opt into fallback='roofline')", source=self.source)
            t, inside = grid.interpolate(M[sel], N[sel], K[sel])
            if not inside.all():
                if fallback == "error":
                    i = int(np.flatnonzero(~inside)[0])
                    mm, nn, kk = M[sel][i], N[sel][i], K[sel][i]
                    raise InputError(
                        f"{op} m={mm:g}, n={nn:g}, k={kk:g} ({key_name(key)}) lies outside the measured grid "
                        f"({grid.ranges()}); the table is never extrapolated: add measurements, or opt into "
                        "fallback='roofline'", source=self.source)
                outside = np.zeros(M.shape, bool)
                outside[np.flatnonzero(sel)[~inside]] = True
                t[~inside] = roofline(outside.reshape(shape))
            out[sel] = t
        return out.reshape(shape)


def _number(text: str, *, path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"expected a number, got {text!r}", source=path, where=f"line {line}, column {column}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"expected a positive number, got {text!r}", source=path, where=f"line {line}, column {column}")
    return value


def _heads(text: str, op: str, *, path, line: int) -> int:
    where = f"line {line}, column n_heads_kv"
    if op == "gemm":
        if text:
            raise InputError(f"a gemm row has no KV heads: leave n_heads_kv empty, got {text!r}", source=path,
                             where=where)
        return 0
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"an attention row needs its KV heads, a positive integer, got {text!r}", source=path,
                         where=where)
    return value


def load_kernel_table(path: str | Path, *, gpu: str | None = None) -> KernelTable:
    """Read and validate a calibration CSV (see the module docstring and docs/gpu_calibration.md). With
    `gpu`, a row measured on another GPU is refused."""
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
        raise InputError(f"missing columns: {', '.join(missing)} (see docs/gpu_calibration.md)", source=path,
                         where=f"line {header_line}")
    col = {h: i for i, h in enumerate(header)}
    points: dict[Key, dict[tuple[float, float, float], tuple[float, int]]] = {}
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
        if gpu is not None and cell["gpu"] != gpu:
            raise InputError(f"a row measured on gpu {cell['gpu']!r}; this table is loaded for {gpu!r}", source=path,
                             where=f"line {lineno}, column gpu")
        hkv = _heads(cell["n_heads_kv"], cell["op"], path=path, line=lineno)
        bw = _number(cell["mem_bw_GBps"], path=path, line=lineno, column="mem_bw_GBps")
        mnk = tuple(_number(cell[c], path=path, line=lineno, column=c) for c in ("m", "n", "k"))
        t_us = _number(cell["time_us"], path=path, line=lineno, column="time_us")
        group = points.setdefault((cell["op"], cell["gpu"], cell["dtype"], hkv, bw), {})
        if mnk in group:
            raise InputError(f"duplicate point m={mnk[0]:g}, n={mnk[1]:g}, k={mnk[2]:g} (first on line "
                             f"{group[mnk][1]})", source=path, where=f"line {lineno}")
        group[mnk] = (t_us * 1e-6, lineno)
    by_gpu: dict[str, list[float]] = {}
    for key in points:
        by_gpu.setdefault(key[1], []).append(key[4])
    for g, bws in by_gpu.items():
        bws = sorted(set(bws))
        for a, b in zip(bws, bws[1:]):
            if math.isclose(a, b, rel_tol=BW_REL_TOL):
                raise InputError(f"gpu {g!r}: mem_bw_GBps {a!r} and {b!r} differ by less than {BW_REL_TOL:g} "
                                 "relative; write one memory system's bandwidth the same way on every row",
                                 source=path, where="mem_bw_GBps")
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
                                f"{key_name(key)}: the points do not form a full grid; missing m={mv:g}, n={nv:g}, "
                                f"k={kv:g} (every combination of the listed m, n, k values must be measured)",
                                source=path)
        log_t = np.empty(shape)
        pos = [{v: i for i, v in enumerate(a)} for a in axes_vals]
        for (mv, nv, kv), (t, _line) in group.items():
            log_t[pos[0][mv], pos[1][nv], pos[2][kv]] = math.log(t)
        table.grids[key] = Grid(tuple(np.log(np.array(a)) for a in axes_vals), log_t, len(group))
    return table
