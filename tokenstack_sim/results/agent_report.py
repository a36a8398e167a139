"""The table of agent-application runs: per run, app makespans, effective KV utilization, what the
runtime moved and how often its predictions missed (summary keys written by runtime/agent_loop.py and
the runtimes). Rendered with results/report.py's markdown / csv / json writer.

Columns: system, runtime, workload, rate (apps/s), apps, makespan mean / p99 (s), effective KV
utilization and the share of KV memory held idle by pinned agents (%), prompt tokens computed / prompt
tokens (the rest hit the prefix cache or came back from the store), preemptions, offloaded / uploaded GB
(whole system), mispredictions, late and early uploads, stalls whose KV was away at the return for
lack of memory, seconds calls waited for their KV (loads + uploads in flight).
"""

from __future__ import annotations

from tokenstack_sim.results.report import _render

COLUMNS = (
    ("system", "system", False, lambda r, s: r.params.get("system")),
    ("runtime", "runtime", False, lambda r, s: r.params.get("runtime", "vllm")),
    ("workload", "workload", False, lambda r, s: r.params.get("workload")),
    ("apps_per_s", "apps/s", True, lambda r, s: r.params.get("qps")),
    ("apps", "apps", True, lambda r, s: s.get("apps")),
    ("makespan_mean_s", "makespan mean s", True, lambda r, s: s.get("app_makespan_mean_s")),
    ("makespan_p99_s", "makespan p99 s", True, lambda r, s: s.get("app_makespan_p99_s")),
    ("kv_effective_pct", "eff. KV util %", True, lambda r, s: _pct(s.get("kv_effective_utilization"))),
    ("kv_idle_pinned_pct", "KV held idle %", True, lambda r, s: _pct(s.get("kv_idle_pinned_share"))),
    ("prompt_computed_pct", "prompt computed %", True,
     lambda r, s: _pct(s["prompt_tokens_computed"] / s["prompt_tokens"]) if s.get("prompt_tokens") else None),
    ("preemptions", "preempt.", True, lambda r, s: s.get("preemptions")),
    ("offload_gb", "offload GB", True, lambda r, s: _gb(s.get("offload_bytes"))),
    ("upload_gb", "upload GB", True, lambda r, s: _gb(s.get("upload_bytes"))),
    ("mispredictions", "mispred.", True, lambda r, s: s.get("mispredictions")),
    ("late_uploads", "late", True, lambda r, s: s.get("late_uploads")),
    ("early_uploads", "early", True, lambda r, s: s.get("early_uploads")),
    ("kv_away", "KV away", True, lambda r, s: s.get("kv_away_at_return")),
    ("kv_wait_s", "KV wait s", True, lambda r, s: _wait(s)),
)


def _wait(s):
    """Seconds calls waited for their KV: on loads from the store plus on uploads in flight."""
    if "load_wait_s" not in s and "upload_wait_s" not in s:
        return None
    return s.get("load_wait_s", 0.0) + s.get("upload_wait_s", 0.0)


def _pct(x):
    return None if x is None else 100.0 * x


def _gb(x):
    return None if x is None else x / 1e9


def is_agent_run(run) -> bool:
    return run.status == "ok" and "app_makespan_mean_s" in run.summary


def agent_table(runs, fmt: str = "markdown") -> str:
    rows = [[f(r, r.summary) for _, _, _, f in COLUMNS] for r in runs if is_agent_run(r)]
    return _render([c[0] for c in COLUMNS], [c[1] for c in COLUMNS], [c[2] for c in COLUMNS], rows, fmt)
