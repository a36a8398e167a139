"""tokenstack_sim/repro/static_batch.py: AttAcc's static-batch protocol through the step model.

- The decode steps' GPU attention on a GPU-only system with roofline stream timing equals a hand
  computation from the model's shape and the GPU's numbers: per step j, contexts input + j - 1, KV read
  B x ctx x kv bytes, new K/V and q/o B x kv bytes each, attention FLOPs 4 x heads x head_dim x B x
  (ctx + 1), memory time bytes / (bandwidth x efficiency), x layers, plus the launch.
- Tokens, steps and the prefill's context; static power alone gives static power x time.
- Capacity: with the check, a batch above the system's largest is refused with the block counts; without
  it (AttAcc's protocol) it runs, and `max_batch` still reports the system's own pool.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.repro import static_batch as sb
from tokenstack_sim.sim.step_cost import N_ACTIONS, EngineOptions

pytestmark = pytest.mark.unit

ROOF = EngineOptions(memory_timing="roofline")


def test_decode_attention_equals_a_hand_computation():
    system = load_config("gpu-a100a-hbm3", kind="system")
    model = load_config("gpt-3-175b", kind="model")
    B, I, O = 4, 64, 3
    r = sb.run_static(system, model, B, I, O, check_capacity=False, options=ROOF)
    cfg = model.config
    heads = cfg.num_kv_heads // system.tp  # 12 of GPT-3's 96 per GPU (MHA)
    kv_tok = 2 * heads * cfg.head_dim * 2  # K and V, BF16, per layer per GPU
    qo_tok = 2 * (cfg.num_attention_heads // system.tp) * cfg.head_dim * 2  # q in, output out
    coef = 4.0 * (cfg.num_attention_heads // system.tp) * cfg.head_dim
    gpu = system.gpu
    bw = system.gpu_bw_GBps * 1e9 * gpu.config.efficiency.memory_bw
    peak = gpu.peak_flops("bf16") * gpu.config.efficiency.attention_compute
    want = 0.0
    for j in range(1, O):
        ctx = I + j - 1
        t_m = (B * ctx * kv_tok) / bw + (B * kv_tok) / bw + (B * qo_tok) / bw
        t_c = coef * B * (ctx + 1) / peak
        want += (gpu.launch_overhead_s + max(t_c, t_m)) * cfg.num_layers
    assert r.decode_parts["attention_gpu_s"] == pytest.approx(want, rel=1e-9)
    assert r.decode_parts["attention_pim_s"] == 0.0
    assert r.tokens == B * O and r.steps == O
    assert r.decode_s == pytest.approx(sum(r.decode_parts.values()), rel=1e-12)
    assert r.tokens_per_s == pytest.approx(B * O / (r.prefill_s + r.decode_s))
    assert r.decode_tokens_per_s == pytest.approx(B * (O - 1) / r.decode_s)


def test_prefill_is_one_step_of_the_whole_batch():
    system = load_config("gpu-a100a-hbm3", kind="system")
    prep = sb.prepared(system, "gpt-3-175b", 2, 64, 2, check_capacity=False, options=ROOF)
    sm = prep.step_model
    t, _, _, _, _ = sm.step(np.full(2, 64.0), np.zeros(2), np.ones(2), 2 * math.ceil(64 / sm.block_size))
    r = sb.run_static(system, "gpt-3-175b", 2, 64, 2, check_capacity=False, options=ROOF)
    assert r.prefill_s == pytest.approx(float(t), rel=1e-12)


def test_static_power_alone_is_power_times_time():
    system = load_config("gpu-a100a-hbm3", kind="system")
    e = sb._energy(system, np.zeros(N_ACTIONS), 2.0)
    assert e["gpu"] == pytest.approx(system.gpu.static_power_w * system.gpus * 2.0)


def test_capacity_check_refuses_a_batch_above_the_largest_and_the_protocol_runs_it():
    system = load_config("gpu-a100a-hbm3", kind="system")
    one = sb.run_static(system, "gpt-3-175b", 1, 2048, 128, check_capacity=True, options=ROOF)
    assert one.fits and one.max_batch >= 1
    big = one.max_batch + 1
    refused = sb.run_static(system, "gpt-3-175b", big, 2048, 128, check_capacity=True, options=ROOF)
    assert not refused.fits and math.isnan(refused.tokens_per_s)
    assert f"at most {one.max_batch} requests" in refused.reason and "KV blocks" in refused.reason
    ran = sb.run_static(system, "gpt-3-175b", big, 2048, 128, check_capacity=False, options=ROOF)
    assert ran.fits and ran.max_batch == one.max_batch and ran.tokens_per_s > 0
    assert sb.blocks_per_request(2048, 128, 16) == math.ceil(2175 / 16)
    with pytest.raises(ValueError, match="batch"):
        sb.run_static(system, "gpt-3-175b", 0, 2048, 128, check_capacity=False, options=ROOF)


def test_reproduce_attacc_script_smoke(tmp_path, opcost_cache):
    """scripts/reproduce_attacc.py end to end (~10 s with an empty cost cache): the report has both
    protocols, the placement table and the gap lines; a bad --batches is named with exit status 2."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_attacc.py"
    spec = importlib.util.spec_from_file_location("reproduce_attacc", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "attacc.md"
    assert mod.main(["--batches", "1,8", "--out", str(out)]) == 0
    text = out.read_text()
    for part in ("## (a) Capacity enforced", "## (b) AttAcc's protocol", "PIM placement", "Placement order",
                 "published: up to 2.81x", "| AttAcc, base_die | 8 |"):
        assert part in text, part
    assert mod.main(["--batches", "0"]) == 2
