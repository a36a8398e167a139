"""The serving engine (sim/engine.py, sim/step_cost.py) against hand arithmetic and conservation laws.

- One request served alone: TTFT and TPOT equal, to float rounding, step times recomputed here from the
  GPU roofline formulas (tile-quantized GEMM efficiency, peak FLOPs, eta_bw x the stacks' bandwidth,
  launch overhead), the ring all-reduce and the characterized cost tables (PIM attention; the stacks'
  stream costs on the characterized path). The GEMM shapes and byte counts are written out here from the
  model's TOML fields, not taken from model/ops.py.
- Conservation on a real workload with preemption: every request finishes exactly once, the generated
  tokens are the requested ones, the KV pool ends empty, and the KV written shows in the counted actions
  and the energy (exact byte counts for the GPU stacks, the PIM device and its link).
- Determinism: same seed, same content (also through HDF5); another seed differs.
- KV tiers and the does-not-fit result.

Most runs use EngineOptions(memory_timing="roofline") and Llama-3.1-8B so that only the small PIM
attention tables are characterized (into the session's `opcost_cache`); two cases run the characterized
stream path (gpu-hbm4's stream-capacity table, tokenstack-hbm4's stream-capacity and stream-pim tables:
~10 s per table, once per session).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.gpu.roofline import gemm_compute_efficiency
from tokenstack_sim.hw.link import allreduce_time_s, link_energy_pj, transfer_time_s
from tokenstack_sim.hw.opcost import OpCosts
from tokenstack_sim.hw.opcost.simulate import OpSpec
from tokenstack_sim.hw.stack.energy import energy_table_pj
from tokenstack_sim.results.h5 import read_runs, write_runs
from tokenstack_sim.results.result import STEP_PARTS
from tokenstack_sim.runtime import scheduler as scheduler_mod
from tokenstack_sim.sim.engine import RunSpec, activation_peak_bytes, prepare, run, run_many, run_prepared
from tokenstack_sim.sim.step_cost import EngineOptions
from tokenstack_sim.workload.source import load_workload
from tokenstack_sim.workload.table import RequestTable, empty_rows

pytestmark = pytest.mark.unit

MODEL = "llama-3.1-8b"
ROOFLINE = EngineOptions(memory_timing="roofline")
BYTES = {"bf16": 2, "fp16": 2, "fp8": 1}


@pytest.fixture(scope="module")
def cfg():
    c = load_config(MODEL, kind="model").config
    assert c.ffn == "gated" and c.norm != "layernorm" and not c.is_moe and not c.learned_positions
    assert not (c.qkv_bias or c.linear_bias)  # the hand shapes below leave biases out
    return c


def one_request(prompt: int, output: int, arrival_s: float = 0.25) -> RequestTable:
    rows = empty_rows(1)
    rows["arrival_s"] = arrival_s
    rows["input_tokens"] = prompt
    rows["output_tokens"] = output
    return RequestTable(rows)


class Hand:
    """Step times of one sequence on `system`, written out from the roofline and the cost tables."""

    def __init__(self, system, c, options: EngineOptions):
        self.s, self.c, self.timing, self.allreduce = system, c, options.memory_timing, options.allreduce
        timing = self.timing
        tp = system.tp
        self.tp, self.L, self.d, self.dh = tp, c.num_layers, c.hidden_size, c.head_dim
        self.hq = c.num_attention_heads // tp
        self.hkv = max(c.num_kv_heads // tp, 1)
        self.f = c.intermediate_size // tp
        self.V = c.vocab_size / tp
        self.wb, self.ab, self.kvb = BYTES[c.dtype.weight], BYTES[c.dtype.activation], BYTES[c.dtype.kv]
        self.kv = 2 * self.hkv * self.dh * self.kvb  # K and V of one token, one layer, one shard
        self.qo = 2 * self.hq * self.dh * self.ab  # q in, attention output out
        g = system.gpu
        eff = g.config.efficiency
        self.launch = g.launch_overhead_s
        self.peak_w, self.peak_a = g.peak_flops(c.dtype.weight), g.peak_flops(c.dtype.activation)
        self.eta_attn = eff.attention_compute
        self.bw = eff.memory_bw * system.gpu_bw_GBps * 1e9
        stack = system.gpu_stack
        self.weight_tier = "capacity" if stack.tier_units("capacity") else "pim"
        self.tables = {}
        if timing == "characterized":
            oc = OpCosts(stack, on_missing="characterize")
            tiers = {self.weight_tier} | ({"pim"} if stack.has_pim and system.pim_stack is None else set())
            self.tables = {t: oc.table(OpSpec("stream", tier=t)) for t in tiers}
        self.attacc = system.pim_stack is not None
        pim_stack = system.pim_stack if self.attacc else (stack if stack.has_pim else None)
        self.pim = None
        if pim_stack is not None:
            n = system.pim_stacks_per_gpu if self.attacc else system.gpu_stacks_per_gpu
            heads = math.ceil(self.hkv / n)
            self.token_frac = self.hkv / (n * heads)  # each stack holds this share of a head's tokens
            # interleaved placement: a sequence's partial results come from every PIM unit (groups of
            # hkv / heads stacks) and merge on the GPU: one head group's output + max + sum in FP32 each
            self.units = max(1, n // max(1, self.hkv // heads))
            self.partial = self.hq * (self.dh + 2) * 4.0
            op = OpSpec("attention", heads=heads, gqa=self.hq // self.hkv, head_dim=self.dh, kv_bytes=self.kvb)
            self.pim = OpCosts(pim_stack, on_missing="characterize").table(op)

    def mem(self, nbytes: float, tier: str) -> float:
        """One stream of `nbytes` spread over one GPU's stacks."""
        if self.timing == "roofline":
            return nbytes / self.bw
        t = self.tables[tier]
        per, top = nbytes / self.s.gpu_stacks_per_gpu, t.max_size
        k = math.floor(per / top) if per > top else 0  # back-to-back pieces of the grid's top size
        return (k * float(t.time(top)) + float(t.time(per - k * top))) * 1e-9

    def gemm(self, m, n, k, weight_elems, act_elems) -> float:
        eta = float(gemm_compute_efficiency(self.s.gpu, m, n))
        t_c = 2.0 * m * n * k / (eta * self.peak_w)
        t_m = self.mem(weight_elems * self.wb + act_elems * self.ab, self.weight_tier)
        return self.launch + max(t_c, t_m)

    def parts(self, T: int, ctx: int, emits: bool) -> dict:
        d, dh, hq, f, V, L = self.d, self.dh, self.hq, self.f, self.V, self.L
        qkv_n = (hq + 2 * self.hkv) * dh
        layer = (self.gemm(T, qkv_n, d, d * qkv_n + d, T * (d + qkv_n))  # + input RMSNorm weight
                 + self.gemm(T, d, hq * dh, hq * dh * d, T * (hq * dh + d))
                 + self.gemm(T, 2 * f, d, d * 2 * f + d, T * (d + f))  # gate|up; SiLU fused: writes f
                 + self.gemm(T, d, f, f * d, T * (f + d)))
        gemm = L * layer + (self.gemm(1, V, d, d * V + d, d + V) if emits else 0.0)  # LM head + final norm
        link = self.s.gpu_link
        ar = float(allreduce_time_s(link, T * d * self.ab, self.tp, self.allreduce))
        allreduce = (2 * L + 1) * ar  # two per layer + the embedding's
        if emits and self.tp > 1:  # ring all-gather of the logits
            allreduce += (self.tp - 1) * (V * self.ab / link.effective_bw_Bps + link.latency_s)
        other = self.mem(T * d / self.tp * self.wb, self.weight_tier)  # embedding rows
        gpu = pim = plink = 0.0
        if T == 1 and self.pim is not None:  # decode over KV on PIM units
            pim = float(self.pim.time((ctx + 1) * self.token_frac)) * 1e-9
            if self.attacc:
                plink = L * (float(transfer_time_s(self.s.pim_link, self.qo / 2 + self.kv))
                             + float(transfer_time_s(self.s.pim_link, self.qo / 2)))
            else:
                pim += self.mem(self.qo + self.kv, "pim")
            pim *= L
            if self.units > 1:  # the merge of the units' partial results: one GPU kernel per layer
                gpu = L * (self.launch + self.mem((self.units - 1) * self.partial, self.weight_tier))
        else:  # one GPU attention kernel per layer
            flops = 4.0 * hq * dh * T * (ctx + (T + 1) / 2)
            kv_tier = "pim" if self.s.gpu_stack.has_pim else self.weight_tier
            if self.attacc:
                t_m = float(transfer_time_s(self.s.pim_link, ctx * self.kv) if ctx else 0.0)
                t_m += float(transfer_time_s(self.s.pim_link, T * self.kv))
            else:
                t_m = (self.mem(ctx * self.kv, kv_tier) if ctx else 0.0) + self.mem(T * self.kv, kv_tier)
            t_m += self.mem(T * self.qo, self.weight_tier)
            gpu = L * (self.launch + max(flops / (self.eta_attn * self.peak_a), t_m))
        return {"gemm_s": gemm, "attention_gpu_s": gpu, "attention_pim_s": pim, "pim_link_s": plink,
                "allreduce_s": allreduce, "other_s": other, "kv_migration_s": 0.0}


CASES = [
    # system, memory timing, prompt, output tokens, token budget (None: the default 8192)
    ("gpu-hbm4", "roofline", 100, 5, None),
    ("gpu-hbm4", "roofline", 1000, 3, 512),  # two prefill chunks, 512 + 488
    ("tokenstack-hbm4", "roofline", 1000, 5, 512),  # decode attention on the PIM SID
    ("attacc-hbm4", "roofline", 300, 5, None),  # decode attention on the PIM device, over its link
    ("gpu-hbm4", "characterized", 300, 4, None),  # the stacks' characterized stream costs
    ("tokenstack-hbm4", "characterized", 300, 4, None),  # ... from both tiers, KV written into the PIM SID
]


@pytest.mark.parametrize("system,timing,prompt,output,budget", CASES,
                         ids=[f"{c[0]}-{c[1]}-p{c[2]}" + ("-chunked" if c[4] else "") for c in CASES])
def test_single_request_ttft_tpot_by_hand(opcost_cache, cfg, system, timing, prompt, output, budget):
    s = load_config(system, kind="system")
    sched = {} if budget is None else {"max_num_batched_tokens": budget}
    # interleaved placement: the sequence's KV split evenly over the PIM units, as written out by hand
    prep = prepare(s, MODEL, options=EngineOptions(memory_timing=timing), scheduler=sched,
                   kv={"placement": "interleaved"})
    arrival = 0.25
    spec = RunSpec("one-request", warmup_frac=0.0, drain_frac=0.0)
    res = run_prepared(prep, spec, table=one_request(prompt, output, arrival))
    hand = Hand(s, cfg, prep.options)

    chunk = budget or prompt
    expect_steps = []  # (new tokens, context, emits)
    done = 0
    while done < prompt:
        t = min(chunk, prompt - done)
        expect_steps.append((t, done, done + t == prompt))
        done += t
    n_prefill = len(expect_steps)
    expect_steps += [(1, prompt + i, True) for i in range(output - 1)]
    steps = res.steps
    assert [(int(x["new_tokens"]), int(x["output_tokens"])) for x in steps] == [(t, int(e)) for t, _, e in expect_steps]

    parts = [hand.parts(*x) for x in expect_steps]
    for i, (row, p) in enumerate(zip(steps, parts)):
        for name in STEP_PARTS:
            assert row[name] == pytest.approx(p[name], rel=1e-12, abs=1e-18), (i, name)
        assert row["end_s"] - row["start_s"] == pytest.approx(sum(row[n] for n in STEP_PARTS), rel=1e-12)
    assert steps["start_s"][0] == arrival
    np.testing.assert_array_equal(steps["start_s"][1:], steps["end_s"][:-1])  # back to back, nothing else runs

    r = res.requests[0]
    ttft = sum(sum(p.values()) for p in parts[:n_prefill])
    assert r["first_token_s"] - r["arrival_s"] == pytest.approx(ttft, rel=1e-12)
    tpot = np.mean([sum(p.values()) for p in parts[n_prefill:]])
    assert (r["finish_s"] - r["first_token_s"]) / (output - 1) == pytest.approx(tpot, rel=1e-12)
    assert res.summary["ttft_s_mean"] == pytest.approx(ttft, rel=1e-12)
    assert res.summary["tpot_s_mean"] == pytest.approx(tpot, rel=1e-12)
    # attention bookkeeping: keys attended per step (all layers of one shard), and by PIM units
    L = cfg.num_layers
    np.testing.assert_array_equal(steps["kv_tokens_attended"], [(c + t) * L for t, c, _ in expect_steps])
    on_pim = [hand.pim is not None and t == 1 for t, _, _ in expect_steps]
    np.testing.assert_array_equal(steps["kv_tokens_attended_pim"],
                                  [(c + 1) * L if p else 0 for (t, c, _), p in zip(expect_steps, on_pim)])
    assert (steps["attention_pim_s"] > 0).tolist() == on_pim
    assert (steps["pim_link_s"] > 0).tolist() == [p and hand.attacc for p in on_pim]


# --------------------------------------------------------------------------------------- conservation

class _Recording(scheduler_mod.VllmScheduler):
    """The engine's scheduler, recording every finished request and keeping itself for inspection."""
    last = None

    def __init__(self, table, params):
        super().__init__(table, params)
        self.finished_ids: list[int] = []
        _Recording.last = self

    def finish_step(self, batch, end_time_s):
        done = super().finish_step(batch, end_time_s)
        self.finished_ids += np.asarray(done).tolist()
        return done


def _largest_request_blocks(table, block_size=16) -> int:
    rows = table.rows
    return int((-(-(rows["input_tokens"] + rows["output_tokens"]) // block_size)).max())


@pytest.fixture(scope="module")
def azure_table():
    return load_workload("azure-conv-like", seed=1, duration_s=20.0)


@pytest.mark.parametrize("system", ["gpu-hbm4", "tokenstack-hbm4", "attacc-hbm4"])
def test_conservation_under_preemption(opcost_cache, cfg, monkeypatch, azure_table, system):
    monkeypatch.setitem(scheduler_mod.SCHEDULERS, "vllm", _Recording)
    table = azure_table
    # a pool just above the largest request: requests wait and the newest running one is preempted
    kv_blocks = _largest_request_blocks(table) + 64
    s = load_config(system, kind="system")
    # KV kept as written and never migrated, so every written bit is a computed token's K/V (or q/out)
    prep = prepare(s, MODEL, options=ROOFLINE, kv_blocks=kv_blocks, kv={"demote_format": "fp16", "eviction": "none"})
    assert sum(t.blocks for t in prep.tiers) == kv_blocks
    res = run_prepared(prep, RunSpec("azure-conv-like", seed=1, duration_s=20.0, kv_blocks=kv_blocks), table=table)
    sched = _Recording.last
    n = len(table)
    assert res.summary["preemptions"] > 0, "the pool is meant to be tight enough to preempt"

    # every request finishes exactly once, having generated what it asked for
    assert sorted(sched.finished_ids) == list(range(n))
    req = res.requests
    np.testing.assert_array_equal(req["output_tokens"], table.rows["output_tokens"])
    np.testing.assert_array_equal(req["input_tokens"], table.rows["input_tokens"])
    asked = int(table.rows["output_tokens"].sum())
    assert int(res.steps["output_tokens"].sum()) == asked == res.summary["output_tokens"]
    assert np.all(np.isfinite(req["finish_s"]))
    has_out = req["output_tokens"] > 0
    assert np.all(req["arrival_s"][has_out] < req["first_token_s"][has_out])
    assert np.all(req["first_token_s"][has_out] <= req["finish_s"][has_out])
    assert int(req["preemptions"].sum()) == res.summary["preemptions"] == int(res.steps["preemptions"].sum())
    assert int(req["prefix_hit_tokens"].sum()) == int(res.steps["prefix_hit_tokens"].sum())
    # computed tokens: every prompt and every fed-back output, less prefix hits, plus recomputation
    fed = int((table.rows["input_tokens"] + np.maximum(table.rows["output_tokens"] - 1, 0)).sum())
    assert int(res.steps["new_tokens"].sum()) >= fed - int(req["prefix_hit_tokens"].sum())
    # the KV pool ends empty; no step used more blocks than the pool holds
    assert sched.pool.num_in_use == 0 and sched.pool.num_free == kv_blocks
    assert 0 < res.summary["kv_blocks_peak"] <= kv_blocks
    assert int(res.steps["kv_blocks_in_use"].max()) <= kv_blocks
    # steps are back to back or idle, never overlapping, and their parts sum to their length
    st = res.steps
    assert np.all(st["start_s"][1:] >= st["end_s"][:-1])
    parts = sum(st[p] for p in STEP_PARTS)
    np.testing.assert_allclose(st["end_s"] - st["start_s"], parts, rtol=1e-9, atol=1e-15)

    # the KV written (every computed token's K/V, once per layer and GPU) is in the counted actions
    h = Hand(s, cfg, ROOFLINE)
    L, g = cfg.num_layers, s.gpus
    new_tokens = float(st["new_tokens"].sum())
    decode = float(st["decode_seqs"].sum())
    acts, energy = res.actions, res.energy_pj
    if system == "gpu-hbm4":
        written = new_tokens * h.kv * L * g * 8
        comp = "gpu_stacks"
    elif system == "tokenstack-hbm4":  # the PIM path also moves q and the attention output through the SID
        comp = "gpu_stacks"
        # decode sequences whose KV is all in the capacity tier are attended by the GPU (no q/out write),
        # so the q/out part lies between none and every decode sequence's
        bits = float(acts[comp]["gpu_write_bits"].sum())
        assert new_tokens * h.kv * L * g * 8 < bits <= (new_tokens * h.kv + decode * h.qo) * L * g * 8 * (1 + 1e-9)
        written = bits
    else:  # AttAcc: all KV lives on the PIM device
        written = new_tokens * h.kv * L * g * 8
        comp = "pim"
        assert acts["gpu_stacks"]["gpu_write_bits"].sum() == 0
        link_bytes = float(acts["pim_link"]["link_bytes"].sum())
        assert link_bytes > new_tokens * h.kv * L * g  # the new KV and more (q, outputs, fetched context)
        assert energy["pim_link"]["link_bytes"] == pytest.approx(float(link_energy_pj(s.pim_link, link_bytes)))
        assert energy["pim_link"]["link_bytes"] > 0
    bits = float(acts[comp]["gpu_write_bits"].sum())
    assert bits == pytest.approx(written, rel=1e-9)
    stack = s.pim_stack if comp == "pim" else s.gpu_stack
    assert energy[comp]["gpu_write_bits"] == pytest.approx(bits * energy_table_pj(stack)["gpu_write_bits"], rel=1e-12)
    assert energy[comp]["gpu_write_bits"] > 0
    # the summary's energy is the sum of the breakdown
    total_j = sum(sum(v.values()) for v in energy.values()) * 1e-12
    assert res.summary["energy_j_total"] == pytest.approx(total_j, rel=1e-12)
    assert res.summary["energy_per_output_token_j"] == pytest.approx(total_j / res.summary["output_tokens"], rel=1e-12)
    if system != "gpu-hbm4":
        assert 0 < res.summary["pim_attention_share"] <= 1
    else:
        assert res.summary["pim_attention_share"] == 0


def test_tokens_computed_exactly_without_preemption(cfg, azure_table):
    """With room for everyone: each prompt and each fed-back output token computed exactly once."""
    res = run_prepared(prepare("gpu-hbm4", MODEL, options=ROOFLINE),
                       RunSpec("azure-conv-like", seed=1, duration_s=20.0), table=azure_table)
    assert res.summary["preemptions"] == 0
    rows = azure_table.rows
    fed = int((rows["input_tokens"] + np.maximum(rows["output_tokens"] - 1, 0)).sum())
    assert int(res.steps["new_tokens"].sum()) == fed - int(res.requests["prefix_hit_tokens"].sum())


# ---------------------------------------------------------------------------------------- determinism

def test_same_seed_same_content_also_through_hdf5(tmp_path):
    spec = RunSpec("azure-conv-like", duration_s=8.0, seed=3)
    a = run("gpu-hbm4", MODEL, spec, options=ROOFLINE)
    b = run("gpu-hbm4", MODEL, spec, options=ROOFLINE)
    assert a.status == "ok" and len(a.requests) > 10
    assert a.same_content(b) and b.same_content(a)
    path = write_runs(tmp_path / "a.h5", [a])
    (back,) = read_runs(path)
    assert back.same_content(b) and b.same_content(back)
    other = run("gpu-hbm4", MODEL, dataclasses.replace(spec, seed=4), options=ROOFLINE)
    assert not a.same_content(other) and not other.same_content(back)
    assert (len(a.requests) != len(other.requests)
            or not np.array_equal(a.requests["arrival_s"], other.requests["arrival_s"]))
    # a changed step model (overhead per step) is a different content under the same seed
    slower = run("gpu-hbm4", MODEL, spec, options=EngineOptions(memory_timing="roofline", step_overhead_s=1e-4))
    assert not a.same_content(slower)


def test_same_content_across_processes():
    """run_many's spawned workers (how `tokenstack demo` runs systems in parallel) give what this process
    gives."""
    spec = RunSpec("azure-conv-like", duration_s=5.0, seed=2)
    here = run("gpu-hbm4", MODEL, spec, options=ROOFLINE)
    there = run_many([("gpu-hbm4", MODEL, spec, ROOFLINE), ("gpu-hbm4", MODEL, dataclasses.replace(spec, seed=5),
                                                            ROOFLINE)], workers=2)
    assert there[0].same_content(here)
    assert there[1].params["seed"] == 5 and not there[1].same_content(here)


def test_pim_run_is_deterministic(opcost_cache):
    spec = RunSpec("azure-conv-like", duration_s=5.0, seed=0)
    prep = prepare("tokenstack-hbm4", MODEL, options=ROOFLINE)
    a, b = run_prepared(prep, spec), run_prepared(prep, spec)  # the memoized step parts must not leak
    c = run_prepared(prepare("tokenstack-hbm4", MODEL, options=ROOFLINE), spec)
    assert a.same_content(b) and a.same_content(c)
    assert a.summary["pim_attention_share"] > 0


# -------------------------------------------------------------------------------- KV tiers, fitting

def test_kv_blocks_by_hand(cfg):
    s = load_config("gpu-hbm4", kind="system")
    prep = prepare(s, MODEL, options=ROOFLINE)
    tp, L = s.tp, cfg.num_layers
    im = prep.step_model.im
    kv_tok = 2 * max(cfg.num_kv_heads // tp, 1) * cfg.head_dim * BYTES[cfg.dtype.kv]
    assert im.kv_tok_layer_bytes == kv_tok
    block_bytes = 16 * L * kv_tok
    from tokenstack_sim.model.shapes import weight_bytes_total

    act = activation_peak_bytes(im, 8192, 1024)
    # the largest op activation of an 8192-token prompt step (ffn_up/ffn_down: T x (d + f/tp)) + FP32 logits
    d, f = cfg.hidden_size, cfg.intermediate_size // tp
    assert act == pytest.approx(8192 * (d + f) * 2 + 1024 * cfg.vocab_size / tp * 4)
    usable = s.config.memory_utilization * s.capacity_per_gpu_bytes("gpu_capacity")
    blocks = int(usable - (weight_bytes_total(cfg) / tp + act)) // block_bytes
    assert [(t.name, t.blocks, t.pim) for t in prep.tiers] == [("gpu_capacity", blocks, False)]

    # an override is split over the tiers in proportion to their blocks, and adds up exactly
    ts = prepare("tokenstack-hbm4", MODEL, options=ROOFLINE, kv_blocks=1001, bind=False)
    assert [t.name for t in ts.tiers] == ["gpu_pim", "gpu_capacity"]
    assert sum(t.blocks for t in ts.tiers) == 1001
    full = prepare("tokenstack-hbm4", MODEL, options=ROOFLINE, bind=False).tiers
    share = full[0].blocks / (full[0].blocks + full[1].blocks)
    assert ts.tiers[0].blocks == pytest.approx(1001 * share, abs=1.5)
    at = prepare("attacc-hbm4", MODEL, options=ROOFLINE, bind=False)
    assert [t.name for t in at.tiers] == ["pim_device"] and at.tiers[0].pim


@pytest.mark.parametrize("bad", [0, -5])
def test_kv_blocks_override_must_be_positive(bad):
    with pytest.raises(InputError, match="kv.blocks"):
        prepare("gpu-hbm4", MODEL, options=ROOFLINE, kv_blocks=bad, bind=False)


def test_weights_that_do_not_fit_give_a_does_not_fit_result():
    small = load_config("gpu-hbm4", ["gpus=1", "tp=1", "gpu_stacks_per_gpu=1"], kind="system")
    res = run(small, "llama-3.1-70b", RunSpec("azure-conv-like", duration_s=5.0), options=ROOFLINE)
    assert res.status == "does_not_fit"
    assert "weights" in res.reason and "GB" in res.reason and small.name in res.reason
    assert len(res.requests) == 0 and len(res.steps) == 0
    assert res.summary == {"requests": 0}
    assert res.params["system"] == small.name and res.params["model"] == "llama-3.1-70b"
    # the 8B model does fit one GPU with one stack
    ok = run(small, MODEL, RunSpec("azure-conv-like", duration_s=5.0), options=ROOFLINE)
    assert ok.status == "ok" and ok.summary["requests"] > 0
