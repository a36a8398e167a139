"""One place that turns a `--workload` argument into a request table for a serving run.

A workload is either the name of a built-in spec (`workloads/<name>.toml`), a path to a spec TOML, or a
path to a trace in any format `readers.read_trace` knows. A spec is synthesized with the run's seed and
enough requests to cover `duration_s` at its rate; a trace is read as it is. Then, in this order:
`qps` rescales the arrival times to that mean rate (a trace keeps its burst shape; a spec is drawn at
that rate), `duration_s` keeps the requests arriving in [0, duration_s), and `max_requests` keeps the
first that many.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.readers import read_trace
from tokenstack_sim.workload.shaping import scale_rate, window
from tokenstack_sim.workload.spec import load_spec
from tokenstack_sim.workload.synth import synthesize
from tokenstack_sim.workload.table import RequestTable

# When only a rate is known, draw this many more requests than rate x duration, so that a bursty
# process still covers the window (then cut at duration_s). [E] 25% + 64 covers CV up to ~13 here.
_SPARE_FRACTION, _SPARE_MIN = 0.25, 64
DEFAULT_SYNTH_REQUESTS = 1000


def workloads_dir() -> Path:
    """The built-in `workloads/` folder (a source checkout, or the installed share folder)."""
    for candidate in (Path(__file__).resolve().parents[2] / "workloads",
                      Path(sys.prefix) / "share" / "tokenstack_sim" / "workloads"):
        if candidate.is_dir():
            return candidate
    raise InputError("the built-in workloads/ folder was not found; install with `pip install -e .`")


def builtin_workloads() -> dict[str, Path]:
    return {p.stem: p for p in sorted(workloads_dir().glob("*.toml"))}


def _is_spec(path: Path) -> bool:
    return path.suffix == ".toml"


def load_workload(workload: str, *, seed: int = 0, qps: float | None = None, duration_s: float | None = None,
                  max_requests: int | None = None) -> RequestTable:
    """The request table of a run (module docstring)."""
    if qps is not None and not (math.isfinite(qps) and qps > 0):
        raise InputError(f"expected a rate > 0 req/s, got {qps}", where="--qps")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"expected a duration > 0 s, got {duration_s}", where="--duration")
    if max_requests is not None and max_requests < 1:
        raise InputError(f"expected at least 1 request, got {max_requests}", where="--requests")
    from tokenstack_sim.workload.agent_workloads import is_agent_workload, load_agent_workload

    if is_agent_workload(workload):  # agent apps: qps in apps/s, max_requests = apps (agent_workloads.py)
        return load_agent_workload(workload, seed=seed, qps=qps, duration_s=duration_s, max_requests=max_requests)
    builtin = builtin_workloads()
    path = builtin.get(workload) or Path(workload)
    if not path.is_file():
        raise InputError(f"unknown workload {workload!r}: not a built-in ({', '.join(builtin)}) and no such file",
                         where="--workload")
    if _is_spec(path):
        spec = load_spec(path)
        if qps is not None:
            spec = dataclasses.replace(spec, arrivals=dataclasses.replace(spec.arrivals, rate_qps=qps))
        rate = spec.arrivals.rate_qps
        if duration_s is not None:
            n = int(math.ceil(rate * duration_s * (1 + _SPARE_FRACTION))) + _SPARE_MIN
        else:
            n = max_requests or DEFAULT_SYNTH_REQUESTS
        if max_requests is not None:
            n = min(n, max_requests) if duration_s is None else n
        table = synthesize(spec, n, seed)
        table.meta["workload"] = spec.name
    else:
        table = read_trace(path)
        table.meta["workload"] = path.name
        if qps is not None:
            table = scale_rate(table, qps)
    if duration_s is not None:
        last = float(table.rows["arrival_s"][-1])
        if _is_spec(path) and last < duration_s:
            raise InputError(f"{n} synthesized requests end at {last:.1f} s, before the {duration_s:g} s asked for "
                             "(a very bursty spec); give --requests or a shorter --duration", where="--duration")
        table = window(table, 0.0, duration_s)
    if max_requests is not None and len(table) > max_requests:
        import numpy as np

        table = table.take(np.arange(max_requests))
    return table
