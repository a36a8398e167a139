"""The table of All-Gather round runs (workload/allgather.py) and the agent-count capacity search.

Per run: system, runtime, workload, agents, rounds; prefill time per round (a round's release to its
last call's first token, mean over rounds >= 1, where outputs are reused), round span (release to the
last call's end), p95 TTFT of those rounds, SLO attainment; per-agent KV storage (MiB: the blocks every
agent's cache takes when all are resident, counted exactly as distinct block contents,
`runtime.collective.round_storage`, largest round, over agents); compression of the reused region
(logical blocks / stored blocks: 1 for per-agent copies, master + diffs for tokendance) and the reuse
work the engine charged (s). The table is rebuilt from the run's parameters (same seed, same table).

`agents_capacity`: the largest number of agents whose calls meet the SLO, by `sim.capacity.
capacity_search` with the agent count as its "rate" (whole counts, unit "agents"; `tokenstack capacity
--workload generative-agents-like --runtime ...` and scripts/reproduce_tokendance.py both call it).
"""

from __future__ import annotations

import dataclasses

from tokenstack_sim.errors import InputError
from tokenstack_sim.results.report import _render

MIB = 2 ** 20


def is_allgather_run(run) -> bool:
    from tokenstack_sim.workload.allgather import is_allgather_workload

    return run.status == "ok" and is_allgather_workload(str(run.params.get("workload")))


def table_of(run):
    from tokenstack_sim.workload.allgather import load_allgather

    p = run.params
    return load_allgather(p["workload"], seed=int(p.get("seed", 0)), max_requests=p.get("max_requests"))


def run_figures(run, table=None, block_bytes: float | None = None) -> dict:
    """The figures of one All-Gather run (module docstring)."""
    from tokenstack_sim.runtime.collective import round_metrics, round_storage

    table = table if table is not None else table_of(run)
    s = run.summary
    bs = int((run.params.get("scheduler") or {}).get("block_size", 16))
    rt = run.params.get("runtime", "vllm")
    opts = run.params.get("runtime_options") or {}
    layout = "tokendance" if rt == "tokendance" else "private"
    storage = round_storage(table, bs, layout, opts.get("recompute_ratio", 0.15))
    per_agent = max(x["per_agent_blocks"] for x in storage)
    out = dict(round_metrics(table, run.requests))
    out.update(agents=table.ag.params.agents, rounds=table.ag.params.rounds, per_agent_blocks=per_agent,
               per_agent_mib=per_agent * block_bytes / MIB if block_bytes else None,
               compression=s.get("compression", 1.0) if rt in ("pic", "tokendance") else None,
               reuse_step_s=s.get("reuse_step_s"), recompute_tokens=s.get("recompute_tokens"),
               fallback_calls=s.get("fallback_calls"), slo_attainment=s.get("slo_attainment"))
    return out


COLUMNS = (
    ("system", "system", False), ("runtime", "runtime", False), ("workload", "workload", False),
    ("agents", "agents", True), ("rounds", "rounds", True), ("round_prefill_s", "prefill/round s", True),
    ("round_span_s", "round span s", True), ("ttft_p95_s", "TTFT p95 s", True),
    ("slo_pct", "SLO met %", True), ("per_agent_blocks", "KV blocks/agent", True),
    ("per_agent_mib", "KV MiB/agent", True), ("compression", "R compression", True),
    ("reuse_step_s", "reuse work s", True), ("fallback_calls", "no-reuse calls", True),
)


def block_bytes_of(run) -> float:
    """Bytes of one KV block of the run's model (all layers, K and V, every KV head: summed over GPUs)."""
    from tokenstack_sim.config.loader import load_config

    m = load_config(str(run.params["model"]), kind="model").config
    bs = int((run.params.get("scheduler") or {}).get("block_size", 16))
    return 2.0 * m.num_layers * m.num_kv_heads * m.head_dim * m.dtype.kv_bytes * bs


def allgather_table(runs, fmt: str = "markdown") -> str:
    rows = []
    for r in runs:
        if not is_allgather_run(r):
            continue
        f = run_figures(r, block_bytes=block_bytes_of(r))
        f.update(system=r.params.get("system"), runtime=r.params.get("runtime", "vllm"),
                 workload=r.params.get("workload"),
                 slo_pct=None if f["slo_attainment"] is None else 100 * f["slo_attainment"])
        rows.append([f.get(c[0]) for c in COLUMNS])
    return _render([c[0] for c in COLUMNS], [c[1] for c in COLUMNS], [c[2] for c in COLUMNS], rows, fmt)


class _Ceiling(Exception):
    pass


def agents_capacity(prep, spec, *, start: int = 8, tolerance: float = 0.05, target: float = 0.9,
                    max_agents: int | None = None, progress=None, runs_out: list | None = None, seeds: int = 1):
    """Largest agent count meeting the SLO (module docstring); `spec.max_requests` is replaced per probe.
    Returns the `CapacityResult` (capacity_qps / failing_qps are agent counts). ``max_agents``: probes
    above it are not served; a search that gets there ends with status "above_range" (the capacity is at
    least the largest passing count, kept in capacity_qps; its probes in ``probes``)."""
    from tokenstack_sim.sim.capacity import CapacityResult, capacity_search, probe
    from tokenstack_sim.sim.engine import run_prepared

    probes, served = [], []

    def serve(x, seeds):
        n = int(x)  # whole counts (capacity_search integer=True), at least 2 (`start` >= 2)
        if max_agents is not None and n > max_agents:
            raise _Ceiling()
        runs = [run_prepared(prep, dataclasses.replace(spec, max_requests=n, seed=s)) for s in seeds]
        probes.append(probe(float(n), [float(r.summary.get("slo_attainment", float("nan"))) for r in runs], target))
        served.extend(runs)
        if runs_out is not None:
            runs_out.extend(runs)
        return runs

    if not (isinstance(start, (int, float)) and start >= 2):
        raise InputError(f"expected a first agent count >= 2, got {start!r}", where="--qps-start")
    if max_agents is not None and max_agents < 2:
        raise InputError(f"expected an agent count >= 2, got {max_agents!r}", where="--max-agents")
    try:
        return capacity_search(prep, spec, qps_start=float(start), tolerance=tolerance, target=target, seeds=seeds,
                               serve=serve, progress=progress, unit="agents", integer=True)
    except _Ceiling:
        res = CapacityResult(prep.system.name, prep.model.config.name, target, "above_range", seeds=seeds,
                             unit="agents")
        res.probes = probes
        res.runs = served
        ok = [p.qps for p in probes if p.passes]
        res.capacity_qps = max(ok) if ok else float("nan")
        res.reason = f"still meets the SLO at {res.capacity_qps:g} agents; probes stop at {max_agents}"
        return res
