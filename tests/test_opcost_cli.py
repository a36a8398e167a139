"""`tokenstack op` on a system config (GEMM on its GPU; stack ops on its stacks) and `characterize --workers`,
through click's CliRunner."""

from __future__ import annotations

import importlib
import json
import re

import pytest
from click.testing import CliRunner

from tokenstack_sim.cli import cli
from tokenstack_sim.config.loader import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.stack.energy import path_pj_per_bit

pytestmark = pytest.mark.unit
char_mod = importlib.import_module("tokenstack_sim.hw.opcost.characterize")  # the module, not the function


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def as_json(r) -> dict:
    """The JSON a command printed (click < 8.2 mixes stderr's progress lines into stdout, before it)."""
    text = r.stdout
    return json.loads(text[text.index("{"):])


def gemm_json(system, m, n, k, dtype="bf16"):
    r = run("op", system, "--op", "gemm", "--m", str(m), "--n", str(n), "--k", str(k), "--dtype", dtype, "--json")
    assert r.exit_code == 0, r.output
    return as_json(r)


def test_gemm_decode_shape_is_memory_bound_by_hand():
    s = load_config("gpu-hbm3e", kind="system")
    m, n, k = 1, 8192, 8192
    out = gemm_json("gpu-hbm3e", m, n, k)
    nbytes = (m * k + m * n + k * n) * 2
    bw = 8 * 1024 * 9.2 / 8  # GB/s: 8 HBM3E stacks per GPU, from the stacks
    assert out["units"]["mem_bw_GBps"] == pytest.approx(bw)
    assert out["bytes"] == nbytes and out["flops"] == 2 * m * n * k
    eff = s.gpu.config.efficiency
    t_mem = nbytes / (eff.memory_bw * bw * 1e9)
    assert out["bound"] == "memory"
    assert out["time_ns"] == pytest.approx((s.gpu.launch_overhead_s + t_mem) * 1e9)
    e = out["energy_pj"]
    assert e["dram_read_pj"] == pytest.approx((m * k + k * n) * 2 * 8 * path_pj_per_bit(s.gpu_stack, "gpu_read"))
    assert e["dram_write_pj"] == pytest.approx(m * n * 2 * 8 * path_pj_per_bit(s.gpu_stack, "gpu_write"))
    assert e["compute_pj"] == pytest.approx(2 * m * n * k * s.gpu.pj_per_flop("bf16"))
    assert e["l2_pj"] == pytest.approx(nbytes * s.gpu.config.energy.l2_pj_per_byte)
    assert out["source"] == "roofline (closed form)"


def test_gemm_large_is_compute_bound_and_text_names_the_origin():
    out = gemm_json("gpu-hbm3e", 8192, 8192, 8192)
    assert out["bound"] == "compute" and out["compute_time_ns"] > out["memory_time_ns"]
    s = load_config("gpu-hbm3e", kind="system")
    t_c = 2 * 8192 ** 3 / (out["eta_compute"] * s.gpu.peak_flops("bf16"))
    assert out["time_ns"] == pytest.approx((s.gpu.launch_overhead_s + t_c) * 1e9)
    r = run("op", "gpu-hbm3e", "--op", "gemm", "--m", "8192", "--n", "8192", "--k", "8192")
    assert r.exit_code == 0, r.output
    for words in ("compute-bound", "FLOPs", "bytes", "energy", "from: roofline (closed form)", "9,420.8 GB/s"):
        assert words in r.output


def test_gemm_bandwidth_follows_the_stacks():
    a = gemm_json("gpu-hbm3e", 1, 4096, 4096)
    b = gemm_json("gpu-hbm4", 1, 4096, 4096)
    assert b["units"]["mem_bw_GBps"] != a["units"]["mem_bw_GBps"]
    ratio = (a["time_ns"] - a["launch_ns"]) / (b["time_ns"] - b["launch_ns"])
    assert ratio == pytest.approx(b["units"]["mem_bw_GBps"] / a["units"]["mem_bw_GBps"])


def test_gemm_refusals():
    r = run("op", "hbm4-12h-plain", "--op", "gemm", "--m", "1", "--n", "2", "--k", "3")
    assert isinstance(r.exception, InputError) and "system config" in str(r.exception)
    r = run("op", "gpu-hbm3e", "--op", "gemm", "--m", "1")
    assert isinstance(r.exception, InputError) and "--n, --k" in str(r.exception)
    r = run("op", "gpu-hbm3e", "--op", "gemm", "--m", "1", "--n", "1", "--k", "1", "--cycle")
    assert isinstance(r.exception, InputError) and "closed form" in str(r.exception)
    r = run("op", "hbm3-ramulator21", "--op", "stream", "--bytes", "4096")
    assert isinstance(r.exception, InputError) and "stack or a system" in str(r.exception)


@pytest.fixture
def small_grids(tmp_path, monkeypatch, dram_warm):
    monkeypatch.setenv("TOKENSTACK_CACHE", str(tmp_path))
    real = char_mod.default_grid

    def small(op):
        g = real(op)
        top = 4096 if op.size_unit == "tokens" else 1 << 20
        return {"sizes": [x for x in g["sizes"] if x <= top], "shares": [0.0, 0.1]}

    monkeypatch.setattr(char_mod, "default_grid", small)
    return tmp_path


def test_stack_ops_on_a_system_use_its_gpu_stack(small_grids):
    r = run("op", "tokenstack-hbm4", "--op", "stream", "--bytes", "65536", "--tier", "pim", "--json")
    assert r.exit_code == 0, r.output
    out = as_json(r)
    s = load_config("tokenstack-hbm4", kind="system")
    assert out["stack"] == s.gpu_stack.config.name and "GPU stack of system tokenstack-hbm4" in out["stack_of_system"]
    assert out["source"] == "kernel" and out["time_ns"] > 0
    r = run("op", "tokenstack-hbm4", "--op", "attention", "--tokens", "1000")
    assert r.exit_code == 0, r.output
    assert "GPU stack of system tokenstack-hbm4: hbm4-12h-tokenstack" in r.output and "per stack" in r.output


def test_whole_stack_runs_every_channel_and_under_load_ends_with_the_slowest(small_grids, monkeypatch):
    """--cycle runs the one-channel slice the table is made of; --whole-stack every channel at once, each
    under its own background: 256-token attention under 0.2 takes ~1.5 x the slice's expected time
    (scripts/bench_symmetry.py, without refresh), far beyond the draws' noise (each mean to ~2.5%)."""
    monkeypatch.setattr(char_mod, "default_grid", lambda op: {"sizes": [0, 64, 256, 1024], "shares": [0.0, 0.2]})
    args = ("op", "hbm4-12h-tokenstack", "--op", "attention", "--tokens", "256", "--cycle", "--whole-stack")
    r = run(*args, "--load", "0.2", "--json")
    assert r.exit_code == 0, r.output
    out = as_json(r)
    assert out["whole_stack_time_ns"] > 1.25 * out["cycle_time_ns"] and out["whole_stack_draws"] >= 3
    r = run(*args)  # load 0: the same op on every channel, the same time
    assert r.exit_code == 0, r.output
    assert "whole " in r.output and "on every channel at once (the table" in r.output and "caveat" not in r.output
    kernel = float(re.search(r"kernel +([\d,.]+) ns", r.output).group(1).replace(",", ""))
    whole = float(re.search(r"whole +([\d,.]+) ns", r.output).group(1).replace(",", ""))
    assert whole == pytest.approx(kernel, rel=1e-6)


def test_attention_on_attacc_runs_on_its_pim_device(small_grids):
    r = run("op", "attacc-hbm4", "--op", "attention", "--tokens", "1000", "--on-stack", "pim-device", "--json")
    assert r.exit_code == 0, r.output
    out = as_json(r)
    s = load_config("attacc-hbm4", kind="system")
    assert out["stack"] == s.pim_stack.config.name and "PIM device stack" in out["stack_of_system"]
    r = run("op", "gpu-hbm3e", "--op", "attention", "--tokens", "1000", "--on-stack", "pim-device")
    assert isinstance(r.exception, InputError) and "no PIM device" in str(r.exception)


def test_characterize_with_workers(small_grids):
    def origins(out: str) -> list[str]:
        return [m.group(1) for m in re.finditer(r"^  (?:stream|dma|attention)\S* +(kernel|cache) ", out, re.M)]

    r = run("characterize", "hbm4-12h-tokenstack", "--workers", "2")
    assert r.exit_code == 0, r.output
    assert origins(r.stdout) == ["kernel"] * 5
    r = run("characterize", "hbm4-12h-tokenstack", "--workers", "2", "--validation")
    assert r.exit_code == 0 and origins(r.stdout) == ["cache"] * 5
    assert "(between levels)" in r.stdout and "size, load, kernel ns, table ns, error" in r.stdout
