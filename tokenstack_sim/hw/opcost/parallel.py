"""Characterize several ops at once in worker processes (`OpCosts.ensure`).

Spawn-safe: workers are started with the "spawn" method (no forked numba or lock state), take only
picklable arguments, and each writes its own cache entry through `make_entry`, under the entry's lock
and atomically, so workers of other runs (a sweep) sharing the cache wait instead of repeating an op.
A resolved stack holds read-only mappings (`types.MappingProxyType`), which the standard pickler
refuses; it travels as bytes from a pickler that rebuilds them as such. Each worker recomputes the op's
cache key from the stack it received and refuses to write under a different key, so a worker never
characterizes anything but what the parent asked for (e.g. if a model source changed meanwhile).
Progress lines from the workers come back over a queue and go to the parent's progress callback.
"""

from __future__ import annotations

import concurrent.futures as cf
import copyreg
import io
import multiprocessing as mp
import pickle
import queue
import types
from typing import Callable

from tokenstack_sim.errors import InputError

_progress_q = None  # in a worker: where its progress lines go


def _mappingproxy(d: dict) -> types.MappingProxyType:
    return types.MappingProxyType(d)


class _StackPickler(pickle.Pickler):
    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[types.MappingProxyType] = lambda m: (_mappingproxy, (dict(m),))


def dumps_stack(stack) -> bytes:
    buf = io.BytesIO()
    _StackPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(stack)
    return buf.getvalue()


def _init_worker(q) -> None:
    global _progress_q
    _progress_q = q


def _send(msg: str) -> None:
    if _progress_q is not None:
        _progress_q.put(msg)


def _work(stack_bytes: bytes, op, grid: dict, key: str, path: str) -> tuple[str, bool]:
    """In a worker: characterize one op into its cache entry. (op id, whether this worker made it)."""
    from pathlib import Path

    from tokenstack_sim.hw.opcost import cache
    from tokenstack_sim.hw.opcost.characterize import make_entry

    stack = pickle.loads(stack_bytes)
    mine = cache.op_key(stack, op, grid)
    if mine != key:
        raise InputError(f"{op.op_id}: a worker's cache key {mine[:12]} differs from its parent's {key[:12]} "
                         "(did a model source change during the run?)")
    return op.op_id, make_entry(stack, op, grid, key, Path(path), _send) is not None


def characterize_parallel(stack, missing: list, workers: int,
                          progress: Callable[[str], None] | None = None) -> list[str]:
    """Characterize `missing` [(op, grid, key, path)] on `workers` spawned processes; returns the op ids
    a worker characterized (the rest were made meanwhile by someone else sharing the cache)."""
    from tokenstack_sim.hw.dram.run import warmup

    warmup()  # compile (or load) the kernels once here, so that workers load numba's on-disk cache
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    blob = dumps_stack(stack)
    made: list[str] = []

    def drain() -> None:
        while True:
            try:
                msg = q.get_nowait()
            except queue.Empty:
                return
            if progress:
                progress(msg)

    with cf.ProcessPoolExecutor(max_workers=min(workers, len(missing)), mp_context=ctx,
                                initializer=_init_worker, initargs=(q,)) as pool:
        pending = {pool.submit(_work, blob, op, grid, key, str(path)) for op, grid, key, path in missing}
        if progress:
            progress(f"{len(missing)} ops on {min(workers, len(missing))} worker processes")
        try:
            while pending:
                done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                drain()
                for fut in done:
                    op_id, mine = fut.result()  # a worker's error is raised here
                    if mine:
                        made.append(op_id)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    drain()
    q.close()
    return made
