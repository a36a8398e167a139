"""Where a sweep's points run: this process, local worker processes, or a Dask cluster.

`execute(job)` runs one point (sweep/points.py `PointJob`) wherever it is called: it loads the system
with the point's `--set` overrides, prepares it with the model (costs read from the characterization
cache, never characterized here: `on_missing="error"`), serves the workload and returns an `Outcome`
holding the `RunResult`, or the error message of a point that failed (the sweep records it and goes on).
Each point is prepared afresh, so its result does not depend on which worker ran which points before.

Executors share one method, `run(jobs) -> iterator of Outcome` in completion order; closing the iterator
early (an error or Ctrl-C in the caller) cancels the points not started and waits for the running ones.

- `LocalExecutor(workers)`: in this process for 1 worker; otherwise a `ProcessPoolExecutor` with the
  "spawn" start method, as `sim.engine.run_many` uses (no fork of a process holding numba state).
- `DaskExecutor(address=...)` or `DaskExecutor(local_workers=N)`: `dask.distributed` (the `[dist]`
  extra), on an existing scheduler or a `LocalCluster` of N single-threaded worker processes started and
  stopped here (worker profiling off: it costs ~40% of a point's time; a cluster of your own can set
  `distributed.worker.profile.enabled: false` likewise). A job can carry the characterized-cost cache
  files it reads (`cache_entries`); a worker writes the ones its own cache lacks before running, so
  workers on other machines need no shared disk (they need the same package version: the cache key
  includes the model's source files).

The results are the same on every executor: a point's run depends only on its job.
Leaves out: retries of failed points within a sweep (rerun the sweep: failed points are not finished),
worker resource limits other than Dask's defaults, other schedulers (Ray, Slurm arrays).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Iterable, Iterator

from tokenstack_sim.errors import InputError


@dataclass
class Outcome:
    point_id: str
    result: object | None  # RunResult, or None when the point failed
    error: str = ""
    wall_s: float = 0.0


def _seed_cache(entries) -> None:
    from tokenstack_sim.atomic_io import atomic_write
    from tokenstack_sim.hw.opcost.cache import cache_dir

    for name, text in entries:
        path = cache_dir() / name
        if not path.is_file():
            with atomic_write(path, "w", suffix=".json.tmp") as fh:
                fh.write(text)


def execute(job) -> Outcome:
    """Run one point (module docstring). Never raises for a failing point: the error is in the Outcome."""
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.sim.engine import prepare, run_prepared

    t0 = time.perf_counter()
    try:
        _seed_cache(job.cache_entries)
        system = load_config(job.system, list(job.overrides), kind="system")
        prep = prepare(system, job.model, options=job.options, scheduler=job.spec.scheduler,
                       kv_blocks=job.spec.kv_blocks, kv=job.spec.kv, on_missing="error")
        result = run_prepared(prep, job.spec)
        return Outcome(job.point_id, result, "", time.perf_counter() - t0)
    except InputError as exc:
        return Outcome(job.point_id, None, str(exc), time.perf_counter() - t0)
    except Exception as exc:  # a bug in one point must not lose the others: recorded, shown, exit status 1
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
        return Outcome(job.point_id, None, f"{type(exc).__name__}: {exc}{where}", time.perf_counter() - t0)


class WorkerLost(RuntimeError):
    """A worker process died (killed, out of memory): the sweep stops; finished points are kept."""


class LocalExecutor:
    def __init__(self, workers: int = 1):
        if workers < 1:
            raise InputError(f"expected at least 1 worker, got {workers}", where="-j")
        self.workers = workers

    def describe(self) -> str:
        return "this process" if self.workers == 1 else f"{self.workers} local processes"

    def run(self, jobs: Iterable) -> Iterator[Outcome]:
        jobs = list(jobs)
        if self.workers == 1 or len(jobs) <= 1:
            for j in jobs:
                yield execute(j)
            return
        import concurrent.futures as cf
        import multiprocessing as mp
        from concurrent.futures.process import BrokenProcessPool

        pool = cf.ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=mp.get_context("spawn"))
        try:
            futures = [pool.submit(execute, j) for j in jobs]
            for fut in cf.as_completed(futures):
                try:
                    yield fut.result()
                except BrokenProcessPool as exc:
                    raise WorkerLost(f"a worker process died ({exc}); finished points are kept, "
                                     "run the sweep again to resume") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _dask(option: str):
    try:
        from dask import distributed
    except ImportError:
        raise InputError("the Dask executor needs dask.distributed, which is not installed; "
                         "pip install 'tokenstack_sim[dist]' (or run on local processes with -j N)",
                         where=option) from None
    return distributed


class DaskExecutor:
    def __init__(self, address: str | None = None, local_workers: int | None = None):
        if (address is None) == (local_workers is None):
            raise InputError("give either --dask ADDRESS or --dask-local N", where="--dask")
        if local_workers is not None and local_workers < 1:
            raise InputError(f"expected at least 1 worker, got {local_workers}", where="--dask-local")
        self.address, self.local_workers = address, local_workers
        self.distributed = _dask("--dask-local" if local_workers is not None else "--dask")

    def describe(self) -> str:
        if self.local_workers is not None:
            return f"a local Dask cluster of {self.local_workers} worker processes"
        return f"the Dask scheduler at {self.address}"

    def _client(self):
        import logging

        import dask

        d = self.distributed
        if self.local_workers is not None:
            # The workers' statistical profiler samples every thread's stack every 10 ms, holding the GIL:
            # measured +40% per point on this pure-Python serve loop. Off for the clusters started here.
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                cluster = d.LocalCluster(n_workers=self.local_workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=logging.ERROR)
            return d.Client(cluster), cluster
        try:
            return d.Client(self.address, timeout="30s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach a Dask scheduler at {self.address!r} ({exc})", where="--dask") from None

    def run(self, jobs: Iterable) -> Iterator[Outcome]:
        jobs = list(jobs)
        if not jobs:
            return
        client, cluster = self._client()
        futures = []
        try:
            futures = [client.submit(execute, j, pure=False) for j in jobs]
            for fut in self.distributed.as_completed(futures):
                yield fut.result()
        finally:
            if futures:
                client.cancel(futures)
            client.close()
            if cluster is not None:
                cluster.close()
