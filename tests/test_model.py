"""Model presets, derived sizes and the ops of one iteration, checked against hardware.md §4 and
model_shapes.csv (independent figures), and against brute-force arithmetic where a formula is used."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.model import IterationModel, expected_experts_touched, iteration_ops
from tokenstack_sim.model import shapes

pytestmark = pytest.mark.unit

# preset name -> row of ../shared/reference/model_shapes.csv
PRESETS = {"llama-3.1-8b": "Llama-3.1-8B", "llama-3.1-70b": "Llama-3.1-70B", "llama-2-70b": "Llama-2-70B",
           "qwen2.5-32b": "Qwen2.5-32B", "qwen2.5-72b": "Qwen2.5-72B", "mixtral-8x7b": "Mixtral-8x7B",
           "gpt-3-175b": "GPT-3-175B", "opt-66b": "OPT-66B", "llama-65b": "LLaMA-65B"}
SHAPE_COLUMNS = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim",
                 "intermediate_size", "vocab_size", "num_experts", "experts_per_token")


def model(name, *overrides):
    return load_config(name, list(overrides), kind="model").config


@pytest.fixture(scope="module")
def csv_rows(shared_dir):
    with open(shared_dir / "reference" / "model_shapes.csv", newline="") as fh:
        return {row["model"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize("name", PRESETS)
def test_every_model_preset_loads(name):
    r = load_config(name)
    assert r.config.name == name and r.config.kind == "model"
    assert "parameters:" in r.describe() and "bytes per token" in r.describe()
    json.dumps(r.as_dict())  # --json output is plain data


@pytest.mark.validation
@pytest.mark.parametrize("name", PRESETS)
def test_presets_match_the_csv(name, csv_rows):
    cfg, row = model(name), csv_rows[PRESETS[name]]
    for col in SHAPE_COLUMNS:
        assert getattr(cfg, col) == int(row[col]), col
    # KV bytes per token in 16-bit equal the CSV's column
    assert shapes.kv_bytes_per_token(cfg) == int(row["kv_bytes_per_token_fp16"])
    assert shapes.kv_bytes_per_token(cfg) == int(row["kv_KiB_per_token_fp16"]) * 1024
    # the CSV rounds the parameter count to 0.1 B
    assert shapes.total_params(cfg) / 1e9 == pytest.approx(float(row["approx_params_B"]), abs=0.051)


@pytest.mark.validation
def test_llama_3_1_70b_derived_figures_match_hardware_md():
    cfg = model("llama-3.1-70b")
    # hardware.md §4: 70.55 B total, 69.50 B read per step, 163,840 KV elements = 320 KiB per token in BF16
    assert shapes.total_params(cfg) == pytest.approx(70.55e9, rel=1e-3)
    assert shapes.params_read_per_step(cfg) == pytest.approx(69.50e9, rel=1e-3)
    assert shapes.kv_elements_per_token(cfg) == 163_840
    assert shapes.kv_bytes_per_token(cfg) == 320 * 1024
    # the difference is exactly the input embedding (only looked up)
    assert shapes.total_params(cfg) - shapes.params_read_per_step(cfg) == 128256 * 8192


@pytest.mark.validation
@pytest.mark.parametrize("name, billions", [("llama-3.1-8b", 8.0), ("mixtral-8x7b", 46.7), ("gpt-3-175b", 174.6)])
def test_parameter_counts_of_known_models(name, billions):
    # model cards: Llama-3.1-8B "8B" (8.03 B), Mixtral 46.7 B total (Mistral AI), GPT-3 "175B" (174.6 B
    # with GPT-2's tied embedding)
    assert shapes.total_params(model(name)) / 1e9 == pytest.approx(billions, abs=0.05)


def test_layer_matrices_add_up_to_the_total():
    for name in PRESETS:
        cfg = model(name)
        by_matrix = shapes.layer_weight_bytes(cfg)
        rest = (shapes.embedding_params(cfg) + shapes.position_params(cfg) + shapes.norm_params(cfg)
                + shapes.lm_head_params(cfg)) * cfg.dtype.weight_bytes
        assert cfg.num_layers * sum(by_matrix.values()) + rest == shapes.weight_bytes_total(cfg)
    q = shapes.layer_weight_bytes(model("qwen2.5-72b"))
    assert q["qkv_bias"] == (64 + 2 * 8) * 128 * 2  # Qwen2 QKV bias: small, but counted


@pytest.mark.validation
@pytest.mark.parametrize("overrides, batch, context, expected_GB", [
    # hardware.md §4 worked example table (bytes per step: weights + KV, activations excluded)
    ((), 32, 8192, 224.9),
    ((), 1, 8192, 141.7),
    ((), 1, 131072, 182.0),
    ((), 128, 2048, 224.9),
    (("dtype.weight=fp8", "dtype.kv=fp8"), 1, 8192, 70.8),
    (("dtype.weight=fp8", "dtype.kv=fp8"), 128, 2048, 112.5),
])
def test_decode_step_bytes_reproduce_the_worked_example(overrides, batch, context, expected_GB):
    o = iteration_ops(model("llama-3.1-70b", *overrides), np.ones(batch, int), np.full(batch, context))
    moved = o.total("weight_bytes") + o.total("kv_read_bytes")
    # the table rounds to 0.1 GB (182 to 1 GB)
    assert moved / 1e9 == pytest.approx(expected_GB, abs=0.05 if expected_GB != 182.0 else 0.5)
    if (batch, context) == (32, 8192) and not overrides:
        assert o.total("kv_read_bytes") / 1e9 == pytest.approx(85.9, abs=0.05)  # "the KV part (85.9 GB)"


@pytest.mark.validation
def test_decode_flops_follow_the_roofline_formula():
    cfg = model("llama-3.1-70b")
    rng = np.random.default_rng(1)
    ctx = rng.integers(100, 30000, 48)
    o = iteration_ops(cfg, np.ones(48, int), ctx)
    # hardware.md §4: FLOPs ≈ 2·P_read·B + 4·n_layers·H_q·d_h·Σ L_i
    expected = 2 * shapes.params_read_per_step(cfg) * 48 + 4 * 80 * 64 * 128 * ctx.sum()
    assert o.total("flops") == pytest.approx(expected, rel=1e-3)


def test_attention_flops_and_kv_bytes_by_brute_force():
    cfg = model("llama-3.1-8b")
    new, ctx = np.array([1, 512, 37, 1, 0]), np.array([900, 0, 2000, 1, 5])
    o = iteration_ops(cfg, new, ctx)
    keys_seen = sum(c + i for n, c in zip(new, ctx) for i in range(1, n + 1))  # causal: token i sees c + i
    assert o.op("attention")["flops"] == 4 * 32 * 128 * keys_seen
    kv_tok_layer = 2 * 8 * 128 * 2
    assert o.op("attention")["kv_read_bytes"] == ctx.sum() * kv_tok_layer
    assert o.op("attention")["kv_write_bytes"] == new.sum() * kv_tok_layer
    assert np.allclose(o.kv_read_bytes_per_seq, ctx * kv_tok_layer)
    for name in ("qkv", "out_proj", "ffn_up", "ffn_down"):
        r = o.op(name)
        assert r["flops"] == 2 * r["gemm_m"] * r["gemm_n"] * r["gemm_k"]
    assert o.op("lm_head")["gemm_m"] == 5 and o.op("qkv")["gemm_m"] == new.sum()
    assert iteration_ops(cfg, new, ctx, emits=new > 1).op("lm_head")["gemm_m"] == 2


@pytest.mark.parametrize("name", ["llama-3.1-70b", "mixtral-8x7b", "qwen2.5-72b"])
def test_tp8_shards_sum_back_to_tp1(name):
    cfg = model(name)
    rng = np.random.default_rng(7)
    new = np.concatenate([np.ones(40, int), rng.integers(16, 512, 4)])
    ctx = rng.integers(0, 8000, new.size)
    one, eight = iteration_ops(cfg, new, ctx, tp=1), iteration_ops(cfg, new, ctx, tp=8)
    for f in ("kv_read_bytes", "kv_write_bytes"):
        assert 8 * eight.total(f) == pytest.approx(one.total(f), rel=1e-12), f
    # FLOPs split except the router's, which every shard computes
    assert 8 * eight.total("flops") - 7 * eight.replicated_flops == pytest.approx(one.total("flops"), rel=1e-12)
    assert (eight.replicated_flops > 0) == cfg.is_moe
    # weights split except what every shard holds (norms, router, output biases): counted 8 times
    assert 8 * eight.total("weight_bytes") - 7 * eight.replicated_weight_bytes == pytest.approx(
        one.total("weight_bytes"), rel=1e-12)
    assert 0 < eight.replicated_weight_bytes < 1e-3 * one.total("weight_bytes")
    assert one.total("comm_bytes") == 0 and eight.op("allreduce_attn")["comm_bytes"] == new.sum() * cfg.hidden_size * 2


def test_moe_expected_experts_touched():
    assert expected_experts_touched(1, 8, 2) == pytest.approx(2.0)
    assert expected_experts_touched(200, 8, 2) == pytest.approx(8.0)
    # Monte Carlo under the stated assumption: each token picks 2 distinct experts of 8 uniformly
    rng = np.random.default_rng(3)
    for tokens in (2, 3, 6):
        picks = np.argsort(rng.random((20000, tokens, 8)), axis=2)[:, :, :2]
        distinct = np.array([len(np.unique(p)) for p in picks])
        assert distinct.mean() == pytest.approx(expected_experts_touched(tokens, 8, 2), rel=0.01)


@pytest.mark.validation
def test_mixtral_weights_follow_routed_tokens():
    cfg = model("mixtral-8x7b")
    one = iteration_ops(cfg, [1], [100])
    # one token reads the active parameters (2 of 8 experts) plus its embedding row
    expected = (shapes.active_params_per_token(cfg) + cfg.hidden_size) * 2
    assert one.total("weight_bytes") == pytest.approx(expected, rel=1e-9)
    many = iteration_ops(cfg, [512], [0])
    assert many.experts_touched == pytest.approx(8.0)
    assert many.total("weight_bytes") == pytest.approx((shapes.params_read_per_step(cfg) + 512 * 4096) * 2,
                                                       rel=1e-9)
    # FLOPs per token use k experts: the FFN of one token is 2 experts' worth
    f = cfg.intermediate_size
    assert one.op("ffn_up")["flops"] + one.op("ffn_down")["flops"] == 2 * 2 * 3 * 4096 * f
    assert one.experts_touched == pytest.approx(2.0)


def test_bad_model_configs_name_the_key(tmp_path):
    def write(text):
        p = tmp_path / "m.toml"
        p.write_text('schema_version = 1\nkind = "model"\nname = "m"\nbase = "llama-3.1-8b"\n' + text)
        return str(p)

    with pytest.raises(InputError) as e:
        load_config(write("num_kv_heads = 5\n"))
    assert e.value.where == "num_kv_heads" and "not a multiple" in e.value.message
    with pytest.raises(InputError) as e:
        load_config(write('[dtype]\nkv = "int3"\n'))
    assert e.value.where == "dtype.kv" and "'fp8'" in e.value.message
    with pytest.raises(InputError) as e:
        load_config("llama-3.1-8b", ["dtype.weight=fp4"])
    assert e.value.where == "dtype.weight" and e.value.source == "--set"
    with pytest.raises(InputError) as e:
        load_config(write("experts_per_token = 2\n"))
    assert e.value.where == "experts_per_token"
    with pytest.raises(InputError) as e:
        load_config(write("num_hidden_layers = 3\n"))
    assert e.value.where == "num_hidden_layers" and "num_layers" in e.value.message
    with pytest.raises(InputError) as e:
        IterationModel(model("qwen2.5-32b"), tp=16)  # 40 heads
    assert e.value.where == "tp" and "num_attention_heads = 40" in e.value.message


def test_fp8_kv_override_halves_kv_bytes():
    assert shapes.kv_bytes_per_token(model("llama-3.1-70b", "dtype.kv=fp8")) == 160 * 1024


def test_check_command_prints_derived_figures():
    out = subprocess.run([sys.executable, "-m", "tokenstack_sim.cli", "check", "llama-3.1-70b"],
                         capture_output=True, text=True, check=True).stdout
    assert "70.55 B total" in out and "69.50 B read per decode step" in out
    assert "163,840 per token" in out and "327,680 bytes per token (320 KiB)" in out
    assert out.strip().endswith("ok")
