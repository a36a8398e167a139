"""The serve loop's fast path for runs of pure-decode steps gives the same run as step by step.

`serve(..., fast_forward=True)` schedules runs of pure-decode steps of an unchanged running set through
`VllmScheduler.decode_run_length` / `decode_step`; every record must match the step-by-step path:
requests and steps tables (1e-12 relative), actions (1e-9), summary (1e-9). Cases: azure-conv-like on
the three compared systems, a tight pool with preemptions, and mooncake-conv-like (prefix hashes).
"""

import numpy as np
import pytest

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.runtime.scheduler import VllmScheduler
from tokenstack_sim.sim.engine import RunSpec, prepare, run_prepared
from tokenstack_sim.sim.step_cost import EngineOptions
from tokenstack_sim.workload.source import load_workload

MODEL = "llama-3.1-8b"
ROOFLINE = EngineOptions(memory_timing="roofline")


def _largest_request_blocks(table, bs=16) -> int:
    return int((-(-(table.rows["input_tokens"] + table.rows["output_tokens"]) // bs)).max())


def _close(a, b, rtol, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    for f in a.dtype.names:
        x, y = a[f], b[f]
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=0, equal_nan=True, err_msg=f"{what}.{f}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{what}.{f}")


def _same(fast, slow):
    assert fast.status == slow.status == "ok"
    _close(fast.requests, slow.requests, 1e-12, "requests")
    _close(fast.steps, slow.steps, 1e-12, "steps")
    assert fast.actions.keys() == slow.actions.keys()
    for c in fast.actions:
        _close(fast.actions[c], slow.actions[c], 1e-9, f"actions.{c}")
    assert fast.summary.keys() == slow.summary.keys()
    for k, v in slow.summary.items():
        w = fast.summary[k]
        if isinstance(v, float) and np.isnan(v):
            assert np.isnan(w), k
        else:
            assert w == pytest.approx(v, rel=1e-9, abs=0), k


def _both(prep, spec, table, monkeypatch):
    slow = run_prepared(prep, spec, table=table, fast_forward=False)
    taken = []
    orig = VllmScheduler.decode_step

    def counted(self, j):
        b = orig(self, j)
        taken.append(b is not None)
        return b

    monkeypatch.setattr(VllmScheduler, "decode_step", counted)
    fast = run_prepared(prep, spec, table=table, fast_forward=True)
    _same(fast, slow)
    assert sum(taken) > len(slow.steps) // 4, "the fast path should take a good share of the steps"
    return fast


@pytest.mark.parametrize("system", ["tokenstack-hbm4", "attacc-hbm4", "gpu-hbm4"])
def test_fast_forward_azure_conv(opcost_cache, monkeypatch, system):
    table = load_workload("azure-conv-like", seed=3, duration_s=60.0)
    prep = prepare(load_config(system, kind="system"), MODEL, options=ROOFLINE)
    res = _both(prep, RunSpec("azure-conv-like", seed=3, duration_s=60.0), table, monkeypatch)
    assert len(res.steps) > 1000


def test_fast_forward_under_preemption(opcost_cache, monkeypatch):
    table = load_workload("azure-conv-like", seed=1, duration_s=30.0)
    kv_blocks = _largest_request_blocks(table) + 64  # tight: the newest running request is preempted
    prep = prepare(load_config("tokenstack-hbm4", kind="system"), MODEL, options=ROOFLINE, kv_blocks=kv_blocks)
    res = _both(prep, RunSpec("azure-conv-like", seed=1, duration_s=30.0, kv_blocks=kv_blocks), table, monkeypatch)
    assert res.summary["preemptions"] > 0


def test_fast_forward_mooncake_prefix(opcost_cache, monkeypatch):
    table = load_workload("mooncake-conv-like", seed=2, duration_s=45.0)
    kv_blocks = _largest_request_blocks(table) + 2000  # bounded: cached blocks get evicted and reused
    prep = prepare(load_config("tokenstack-hbm4", kind="system"), MODEL, options=ROOFLINE, kv_blocks=kv_blocks)
    res = _both(prep, RunSpec("mooncake-conv-like", seed=2, duration_s=45.0, kv_blocks=kv_blocks), table, monkeypatch)
    assert res.summary["prefix_hit_rate"] > 0
