"""Uncertainty injectors, robustness/resilience metrics and `tokenstack robustness` (issue 12)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.robust import metrics as rm
from tokenstack_sim.robust.injectors import parse_injector
from tokenstack_sim.robust.perturb import Perturbation, warp_arrivals
from tokenstack_sim.sim.engine import RunSpec, prepare, run_prepared
from _kv_checks import check_tiers_every_step  # tests/_kv_checks.py

SYSTEM, MODEL = "tokenstack-hbm4-1gpu", "llama-3.1-8b"
# a short loaded run with a small pool, so that demotions, promotions and preemptions all happen
BASE = dict(workload="azure-conv-like", qps=30.0, duration_s=6.0, seed=0, kv_blocks=1200)


@pytest.fixture(scope="module")
def prep():
    return prepare(SYSTEM, MODEL, kv_blocks=BASE["kv_blocks"])


@pytest.fixture(scope="module")
def nominal(prep):
    return run_prepared(prep, RunSpec(**BASE))


def _same(a, b) -> None:
    for f in a.requests.dtype.names:
        assert np.array_equal(a.requests[f], b.requests[f], equal_nan=True), f
    for f in a.steps.dtype.names:
        assert np.array_equal(a.steps[f], b.steps[f]), f
    for comp, arr in a.actions.items():
        for f in arr.dtype.names:
            assert np.array_equal(arr[f], b.actions[comp][f]), (comp, f)
    assert a.energy_pj == b.energy_pj
    assert {k: v for k, v in b.summary.items() if k in a.summary} == a.summary


ZERO = [dict(type="arrival_burst", magnitude=0.0, start_s=1, end_s=3),
        dict(type="rate_shift", magnitude=0.0, start_s=1),
        dict(type="output_length_misprediction", magnitude=0.0),
        dict(type="dma_slowdown", magnitude=0.0, start_s=1, end_s=3),
        dict(type="gpu_slowdown", magnitude=0.0, start_s=1, end_s=3),
        dict(type="refresh_storm", magnitude=0.0, start_s=1, end_s=3),
        dict(type="pim_layer_failure", magnitude=0.0, start_s=2),
        dict(type="stack_failure", magnitude=0.0, start_s=2)]


def test_zero_magnitude_injectors_leave_every_result_identical(prep, nominal):
    r = run_prepared(prep, RunSpec(**BASE, perturb=ZERO))
    _same(nominal, r)
    assert r.params["perturb"][0]["type"] == "arrival_burst"
    # and the step model is left as it was: a nominal run afterwards is still identical
    _same(nominal, run_prepared(prep, RunSpec(**BASE)))


def _window_mean_step(res, a, b):
    s = res.steps
    sel = (s["start_s"] >= a) & (s["end_s"] <= b) & (s["batch_size"] > 0)
    return float((s["end_s"][sel] - s["start_s"][sel]).mean())


def test_gpu_slowdown_lengthens_steps_in_its_window_only(prep, nominal):
    r = run_prepared(prep, RunSpec(**BASE, perturb=[dict(type="gpu_slowdown", magnitude=1.0, start_s=2, end_s=4)]))
    # decode steps are mostly memory-bound: half the FLOP/s lengthens them by less than 2x
    assert _window_mean_step(r, 2.1, 3.9) > 1.05 * _window_mean_step(nominal, 2.1, 3.9)
    before = r.steps["end_s"] < 2.0
    assert np.array_equal(r.steps[before], nominal.steps[:int(before.sum())])  # untouched before it starts
    assert r.summary["tpot_s_p99"] > nominal.summary["tpot_s_p99"]


def test_dma_slowdown_slows_migrations(prep, nominal):
    r = run_prepared(prep, RunSpec(**BASE, perturb=[dict(type="dma_slowdown", magnitude=3.0, start_s=0, end_s=100)]))
    assert nominal.steps["kv_migration_s"].sum() > 0
    assert r.steps["kv_migration_s"].sum() > 2.0 * nominal.steps["kv_migration_s"].sum()


def test_arrival_burst_raises_the_rate_and_the_queue(prep, nominal):
    inj = dict(type="arrival_burst", magnitude=1.0, start_s=1, end_s=3)
    r = run_prepared(prep, RunSpec(**BASE, perturb=[inj]))
    a0, a1 = nominal.requests["arrival_s"], r.requests["arrival_s"]
    assert np.array_equal(a1, warp_arrivals(a0, 1, 3, 2.0))
    assert np.count_nonzero((a1 >= 1) & (a1 < 3)) == np.count_nonzero((a0 >= 1) & (a0 < 5))
    assert r.summary["ttft_s_p99"] > nominal.summary["ttft_s_p99"]
    down = run_prepared(prep, RunSpec(**BASE, perturb=[dict(type="rate_shift", magnitude=-0.5, start_s=0)]))
    assert down.summary["offered_qps"] < 0.6 * nominal.summary["offered_qps"]


def test_warp_is_monotone_and_shifts_later_arrivals():
    t = np.linspace(0, 20, 201)
    w = warp_arrivals(t, 5.0, 8.0, 3.0)  # [5, 14) -> [5, 8), later ones 6 s earlier
    assert np.all(np.diff(w) >= 0)
    assert np.allclose(w[t < 5], t[t < 5]) and np.allclose(w[t >= 14], t[t >= 14] - 6.0)


def test_output_length_misprediction_feeds_the_eviction_oracle_only(prep, nominal):
    inj = dict(type="output_length_misprediction", magnitude=1.0)
    r = run_prepared(prep, RunSpec(**BASE, perturb=[inj]))
    assert r.summary["perturb_output_pred_mape"] > 0.3
    assert np.array_equal(r.requests["output_tokens"], nominal.requests["output_tokens"])  # true lengths served
    assert r.summary["kv_demotions"] != nominal.summary["kv_demotions"]  # the oracle's choices moved
    lru = dict(BASE, kv={"eviction": "lru"})
    p_lru = prepare(SYSTEM, MODEL, kv_blocks=BASE["kv_blocks"], kv={"eviction": "lru"})
    _same(run_prepared(p_lru, RunSpec(**lru)), run_prepared(p_lru, RunSpec(**lru, perturb=[inj])))  # LRU ignores it


def test_pim_layer_failure_loses_pim_kv_for_good(prep, nominal):
    r = run_prepared(prep, RunSpec(**BASE, perturb=[dict(type="pim_layer_failure", magnitude=1.0, start_s=2.0)]))
    s = r.summary
    assert s["perturb_pim_slots_lost"] == prep.tiers[0].blocks  # one unit spans every stack here
    assert s["perturb_requests_interrupted"] > 0 and s["perturb_kv_tokens_lost"] > 0
    after = r.steps["start_s"] > 2.0
    assert r.steps["kv_pim_blocks"][after].max() == 0
    assert r.steps["kv_tokens_attended_pim"][after].sum() == 0
    assert s["pim_attention_share"] < nominal.summary["pim_attention_share"]
    assert np.isfinite(r.requests["finish_s"]).all()


def test_stack_failure_loses_exactly_its_kv_and_weights(monkeypatch):
    from tokenstack_sim.hw.link import transfer_time_s
    from tokenstack_sim.hw.stack.energy import path_vector
    from tokenstack_sim.model.shapes import weight_bytes_total
    from tokenstack_sim.results.result import STEP_PARTS

    p = prepare("tokenstack-hbm4", MODEL, kv_blocks=4000)  # 8 GPUs, TP 8: one KV head per shard, 8 units
    sm = p.step_model
    assert sm.pim_units == 8 and sm.stacks_per_unit == 1
    seen = {}
    orig = Perturbation._fail

    def spy(self, inj, now_s, sched, rows):
        kv = self.kv
        seen["loc"] = kv.loc.copy()
        seen["holders"] = [list(h) if h else [] for h in kv.holders]
        seen["running"] = sched.running.tolist()
        seen["tables"] = {r: list(sched.block_tables[r]) for r in seen["running"]}
        out = orig(self, inj, now_s, sched, rows)
        seen["loc_after"] = kv.loc.copy()
        seen["running_after"] = sched.running.tolist()
        seen["tables_after"] = {r: list(sched.block_tables[r]) for r in seen["running_after"]}
        kv.check()
        return out

    monkeypatch.setattr(Perturbation, "_fail", spy)
    spec = dict(BASE, qps=40.0, kv_blocks=4000)
    r = run_prepared(p, RunSpec(**spec, perturb=[dict(type="stack_failure", magnitude=1.0, start_s=2.0, stack=3)]))
    loc, CAP = seen["loc"], 8
    lost = np.flatnonzero((loc == 3) | (loc == CAP))
    assert len(lost) and np.any((loc >= 0) & (loc != 3) & (loc != CAP))  # something survives elsewhere
    hit = sorted({h for b in lost.tolist() for h in seen["holders"][b]})
    assert sorted(set(seen["running"]) - set(seen["running_after"])) == hit
    assert r.summary["perturb_requests_interrupted"] == len(hit)
    assert (seen["loc_after"][lost] == -1).all()  # its KV: gone
    kept = np.flatnonzero((loc >= 0) & (loc != 3) & (loc != CAP))
    hit_set = set(hit)
    for b in kept.tolist():  # blocks on other stacks: where they were, unless only interrupted requests held
        if seen["loc_after"][b] != loc[b]:  # them and they were partial (unhashed: freed, as any preemption)
            assert seen["loc_after"][b] == -1 and set(seen["holders"][b]) <= hit_set
    assert np.count_nonzero(seen["loc_after"][kept] == loc[kept]) > 0
    for q in seen["running_after"]:
        assert seen["tables_after"][q] == seen["tables"][q]
    # its weights: reloaded from the host at the host link's rate, the engine stalled meanwhile
    sys_ = p.system
    nbytes = weight_bytes_total(p.model.config) / sys_.tp / sys_.gpu_stacks_per_gpu
    reload_s = float(transfer_time_s(sys_.host_link, nbytes))
    assert r.summary["perturb_reload_s"] == pytest.approx(reload_s, rel=1e-12)
    stall = np.flatnonzero(r.steps["batch_size"] == 0)
    assert len(stall) == 1
    st = r.steps[stall[0]]
    assert st["end_s"] - st["start_s"] == pytest.approx(reload_s, rel=1e-9)
    assert STEP_PARTS[5] == "other_s" and st["other_s"] == pytest.approx(reload_s, rel=1e-12)
    wr = path_vector("gpu_write")
    got = np.array([r.actions["gpu_stacks"][a][stall[0]] for a in r.actions["gpu_stacks"].dtype.names])
    assert np.allclose(got, nbytes * 8 * sys_.gpus * wr)
    assert np.isfinite(r.requests["finish_s"]).all()  # the run completes


def test_refresh_storm_recharacterizes_with_shorter_trefi():
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.hw.opcost import OpCosts
    from tokenstack_sim.hw.opcost.simulate import OpSpec
    from tokenstack_sim.robust.perturb import storm_stack
    from tokenstack_sim.sim.engine import serving_grid

    system = load_config(SYSTEM, kind="system")
    hot = storm_stack(system, system.gpu_stack, 1.0)
    assert hot.dram.n["nREFI"] == system.gpu_stack.dram.n["nREFI"] // 2
    assert hot.config.dram_set[:-2] == system.gpu_stack.config.dram_set  # the stack's own overrides kept
    op = OpSpec("stream", tier="pim")
    cold_t = OpCosts(system.gpu_stack, on_missing="characterize").table(op, serving_grid(op))
    hot_t = OpCosts(hot, on_missing="characterize").table(op, serving_grid(op))
    assert hot_t.time_ns[0][-1] > cold_t.time_ns[0][-1]  # more refresh, less bandwidth


def test_tool_time_misprediction_counts_more_mispredictions():
    spec = dict(workload="codewriter-like", qps=0.5, max_requests=4, seed=0, runtime="tokencake")
    p = prepare("h100-tokencake", "qwen2.5-14b")
    a = run_prepared(p, RunSpec(**spec))
    b = run_prepared(p, RunSpec(**spec, perturb=[dict(type="tool_time_misprediction", magnitude=1.5)]))
    assert b.summary["mispredictions"] > a.summary["mispredictions"]
    with pytest.raises(InputError, match="agent workload"):
        run_prepared(p, RunSpec(**spec | {"workload": "azure-conv-like", "runtime": "vllm", "max_requests": 4},
                                perturb=[dict(type="tool_time_misprediction", magnitude=1.0)]))


def _steps(ends, tokens):
    s = np.zeros(len(ends), [("end_s", float), ("output_tokens", np.int64), ("num_waiting", np.int64)])
    s["end_s"], s["output_tokens"] = ends, tokens
    return s


def test_recovery_is_measured_from_the_disruptions_end():
    ends = np.arange(0.05, 30, 0.1)
    nom = _steps(ends, np.full(len(ends), 10))
    tok = np.full(len(ends), 10)
    tok[(ends >= 5) & (ends < 8)] = 2  # the disruption, [5, 8)
    tok[(ends >= 8) & (ends < 11)] = 5  # still short after it ends, back from 11 s on
    pert = _steps(ends, tok)
    out = rm.recovery(nom, pert, 8.0, window_s=1.0, tolerance=0.1, hold_windows=3)
    assert out["recovered"] and out["recovery_s"] == pytest.approx(3.0)
    # the same series with the disruption said to end at 9.5: 1.5 s to recover
    assert rm.recovery(nom, pert, 9.5, window_s=1.0, tolerance=0.1, hold_windows=3)["recovery_s"] == pytest.approx(1.5)
    # never back within 10%: not recovered
    tok2 = tok.copy()
    tok2[ends >= 8] = 8
    assert not rm.recovery(nom, _steps(ends, tok2), 8.0)["recovered"]
    # a stack failure's disruption ends after its reload
    assert rm.disruption_end_s([dict(type="stack_failure", magnitude=1.0, start_s=4.0)],
                               {"perturb_reload_s": 0.25}) == pytest.approx(4.25)
    assert math.isinf(rm.disruption_end_s([dict(type="output_length_misprediction", magnitude=1.0)]))


def test_robustness_ratios():
    n = {"output_tokens_per_s": 100.0, "slo_attainment": 0.8, "energy_per_output_token_j": 2.0}
    p = {"output_tokens_per_s": 50.0, "slo_attainment": 0.4, "energy_per_output_token_j": 4.0}
    assert rm.robustness(n, p) == {"throughput_kept": 0.5, "slo_kept": 0.5, "energy_kept": 0.5}
    assert math.isnan(rm.robustness(n | {"slo_attainment": 0.0}, p)["slo_kept"])


@pytest.mark.parametrize("table, where", [
    (dict(type="gpu_slowdown", magnitude=1.0, start_s=1, end_s=2, bogus=1), "injector.bogus"),
    (dict(type="gpu_slowdonw", magnitude=1.0), "injector.type"),
    (dict(type="gpu_slowdown", start_s=1, end_s=2), "injector.magnitude"),
    (dict(type="gpu_slowdown", magnitude=-1.0, start_s=1, end_s=2), "injector.magnitude"),
    (dict(type="gpu_slowdown", magnitude=1.0, start_s=3, end_s=2), "injector.end_s"),
    (dict(type="gpu_slowdown", magnitude=1.0, start_s=1), "injector.end_s"),
    (dict(type="gpu_slowdown", magnitude=1.0, start_s=1, end_s=2, stack=0), "injector.stack"),
    (dict(type="stack_failure", magnitude=1.0, end_s=2), "injector.end_s"),
    (dict(type="refresh_storm", magnitude=1.0, start_s=1, end_s=2, tier="sid9"), "injector.tier"),
])
def test_bad_injector_keys_are_named(table, where):
    with pytest.raises(InputError) as e:
        parse_injector(table)
    assert e.value.where == where


def test_runspec_names_the_bad_injector_key(prep):
    with pytest.raises(InputError, match=r"perturb\[1\]\.stakc"):
        RunSpec(**BASE, perturb=[dict(type="gpu_slowdown", magnitude=0.5, start_s=0, end_s=1),
                                 dict(type="stack_failure", magnitude=1.0, stakc=2)])
    with pytest.raises(InputError, match="stack 9 does not exist"):
        run_prepared(prep, RunSpec(**BASE, perturb=[dict(type="stack_failure", magnitude=1.0, stack=9)]))


def test_robustness_cli_runs_a_study_and_reports(tmp_path, capsys):
    from _cli import tokenstack  # tests/_cli.py

    spec = tmp_path / "r.toml"
    spec.write_text(f"""schema_version = 1
systems = ["{SYSTEM}"]
models = ["{MODEL}"]
workloads = ["azure-conv-like"]
qps = [30.0]
seeds = [0]
duration_s = 4.0
kv_blocks = 1200
[robustness]
[[robustness.injectors]]
type = "stack_failure"
magnitudes = [0.0, 1.0]
start_s = 2.0
""")
    out = tmp_path / "study"
    code, _, err = tokenstack(capsys, "robustness", spec, "-j", "1", "--out", out)
    assert code == 0, err
    doc = json.loads((out / "robustness.json").read_text())
    assert len(doc["rows"]) == 1  # magnitude 0 is the nominal point itself
    row = doc["rows"][0]
    assert row["type"] == "stack_failure" and row["kv_tokens_lost"] > 0
    assert row["disruption_end_s"] > 2.0
    code, stdout, err = tokenstack(capsys, "report", out)
    assert code == 0, err
    assert "Robustness" in stdout and (out / "report" / "robustness_heatmap_slo_kept.png").is_file()
    bad = tmp_path / "bad.toml"
    bad.write_text(spec.read_text().replace("start_s = 2.0", "start_s = 2.0\nwhen = 3"))
    code, _, err = tokenstack(capsys, "robustness", bad, "--out", tmp_path / "x")
    assert code == 2 and "robustness.injectors[0].when" in err


def test_dma_slowdown_reaches_the_capacity_offload_path(prep):
    """TokenCake's offload path to the capacity layers (built before the window opens, as a runtime builds
    it at the start of a run) takes (1 + m) x the time while a DMA slow-down is on, and its nominal time
    after."""
    from tokenstack_sim.robust.injectors import parse_injectors
    from tokenstack_sim.runtime.kv_transfer import capacity_path

    path = capacity_path(prep.step_model)
    n = 64
    down, up = path.time_s(n), path.time_up_s(n)
    assert down > 0 and up > 0
    pert = Perturbation(parse_injectors([dict(type="dma_slowdown", magnitude=3.0, start_s=1.0, end_s=2.0)]), prep, 0)
    try:
        pert.fire(1.0, None)
        assert path.time_s(n) == pytest.approx(4.0 * down) and path.time_up_s(n) == pytest.approx(4.0 * up)
        pert.fire(2.0, None)
        assert path.time_s(n) == pytest.approx(down) and path.time_up_s(n) == pytest.approx(up)
    finally:
        pert.finish()


def test_output_length_misprediction_replans_the_agent_critical_paths():
    """On an agent workload the output-length misprediction also scales the LLM calls' predicted times in
    the DAG's critical paths (what TokenCake's criticality and priorities read); unit factors give the DAG's
    own features back; the run still generates the true lengths."""
    from tokenstack_sim.robust.injectors import parse_injectors
    from tokenstack_sim.robust.perturb import replan
    from tokenstack_sim.workload import agents
    from tokenstack_sim.workload.agent_apps import instantiate

    t = instantiate(agents.codewriter(initial_tokens=800, template_tokens=64), 4, 2.0, seed=3)
    d = t.dag
    rem, slack = replan(d, np.ones(d.n_nodes))
    assert np.allclose(rem, d.remaining_s) and np.allclose(slack, d.slack_s, atol=1e-9)
    p = prepare("h100-tokencake", "qwen2.5-14b")
    pert = Perturbation(parse_injectors([dict(type="output_length_misprediction", magnitude=1.0)]), p, 0)
    d2 = pert.perturb_table(t).dag
    llm = d.kind == 0
    assert not np.allclose(d2.remaining_s[llm], d.remaining_s[llm])
    assert (d2.slack_s >= 0).all()
    for a in range(d.n_apps):  # every app keeps a critical path (slack 0)
        assert d2.slack_s[d2.app == a].min() == pytest.approx(0.0, abs=1e-9)
    # a call predicted twice as long as the DAG said: the weights above it on its path grow by that much
    f = np.where(llm, 2.0, 1.0)
    r2, _ = replan(d, f)
    assert (r2 >= d.remaining_s - 1e-9).all() and (r2 > d.remaining_s).any()
    spec = RunSpec("codewriter-like", warmup_frac=0.0, drain_frac=0.0, runtime="tokencake", seed=0)
    res = run_prepared(p, dataclasses.replace(spec, perturb=[dict(type="output_length_misprediction",
                                                                    magnitude=1.0)]), table=t)
    assert res.summary["output_tokens"] == int(t.rows["output_tokens"].sum())


# offload_gain 0: every stall offloads (the capacity-tier store has copies when the stack fails); 1e6: none
# does, so the stalls' KV is held (pinned) when the PIM layers fail
@pytest.mark.parametrize("failure, gain", [(dict(type="stack_failure", magnitude=1.0, start_s=2.0), 0.0),
                                           (dict(type="pim_layer_failure", magnitude=1.0, start_s=2.0), 1e6)])
def test_failures_in_agent_runs_lose_kv_and_the_calls_recompute(monkeypatch, failure, gain):
    """TokenCake on tokenstack-hbm4 offloading to the capacity layers: a failure mid-run loses the KV on
    the failed locations (running calls' and the runtime's held KV), the tiers stay consistent at every
    step, every call still runs to its budget, a stack failure charges the weights' reload at the host
    link's rate as one stall step, and the apps end later than in the nominal run."""
    from tokenstack_sim.hw.link import transfer_time_s
    from tokenstack_sim.model.shapes import weight_bytes_total
    from tokenstack_sim.sim.step_cost import EngineOptions
    from tokenstack_sim.workload import agents
    from tokenstack_sim.workload.agent_apps import instantiate

    t = instantiate(agents.codewriter(initial_tokens=800, template_tokens=64), 4, 2.0, seed=3)
    p = prepare("tokenstack-hbm4", "llama-3.1-8b", options=EngineOptions(memory_timing="roofline"), kv_blocks=700)
    spec = RunSpec("codewriter-like", warmup_frac=0.0, drain_frac=0.0, kv_blocks=700, runtime="tokencake",
                   runtime_options={"offload_gain": gain}, seed=0)
    nom = run_prepared(p, spec, table=t)
    checks = check_tiers_every_step(monkeypatch)  # the perturbed run, checked at every step
    res = run_prepared(p, dataclasses.replace(spec, perturb=[failure]), table=t)
    p.step_model.kv.check()
    s = res.summary
    assert checks and s["output_tokens"] == int(t.rows["output_tokens"].sum())
    assert s["perturb_blocks_lost"] > 0 and s["perturb_kv_tokens_lost"] + s["perturb_held_kv_lost"] > 0
    assert s["app_makespan_mean_s"] > nom.summary["app_makespan_mean_s"]
    assert res.steps["new_tokens"].sum() > nom.steps["new_tokens"].sum()  # the lost KV is computed again
    if failure["type"] == "stack_failure":  # every stack of every GPU: the whole shard's weights over the host link
        system = p.system
        dt = float(transfer_time_s(system.host_link, float(weight_bytes_total(p.model.config)) / system.tp))
        assert s["perturb_reload_s"] == pytest.approx(dt)
        stall = res.steps[res.steps["batch_size"] == 0]
        assert np.isclose(stall["end_s"] - stall["start_s"], dt).sum() == 1
        assert s["perturb_store_blocks_lost"] > 0  # the offloaded copies in the capacity layers went with them
    else:
        assert s["perturb_pim_slots_lost"] > 0 and s["perturb_reload_s"] == 0
        assert s["perturb_held_kv_lost"] > 0  # stalls' held KV on the failed layers, let go


def test_reproduce_robustness_runs_again_the_points_that_lacked_an_op_cost(tmp_path, monkeypatch):
    """scripts/reproduce_robustness.py: points that failed for a missing op cost (the cache key changed
    during the run) are run again (the sweep characterizes what they read first), the retries are counted in
    the report, and a study with points that never finished says so in an INCOMPLETE line."""
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    import tokenstack_sim.robust.sweep as rsw

    path = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_robustness.py"
    spec = importlib.util.spec_from_file_location("reproduce_robustness", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calls = []

    def fake_run(rs, folder, **kw):  # nothing runs: the first call reports a missing op cost, then none
        calls.append(Path(folder).name)
        msg = "no characterized cost for attention-x on hbm4 (key 0123); run `tokenstack characterize` first"
        return SimpleNamespace(errors=[("a", msg), ("b", "another error")] if len(calls) == 1 else []), []

    monkeypatch.setattr(rsw, "run_robustness", fake_run)
    out = tmp_path / "r.md"
    assert mod.main(["--quick", "--no-agent", "--dir", str(tmp_path / "d"), "--out", str(out)]) == 0
    assert calls == ["kv", "kv"]  # run again once: the second attempt had no missing-cost failure
    text = out.read_text()
    assert "1 kv point runs failed for a missing op cost and were run again" in text
    assert "**INCOMPLETE:" in text  # nothing finished here
