"""Several sweeps at once through one pool of workers.

A reproduction runs many small sweeps (one folder per workload grid, per ablation, per capacity search)
whose points should share the workers: `run_sweep` (sweep/runner.py) takes an executor with a
`run(jobs) -> iterator of Outcome` method, so `run_sweeps` calls it for each sweep in a thread of its own,
all with one shared executor that keeps its worker processes (or its Dask client) across calls:

- `SharedLocal(workers)`: a `LocalExecutor` whose spawned process pool lives until `close()`. With one
  worker the points run in this process, one at a time (a lock), whichever thread asks.
- `SharedDask(address=... | local_workers=N)`: a `DaskExecutor` with one client (and cluster) until
  `close()`; being a `DaskExecutor`, run_sweep hands each job the characterized costs it reads.

The threads only write files and wait; the simulation runs in the workers. Every (stack, op) cost the
sweeps read is characterized before the threads start (`characterize_all`), so no two threads
characterize the same op. Results are those of `tokenstack sweep` on each spec: a point's run depends
only on its job. Leaves out: priorities between sweeps (points run in submission order).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tokenstack_sim.sweep.executor import DaskExecutor, LocalExecutor, Outcome, WorkerLost, execute


class SharedLocal(LocalExecutor):
    """Local worker processes kept across `run` calls from several threads (module docstring)."""

    def __init__(self, workers: int = 1):
        super().__init__(workers)
        self._pool = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return super().describe() + " (shared by the sweeps)"

    def _get_pool(self):
        import multiprocessing as mp

        with self._lock:
            if self._pool is None:
                self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"))
            return self._pool

    def run(self, jobs: Iterable) -> Iterator[Outcome]:
        jobs = list(jobs)
        if self.workers == 1:
            for j in jobs:
                with self._lock:
                    out = execute(j)
                yield out
            return
        from concurrent.futures.process import BrokenProcessPool

        futures = [self._get_pool().submit(execute, j) for j in jobs]
        try:
            for fut in cf.as_completed(futures):
                try:
                    yield fut.result()
                except BrokenProcessPool as exc:
                    raise WorkerLost(f"a worker process died ({exc}); finished points are kept, "
                                     "run again to resume") from None
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class SharedDask(DaskExecutor):
    """One Dask client (and local cluster) kept across `run` calls from several threads."""

    def __init__(self, address: str | None = None, local_workers: int | None = None):
        super().__init__(address=address, local_workers=local_workers)
        self._client_cluster = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return super().describe() + " (shared by the sweeps)"

    def run(self, jobs: Iterable) -> Iterator[Outcome]:
        jobs = list(jobs)
        if not jobs:
            return
        with self._lock:
            if self._client_cluster is None:
                self._client_cluster = self._client()
        client = self._client_cluster[0]
        futures = [client.submit(execute, j, pure=False) for j in jobs]
        try:
            for fut in self.distributed.as_completed(futures):
                yield fut.result()
        finally:
            client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        if self._client_cluster is not None:
            client, cluster = self._client_cluster
            client.close()
            if cluster is not None:
                cluster.close()
            self._client_cluster = None


def make_executor(workers: int = 1, dask_address: str | None = None, dask_local: int | None = None):
    """SharedLocal(workers), or SharedDask when a Dask address or local cluster size is given."""
    if dask_address is not None or dask_local is not None:
        return SharedDask(address=dask_address, local_workers=dask_local)
    return SharedLocal(workers)


def characterize_all(specs, workers: int | None = None, note: Callable[[str], None] | None = None) -> None:
    """Fill the characterization cache with every (stack, op) the points of `specs` read, before any
    sweep starts (so that the sweeps' own `ensure_tables` calls find nothing to do)."""
    from tokenstack_sim.sim.engine import ensure_tables
    from tokenstack_sim.sweep.points import expand, job
    from tokenstack_sim.sweep.runner import _required

    jobs = [job(s, p) for s in specs for p in expand(s)]
    pairs = [pair for ps in _required(jobs).values() for pair in ps]
    ensure_tables(pairs, workers=workers, progress=note)


def run_sweeps(tasks, executor, *, progress: Callable[[str], None] | None = None,
               note: Callable[[str], None] | None = None) -> dict:
    """Run `tasks` [(SweepSpec, folder)] at once, each with `run_sweep(spec, folder, executor=executor)`
    in a thread of its own; returns folder -> SweepOutcome, or the exception that stopped that sweep."""
    from tokenstack_sim.sweep.runner import run_sweep

    tasks = list(tasks)
    if not tasks:
        return {}

    def one(spec, folder):
        tag = Path(folder).name
        return run_sweep(spec, folder, executor=executor, resume=True, characterize_workers=1,
                         progress=(lambda m: progress(f"{tag}: {m}")) if progress else None,
                         note=(lambda m: note(f"{tag}: {m}")) if note else None)

    out = {}
    with cf.ThreadPoolExecutor(max_workers=len(tasks)) as threads:
        futs = {threads.submit(one, s, f): Path(f) for s, f in tasks}
        for fut in cf.as_completed(futs):
            try:
                out[futs[fut]] = fut.result()
            except Exception as exc:  # one sweep's failure is reported, the others finish
                out[futs[fut]] = exc
    return out
