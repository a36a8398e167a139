"""Built-in agent workloads by name, and the `--workload` / `--qps` / `--duration` / `--requests` reading
for them (called from `workload.source.load_workload`).

Names: ``codewriter-like`` (TokenCake's CodeWriter DAG), ``deep-research-like``, ``random-dag`` (a new
random DAG per app), or a path to a tokencake_dag CSV file; ``generative-agents-like`` and
``agentsociety-like`` are All-Gather round simulations (allgather.py; ``max_requests`` = agents). For these, ``qps`` is the *application*
arrival rate (apps/s, Poisson), ``max_requests`` the number of apps, ``duration_s`` the window in which
apps arrive. Without any of them: 24 apps (TokenCake's preflight workload, serving.md §3.1) at 0.5
apps/s (the middle of its 0.1 / 0.5 / 1.0 apps/s).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload import agents
from tokenstack_sim.workload.agent_apps import AgentTable, instantiate
from tokenstack_sim.workload.allgather import is_allgather_workload, load_allgather

# serving.md §3.1: TokenCake's preflight workload runs 24 DAGs at 0.1 / 0.5 / 1.0 apps/s
DEFAULT_APPS = 24
DEFAULT_APP_RATE = 0.5


def _random(rng: np.random.Generator):
    return agents.random_dag(rng)


AGENT_WORKLOADS = {
    "codewriter-like": lambda: agents.codewriter(),
    "deep-research-like": lambda: agents.deep_research(),
    "random-dag": lambda: _random,
}


def is_agent_workload(workload: str) -> bool:
    if workload in AGENT_WORKLOADS or is_allgather_workload(workload):
        return True
    p = Path(workload)
    return p.suffix == ".csv" and p.is_file() and agents.is_dag_csv(p)


def load_agent_workload(workload: str, *, seed: int = 0, qps: float | None = None, duration_s: float | None = None,
                        max_requests: int | None = None, arrival: str = "poisson") -> AgentTable:
    """The apps of an agent workload (module docstring)."""
    if is_allgather_workload(workload):  # barrier-synced rounds (allgather.py): --requests = agents
        return load_allgather(workload, seed=seed, qps=qps, duration_s=duration_s, max_requests=max_requests)
    template = AGENT_WORKLOADS[workload]() if workload in AGENT_WORKLOADS else agents.read_dag_csv(workload)
    rate = DEFAULT_APP_RATE if qps is None else float(qps)
    if max_requests is not None:
        n = int(max_requests)
    elif duration_s is not None:
        n = int(math.ceil(rate * duration_s * 1.25)) + 8  # enough Poisson arrivals to cover the window
    else:
        n = DEFAULT_APPS
    if n < 1:
        raise InputError(f"expected at least 1 app, got {n}", where="--requests")
    name = workload if workload in AGENT_WORKLOADS else Path(workload).stem
    table = instantiate(template, n, rate, seed=seed, arrival=arrival, name=name)
    if duration_s is not None and max_requests is None:
        keep = table.dag.app_arrival_s < duration_s
        if not keep.any():
            raise InputError(f"no app arrives within {duration_s:g} s at {rate:g} apps/s", where="--duration")
        n_keep = int(keep.sum())
        if n_keep < n:
            table = instantiate(template, n_keep, rate, seed=seed, arrival=arrival, name=name)
    table.meta["workload"] = name
    return table
