"""Characterize ops on the cycle kernel and serve their costs from the on-disk cache.

Accuracy (measured, `tokenstack characterize hbm4-12h-tokenstack`): most held-out sizes within 2-4% of
the kernel, but up to ~10% (streams, attention) and ~25% (a DMA at the top load level) where the curve
is a staircase: an all-bank refresh (tRFC ~0.45 us every tREFI 3.9 us) lands inside or outside the op
depending on its length, and tier maps wrap to a new row every few MiB. Refining the grid where the
curve bends (REFINE_DEPTH > 0) did not remove the steps; averaging over refresh phase is the open fix.

`OpCosts(stack)` is what the serving engine holds: `costs.table(op)` returns the op's `OpTable`,
read from the cache, or characterized now when `on_missing="characterize"`; with
`on_missing="error"` (the library default) a missing cost is an error that says how to make it,
never a zero.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.opcost import cache
from tokenstack_sim.hw.opcost.simulate import OpSpec, simulate_op
from tokenstack_sim.hw.opcost.table import ATTENTION_TOKENS, DMA_SIZES, LOAD_SHARES, STREAM_SIZES, OpTable


def default_grid(op: OpSpec) -> dict:
    sizes = {"stream": STREAM_SIZES, "dma": DMA_SIZES, "attention": ATTENTION_TOKENS}[op.kind]
    return {"sizes": list(sizes), "shares": list(LOAD_SHARES)}


STEP_MAX_NS = 20_000.0  # refresh steps are located for ops shorter than this (later steps are < 3% each)
STEP_WIDTH = 0.02  # ... to within this relative width in size


def _fit_level(stack, op, sizes0: np.ndarray, share: float, unit: str):
    """Sizes, times (and actions) for one load level.

    An all-bank refresh (tRFC ~0.45 us every tREFI ~3.9 us) lands inside an op once the op runs past
    the next refresh, so time is a staircase in size. Where two grid points differ in the refreshes
    they saw and the op is short enough for a step to matter, the step is located by bisection, so the
    table holds a steep segment of width STEP_WIDTH there instead of smearing it over the interval."""
    pts: dict[float, tuple[float, dict, float]] = {}

    def sim(x: float):
        if x not in pts:
            t, acts, det = simulate_op(stack, op, x, share)
            pts[x] = (t, acts, det.get("refreshes", 0.0))
        return pts[x]

    for x in sizes0:
        sim(float(x))
    for a, b in zip(sizes0[1:], sizes0[2:]):
        a, b = float(a), float(b)
        if pts[a][2] == pts[b][2] or pts[b][0] > STEP_MAX_NS:
            continue
        for _ in range(12):
            if b - a <= max(STEP_WIDTH * a, 1.0 if unit == "tokens" else 32.0):
                break
            mid = (a + b) / 2
            if unit == "tokens":
                mid = float(round(mid))
                if mid <= a or mid >= b:
                    break
            if sim(mid)[2] == pts[a][2]:
                a = mid
            else:
                b = mid
    xs = np.array(sorted(pts), np.float64)
    return xs, np.array([pts[x][0] for x in xs]), {x: pts[x][1] for x in xs}


def held_out_sizes(sizes: np.ndarray, unit: str, rng: np.random.Generator, n: int = 4) -> np.ndarray:
    """Log-uniform sizes inside the grid that are not grid points."""
    lo, hi = np.log(max(sizes[1], 1.0)), np.log(sizes[-1])
    out = np.exp(rng.uniform(lo, hi, n))
    if unit == "tokens":
        out = np.round(out)
    return np.array([x for x in out if x not in set(sizes.tolist())])


def characterize(stack, op: OpSpec, grid: dict | None = None,
                 progress: Callable[[str], None] | None = None) -> OpTable:
    grid = grid or default_grid(op)
    sizes0 = np.array(grid["sizes"], np.float64)
    shares = np.array(grid["shares"], np.float64)
    if sizes0[0] != 0 or np.any(np.diff(sizes0) <= 0) or shares[0] != 0 or np.any(np.diff(shares) <= 0):
        raise InputError("a characterization grid starts at size 0 and load 0 and ascends")
    t0 = time.perf_counter()
    level_sizes, level_times = [], []
    action_sizes, actions = np.zeros(1), {}
    starves_at = None
    for j, share in enumerate(shares):
        try:
            xs, ts, acts = _fit_level(stack, op, sizes0, float(share), op.size_unit)
        except InputError:
            if j == 0:
                raise
            # the op does not complete under this much background: the table stops at the last level
            # that works, and a look-up above it is refused
            starves_at = float(share)
            shares = shares[:j]
            if progress:
                progress(f"{op.op_id}: starves under load share {share:g}; table ends at {shares[-1]:g}")
            break
        level_sizes.append(xs)
        level_times.append(ts)
        if j == 0:
            action_sizes = xs
            names = sorted({a for d in acts.values() for a in d})
            actions = {a: np.array([acts[x].get(a, 0.0) for x in xs]) for a in names}
        if progress:
            progress(f"{op.op_id}: load {share:g}: {len(xs)} sizes ({time.perf_counter() - t0:.1f} s)")
    table = OpTable(op.op_id, op.size_unit, shares, level_sizes, level_times, action_sizes, actions)
    rng = np.random.default_rng(12345)
    for j, share in enumerate(shares):
        for size in held_out_sizes(level_sizes[j], op.size_unit, rng):
            kernel_ns, _, _ = simulate_op(stack, op, float(size), float(share))
            table_ns = float(table.time(size, share))
            table.validation.append((float(size), float(share), kernel_ns, table_ns,
                                     (table_ns - kernel_ns) / kernel_ns if kernel_ns else 0.0))
    table.meta = {"characterize_s": time.perf_counter() - t0, "stack": stack.config.name,
                  "simulations": sum(len(x) for x in level_sizes) + len(table.validation),
                  "starves_at_share": starves_at, "refresh_step_width": STEP_WIDTH}
    return table


def make_entry(stack, op: OpSpec, grid: dict, key: str, path, progress=None) -> OpTable | None:
    """Characterize `op` into its cache entry at `path` under the entry's lock, unless another worker
    made it meanwhile (then None). The one path by which a cache entry is written."""
    with cache.locked(path):
        if cache.read_entry(path) is not None:
            return None
        table = characterize(stack, op, grid, progress)
        cache.write_entry(path, {"key": key, **table.to_json()})
        return table


class OpCosts:
    """Characterized costs of one stack config, from the cache (or the kernel, on request)."""

    def __init__(self, stack, *, on_missing: str = "error", progress: Callable[[str], None] | None = None):
        if on_missing not in ("error", "characterize"):
            raise ValueError(on_missing)
        self.stack = stack
        self.on_missing = on_missing
        self.progress = progress
        self._tables: dict[str, OpTable] = {}
        self.sources = cache.source_hash()
        self.origin: dict[str, str] = {}  # op id -> "cache" or "kernel"

    def entry(self, op: OpSpec, grid: dict | None = None):
        """(grid, cache key, cache file) of an op."""
        grid = grid or default_grid(op)
        key = cache.op_key(self.stack, op, grid, sources_hash=self.sources)
        return grid, key, cache.entry_path(self.stack, op, key)

    def table(self, op: OpSpec, grid: dict | None = None) -> OpTable:
        if op.op_id in self._tables:
            return self._tables[op.op_id]
        grid, key, path = self.entry(op, grid)
        data = cache.read_entry(path)
        if data is None:
            if self.on_missing == "error":
                raise InputError(f"no characterized cost for {op.op_id} on {self.stack.config.name} (key {key[:12]}); "
                                 f"run `tokenstack characterize {self.stack.config.name}` first")
            table = make_entry(self.stack, op, grid, key, path, self.progress)
            if table is not None:
                self.origin[op.op_id] = "kernel"
                self._tables[op.op_id] = table
                return table
            data = cache.read_entry(path)  # another worker made it meanwhile
        if data.get("key") != key:
            raise InputError(f"cache entry {path} does not match its key; delete it")
        self.origin.setdefault(op.op_id, "cache")
        table = OpTable.from_json(data)
        self._tables[op.op_id] = table
        return table

    def ensure(self, ops, workers: int | None = None, grid: dict | None = None) -> list[OpTable]:
        """The tables of `ops` (in order), characterizing every op missing from the cache first, whatever
        `on_missing` says: in parallel worker processes (spawned, each writing its own entry through the
        locked, atomic cache path), or in this process when one worker or one op is asked for.
        `workers` defaults to min(missing ops, CPUs); `grid` (default: each op's own) applies to every op."""
        from tokenstack_sim.hw.opcost.parallel import characterize_parallel

        ops = list(ops)
        missing, seen = [], set()
        for op in ops:
            if op.op_id in self._tables or op.op_id in seen:
                continue
            g, key, path = self.entry(op, grid)
            if cache.read_entry(path) is None:
                missing.append((op, g, key, path))
                seen.add(op.op_id)
        if workers is None:
            workers = min(len(missing), _cpus())
        if workers < 1 and missing:
            raise InputError(f"workers must be at least 1, not {workers}")
        if len(missing) > 1 and workers > 1:
            made = characterize_parallel(self.stack, missing, workers, self.progress)
            for op_id in made:
                self.origin[op_id] = "kernel"
        else:
            saved, self.on_missing = self.on_missing, "characterize"
            try:
                for op, g, _, _ in missing:
                    self.table(op, g)
            finally:
                self.on_missing = saved
        return [self.table(op, grid) for op in ops]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on, where the OS says
    except AttributeError:
        return os.cpu_count() or 1


def stderr_progress(msg: str) -> None:
    print(f"  characterize: {msg}", file=sys.stderr, flush=True)
