"""Synthetic RunResults built by hand for the results-layer tests (no engine), and checks of the builder.

`make_run` gives a small, self-consistent run: contiguous steps whose STEP_PARTS sum to their
duration, requests with one single-token request (no TPOT) and one without a first token (NaN),
per-step action tables for two components, energy by component and action, and a summary holding
every key of `report.SUMMARY_KEYS`, computed from the arrays the way the engine is meant to.
"""

from __future__ import annotations

import numpy as np
import pytest

from tokenstack_sim.results.report import SUMMARY_KEY_NAMES
from tokenstack_sim.results.result import REQUEST_DTYPE, STEP_DTYPE, STEP_PARTS, RunResult
from tokenstack_sim.runtime.metrics import summarize

pytestmark = pytest.mark.unit

ENERGY_CLASS = {"gpu": "gpu", "gpu_stacks": "stacks", "pim": "pim", "links": "links"}


def make_run(system="tokenstack-hbm4", model="llama-3.1-70b", workload="azure-conv-like", qps=2.0,
             seed=0, n_requests=24, n_steps=40) -> RunResult:
    rng = np.random.default_rng([seed, int(qps * 1000), len(system)])
    params = {"system": system, "model": model, "workload": workload, "qps": qps, "duration_s": 10.0,
              "seed": seed, "warmup_frac": 0.1, "drain_frac": 0.1, "slo_ttft_s": 2.0, "slo_tpot_s": 0.1,
              "scheduler": {"max_num_seqs": 64, "token_budget": 2048}}

    req = np.zeros(n_requests, REQUEST_DTYPE)
    req["request_id"] = np.arange(n_requests)
    req["arrival_s"] = np.sort(rng.uniform(0, 10, n_requests))
    req["input_tokens"] = rng.integers(10, 500, n_requests)
    req["output_tokens"] = rng.integers(2, 50, n_requests)
    req["output_tokens"][3] = 1
    ttft = rng.uniform(0.05, 0.5, n_requests) / qps
    tpot = rng.uniform(0.01, 0.06, n_requests)
    req["first_token_s"] = req["arrival_s"] + ttft
    req["finish_s"] = req["first_token_s"] + tpot * (req["output_tokens"] - 1)
    req["first_token_s"][5] = np.nan
    req["preemptions"][7] = 2
    req["prefix_hit_tokens"] = rng.integers(0, 10, n_requests) * 16
    req["slo_met"] = (ttft <= 2.0) & (tpot <= 0.05)

    steps = np.zeros(n_steps, STEP_DTYPE)
    dur = rng.uniform(0.01, 0.05, n_steps)
    steps["end_s"] = np.cumsum(dur)
    steps["start_s"] = steps["end_s"] - dur
    shares = rng.dirichlet(np.ones(len(STEP_PARTS)), n_steps)
    shares[::7, 2:4] = 0.0  # some steps without PIM work
    shares /= shares.sum(axis=1, keepdims=True)
    for i, part in enumerate(STEP_PARTS):
        steps[part] = shares[:, i] * dur
    steps["batch_size"] = rng.integers(1, 64, n_steps)
    steps["new_tokens"] = steps["batch_size"] + rng.integers(0, 500, n_steps)
    steps["output_tokens"] = steps["batch_size"]
    steps["decode_seqs"] = steps["batch_size"] - 1
    steps["kv_blocks_in_use"] = np.minimum(np.cumsum(rng.integers(0, 30, n_steps)), 500)
    steps["num_waiting"] = rng.integers(0, 10, n_steps)
    steps["kv_tokens_attended"] = rng.uniform(1e3, 1e5, n_steps)
    steps["kv_tokens_attended_pim"] = steps["kv_tokens_attended"] * rng.uniform(0, 1, n_steps)

    gpu = np.zeros(n_steps, [("flops_bf16", np.float64), ("bytes_l2", np.float64)])
    gpu["flops_bf16"] = rng.uniform(1e12, 2e12, n_steps)
    gpu["bytes_l2"] = rng.uniform(1e9, 2e9, n_steps)
    stacks = np.zeros(n_steps, [("dram_act", np.float64), ("dram_rd_bytes", np.float64)])
    stacks["dram_act"] = rng.integers(1000, 9000, n_steps)
    stacks["dram_rd_bytes"] = rng.uniform(1e9, 1e10, n_steps)
    actions = {"gpu": gpu, "gpu_stacks": stacks}

    energy_pj = {"gpu": {"flops_bf16": 3.0e11, "bytes_l2": 4.0e10, "static": 2.0e11},
                 "gpu_stacks": {"dram_act": 1.5e10, "dram_rd": 9.0e10, "static": 3.0e10},
                 "pim": {"mac": 2.0e10 * (system != "gpu-hbm4"), "static": 5.0e9},
                 "links": {"allreduce": 1.0e10}}

    m = summarize(req, warmup_frac=0.1, drain_frac=0.1).as_dict()
    summary = {"requests": m["requests"], "duration_s": m["duration_s"],
               "output_tokens_per_s": m["output_tokens_per_s"], "total_tokens_per_s": m["total_tokens_per_s"]}
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        for stat in ("mean", "p50", "p90", "p99"):
            summary[f"{name}_{stat}"] = m[name][stat]
    summary["slo_attainment"] = float(req["slo_met"].mean())
    summary["preemptions"] = m["preemptions"]
    summary["output_tokens"] = int(req["output_tokens"].sum())
    by_class = {c: 0.0 for c in ("gpu", "stacks", "pim", "links")}
    for comp, acts in energy_pj.items():
        by_class[ENERGY_CLASS[comp]] += sum(acts.values()) * 1e-12
    summary["energy_j_total"] = sum(by_class.values())
    summary.update({f"energy_j_{c}": v for c, v in by_class.items()})
    summary["energy_per_output_token_j"] = summary["energy_j_total"] / summary["output_tokens"]
    summary["pim_attention_share"] = float(steps["kv_tokens_attended_pim"].sum() / steps["kv_tokens_attended"].sum())
    summary["kv_blocks_peak"] = int(steps["kv_blocks_in_use"].max())

    return RunResult(
        name=f"{system}/{model}/{workload}/q{qps:.2f}/s{seed}", status="ok", params=params,
        configs={"system": '{"name": "%s"}' % system, "model": '{"name": "%s"}' % model},
        provenance={"package_version": "0.1.0", "git_revision": "abc123", "created": "2026-01-01T00:00:00Z"},
        requests=req, steps=steps, actions=actions, energy_pj=energy_pj, summary=summary)


def make_does_not_fit(system="gpu-hbm4", model="gpt-3-175b", seed=0, qps=2.0) -> RunResult:
    return RunResult(
        name=f"{system}/{model}/azure-conv-like/q{qps:.2f}/s{seed}", status="does_not_fit",
        params={"system": system, "model": model, "workload": "azure-conv-like", "qps": qps, "seed": seed},
        reason="weights need 350.0 GB, the system holds 288.0 GB (short by 62.0 GB)",
        summary={"weights_bytes": 350e9})


def test_builder_is_consistent():
    run = make_run()
    parts = sum(run.steps[p] for p in STEP_PARTS)
    assert np.allclose(parts, run.steps["end_s"] - run.steps["start_s"], rtol=1e-12)
    assert set(run.summary) == set(SUMMARY_KEY_NAMES)
    assert run.same_content(make_run())
    assert not run.same_content(make_run(seed=1))
