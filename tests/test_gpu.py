"""GPU compute model: presets, roofline limits, tile quantization, attention counts, CSV calibration."""

import math

import numpy as np
import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.gpu import (Gpu, attention_counts, attention_pairs, attention_time_s, gemm_counts,
                                   gemm_time_s, load_kernel_table)

pytestmark = pytest.mark.unit

GPUS = ["h100-sxm", "h200", "b200", "a100-sxm", "rtx-4090", "rtx-6000-ada"]
H100_BF16 = 989.4e12  # hardware.md §7 (AttAcc's H100 989.4 TFLOPS)


@pytest.fixture(scope="module")
def h100():
    return load_config("h100-sxm")


@pytest.mark.parametrize("name", GPUS)
def test_every_gpu_preset_loads_and_describes(name):
    g = load_config(name, kind="gpu")
    assert g.config.name == name
    text = g.describe()
    assert name in text and "SMs" in text and "TFLOPS" in text
    d = g.as_dict()
    assert not any("bw" in key.lower() for key in d)  # the GPU carries no bandwidth of its own
    assert g.peak_flops("bf16") > 0


def test_gpu_preset_numbers_match_hardware_md():
    # hardware.md GPU table and §7: dense peaks, SMs and stack sites.
    assert load_config("h100-sxm").peak_flops("fp8") == pytest.approx(3958e12 / 2, rel=1e-3)  # sparse / 2
    assert load_config("h200").config.hbm_stack_sites == 6
    b200 = load_config("b200")
    assert b200.config.hbm_stack_sites == 8 and b200.peak_flops("bf16") == 2.25e15
    assert b200.power_bound_pj_per_flop("bf16") == pytest.approx(1000 / 2.25e15 * 1e12)  # 0.44 (hardware.md §2)
    a100 = load_config("a100-sxm")
    assert a100.peak_flops("fp16") == 312e12 and a100.config.sm_count == 108


def test_gpu_refuses_a_bandwidth_key(tmp_path):
    with pytest.raises(InputError, match="unknown key") as exc:
        load_config("h100-sxm", ["mem_bw_GBps=3350"])
    assert exc.value.where == "mem_bw_GBps"
    path = tmp_path / "g.toml"
    path.write_text('schema_version = 1\nkind = "gpu"\nbase = "h100-sxm"\nname = "g"\nmem_bw_GBps = 4800\n')
    with pytest.raises(InputError, match="unknown key"):
        load_config(str(path))


def test_missing_dtype_is_refused():
    a100 = load_config("a100-sxm")
    with pytest.raises(InputError, match="no fp8"):
        gemm_time_s(a100, 128, 4096, 4096, "fp8", 3352)


def test_huge_m_gemm_is_compute_bound(h100):
    m, n, k = 1 << 20, 8192, 8192
    t = gemm_time_s(h100, m, n, k, "bf16", 3352)
    expected = 2 * m * n * k / (0.8 * H100_BF16) + 3e-6  # AttAcc eta_c 0.8, full tiles, 3 us launch
    assert t == pytest.approx(expected, rel=1e-9)
    # an m that is not a whole number of tiles still tends to the same limit
    t2 = gemm_time_s(h100, m + 1, n, k, "bf16", 3352)
    assert t2 / (2 * (m + 1) * n * k / (0.8 * H100_BF16)) == pytest.approx(1.0, rel=1e-3)


def test_decode_gemm_is_memory_bound(h100):
    n, k, bw = 8192, 8192, 3352.0  # AttAcc's 3,352 GB/s (hardware.md §7)
    t = gemm_time_s(h100, 1, n, k, "bf16", bw)
    nbytes = k * n * 2 + (k + n) * 2  # weights once + one activation row in and out, BF16
    assert t == pytest.approx(3e-6 + nbytes / (0.85 * bw * 1e9), rel=1e-12)
    # FP8 weights with BF16 activations move half the weight bytes
    t8 = gemm_time_s(h100, 1, n, k, "bf16", bw, weight_bytes=1)
    assert t8 == pytest.approx(3e-6 + (k * n + (k + n) * 2) / (0.85 * bw * 1e9), rel=1e-12)


def test_launch_overhead_added_once_per_kernel():
    g0 = load_config("h100-sxm", ["launch_overhead_us=0"])
    g5 = load_config("h100-sxm", ["launch_overhead_us=5"])
    m = np.array([1, 64, 4096, 65536])
    diff = gemm_time_s(g5, m, 4096, 4096, "bf16", 3352) - gemm_time_s(g0, m, 4096, 4096, "bf16", 3352)
    assert np.allclose(diff, 5e-6, rtol=0, atol=1e-15)
    da = (attention_time_s(g5, 1, 4096, n_heads_q=64, n_heads_kv=8, head_dim=128, dtype="bf16", mem_bw_GBps=3352)
          - attention_time_s(g0, 1, 4096, n_heads_q=64, n_heads_kv=8, head_dim=128, dtype="bf16", mem_bw_GBps=3352))
    assert da == pytest.approx(5e-6, abs=1e-15)


def test_tile_and_wave_quantization():
    # compute-bound (huge bandwidth): m = 1 costs as much compute time as a full 64-row tile
    g = load_config("h100-sxm", ["launch_overhead_us=0"])
    t1 = gemm_time_s(g, 1, 8192, 8192, "bf16", 1e12)
    t64 = gemm_time_s(g, 64, 8192, 8192, "bf16", 1e12)
    assert t1 == pytest.approx(t64, rel=1e-12)
    assert t64 == pytest.approx(2 * 64 * 8192 * 8192 / (0.8 * H100_BF16), rel=1e-12)
    # waves: 133 tiles of 64x128 on 132 SMs take two waves -> efficiency x 133 / 264
    w = load_config("h100-sxm", ["launch_overhead_us=0", "efficiency.wave_quantization=true"])
    n = 128 * 133
    tw = gemm_time_s(w, 64, n, 8192, "bf16", 1e12)
    assert tw == pytest.approx(2 * 64 * n * 8192 / (0.8 * H100_BF16 * 133 / 264), rel=1e-12)


def test_attention_counts_by_hand():
    # causal chunk of 4 new tokens ending at context 10: queries see 7, 8, 9, 10 keys
    assert attention_pairs(4, 10) == 34
    assert attention_pairs(4, 10, causal=False) == 40
    assert attention_pairs(1, 8192) == 8192
    flops, nbytes, _ = attention_counts(1, 8192, n_heads_q=64, n_heads_kv=8, head_dim=128, dtype="bf16")
    assert flops == 4 * 64 * 128 * 8192
    assert nbytes == 8192 * 2 * 8 * 128 * 2 + 2 * 64 * 128 * 2  # K and V once; Q in, O out


def test_decode_attention_is_memory_bound(h100):
    L = 8192
    t = attention_time_s(h100, 1, L, n_heads_q=64, n_heads_kv=8, head_dim=128, dtype="bf16", mem_bw_GBps=3352)
    nbytes = L * 2 * 8 * 128 * 2 + 2 * 64 * 128 * 2
    assert t == pytest.approx(3e-6 + nbytes / (0.85 * 3352e9), rel=1e-12)


def test_batched_attention_sums_sequences(h100):
    q = np.array([1, 1, 1, 100])
    c = np.array([500, 1000, 2000, 100])
    kw = dict(n_heads_q=32, n_heads_kv=8, head_dim=128, dtype="bf16", mem_bw_GBps=3352)
    t = attention_time_s(h100, q, c, kernel_of=np.array([0, 0, 1, 1]), **kw)
    flops, nbytes, _ = attention_counts(q, c, n_heads_q=32, n_heads_kv=8, head_dim=128, dtype="bf16")
    for kern, sel in ((0, [0, 1]), (1, [2, 3])):
        expect = 3e-6 + max(flops[sel].sum() / (0.75 * H100_BF16), nbytes[sel].sum() / (0.85 * 3352e9))
        assert t[kern] == pytest.approx(expect, rel=1e-12)


def test_vectorized_equals_scalar(h100):
    rng = np.random.default_rng(1)
    m = rng.integers(1, 5000, 50)
    n = rng.integers(1, 20000, 50)
    k = rng.integers(1, 20000, 50)
    bw = rng.uniform(500, 8000, 50)
    vec = gemm_time_s(h100, m, n, k, "fp8", bw)
    assert np.array_equal(vec, [gemm_time_s(h100, int(a), int(b), int(c), "fp8", float(d))
                                for a, b, c, d in zip(m, n, k, bw)])
    q = rng.integers(1, 64, 50)
    ctx = q + rng.integers(0, 10000, 50)
    kw = dict(n_heads_q=64, n_heads_kv=8, head_dim=128, dtype="bf16", mem_bw_GBps=3352)
    vec = attention_time_s(h100, q, ctx, **kw)
    assert np.array_equal(vec, [attention_time_s(h100, int(a), int(b), **kw) for a, b in zip(q, ctx)])


def test_counted_component_energy(h100):
    gpu = Gpu(h100, 3352)
    gpu.gemm(np.array([1, 8]), 4096, 4096, "bf16")
    gpu.attention(1, 1024, n_heads_q=32, n_heads_kv=8, head_dim=128, dtype="bf16")
    flops = 2 * 1 * 4096 * 4096 + 2 * 8 * 4096 * 4096 + 4 * 32 * 128 * 1024
    nbytes = (2 * 4096 * 4096 * 2 + (1 + 8) * 2 * 4096 * 2) + (1024 * 2 * 8 * 128 * 2 + 2 * 32 * 128 * 2)
    assert gpu.stats.kernels == 3
    assert gpu.stats.flops["bf16"] == flops
    assert gpu.stats.dram_bytes == nbytes
    e = gpu.stats.energy_pj(h100)
    assert e["compute_pj"] == pytest.approx(flops * 0.16)  # AttAcc 0.32 pJ/MAC (hardware.md §2)
    assert e["l2_pj"] == pytest.approx(nbytes * 2.4)       # AttAcc L2 2.4 pJ/B (hardware.md §2)


# ------------------------------------------------------------------------------------ calibration

HEADER = "op,dtype,m,n,k,n_heads_kv,mem_bw_GBps,time_us,gpu\n"
CSV = """# measured on h100-sxm (made-up numbers for the test)
op,dtype,m,n,k,n_heads_kv,mem_bw_GBps,time_us,gpu
gemm,bf16,1,1024,1024,,3352,10,h100-sxm
gemm,bf16,16,1024,1024,,3352,20,h100-sxm
gemm,bf16,1,4096,1024,,3352,40,h100-sxm
gemm,bf16,16,4096,1024,,3352,90,h100-sxm
"""


def _table(tmp_path, text=CSV, **kw):
    path = tmp_path / "kernels.csv"
    path.write_text(text)
    return load_kernel_table(path, **kw), path


def test_calibration_exact_at_grid_points_and_log_interpolated(tmp_path, h100):
    table, _ = _table(tmp_path)
    m = np.array([1, 16, 1, 16])
    n = np.array([1024, 1024, 4096, 4096])
    t = gemm_time_s(h100, m, n, 1024, "bf16", 3352, calibration=table)
    assert np.allclose(t, np.array([10, 20, 40, 90]) * 1e-6, rtol=1e-12, atol=0)
    # m = 4 is halfway between 1 and 16 in log space: the geometric mean of 10 and 20 us
    mid = gemm_time_s(h100, 4, 1024, 1024, "bf16", 3352, calibration=table)
    assert mid == pytest.approx(math.sqrt(10 * 20) * 1e-6, rel=1e-12)
    # the centre of the (m, n) square: geometric mean of the four corners
    centre = gemm_time_s(h100, 4, 2048, 1024, "bf16", 3352, calibration=table)
    assert centre == pytest.approx((10 * 20 * 40 * 90) ** 0.25 * 1e-6, rel=1e-12)


def test_calibration_refuses_outside_the_grid(tmp_path, h100):
    table, path = _table(tmp_path)
    for m, n, k in ((32, 1024, 1024), (1, 512, 1024), (1, 1024, 2048)):
        with pytest.raises(InputError, match="outside the measured grid") as exc:
            gemm_time_s(h100, m, n, k, "bf16", 3352, calibration=table)
        assert str(path) in str(exc.value)
    with pytest.raises(InputError, match="no measured kernels for attention/h100-sxm/bf16/kv8"):
        attention_time_s(h100, 1, 100, n_heads_q=8, n_heads_kv=8, head_dim=128, dtype="bf16", mem_bw_GBps=3352,
                         calibration=table)
    # an explicit opt-in times the outside points with the roofline, the inside ones from the table
    t = gemm_time_s(h100, np.array([16, 32]), 1024, 1024, "bf16", 3352, calibration=table, fallback="roofline")
    assert t[0] == pytest.approx(20e-6, rel=1e-12)
    assert t[1] == gemm_time_s(h100, 32, 1024, 1024, "bf16", 3352)


@pytest.mark.parametrize("text, where, message", [
    (HEADER + "gemm,bf16,1,2,3,,9,4,h\ngemm,bf16,x,2,3,,9,4,h\n", "line 3, column m", "number"),
    (HEADER + "gemm,bf16,1,2,3,,9,-4,h\n", "line 2, column time_us", "positive"),
    ("# c\n" + HEADER + "\nconv,bf16,1,2,3,,9,4,h\n", "line 4, column op", "gemm"),
    (HEADER + "gemm,int4,1,2,3,,9,4,h\n", "line 2, column dtype", "bf16"),
    (HEADER + "gemm,bf16,1,2,3,,9,4\n", "line 2", "fields"),
    (HEADER.strip() + ",extra\n", "line 1, column 10", "unknown column"),
    ("op,dtype,m,n,k,n_heads_kv,mem_bw_GBps,time_us,gpu".replace(",k,", ",") + "\n", "line 1", "missing columns: k"),
    (HEADER + "gemm,bf16,1,2,3,,9,4,h\ngemm,bf16,1,2,3,,9,5,h\n", "line 3", "duplicate"),
    # the memory bandwidth and, for attention, the KV heads are part of every row
    ("op,dtype,m,n,k,time_us,gpu\ngemm,bf16,1,2,3,4,h\n", "line 1", "missing columns: n_heads_kv, mem_bw_GBps"),
    (HEADER + "gemm,bf16,1,2,3,,0,4,h\n", "line 2, column mem_bw_GBps", "positive"),
    (HEADER + "gemm,bf16,1,2,3,,nan,4,h\n", "line 2, column mem_bw_GBps", "positive"),
    (HEADER + "gemm,bf16,1,2,3,8,9,4,h\n", "line 2, column n_heads_kv", "gemm row has no KV heads"),
    (HEADER + "attention,bf16,1,2,3,,9,4,h\n", "line 2, column n_heads_kv", "KV heads"),
    (HEADER + "attention,bf16,1,2,3,2.5,9,4,h\n", "line 2, column n_heads_kv", "positive integer"),
    (HEADER + "gemm,bf16,1,2,3,,3352,4,h\ngemm,bf16,1,2,3,,3352.0000001,4,h\n", "mem_bw_GBps", "differ by less"),
])
def test_calibration_bad_rows_name_the_line(tmp_path, text, where, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as exc:
        load_kernel_table(path)
    assert exc.value.where == where and exc.value.source == str(path)


def test_calibration_needs_a_full_grid(tmp_path):
    text = CSV.replace("gemm,bf16,16,4096,1024,,3352,90,h100-sxm\n", "")
    with pytest.raises(InputError, match="missing m=16, n=4096, k=1024"):
        _table(tmp_path, text)


def test_calibration_refuses_another_memory_bandwidth(tmp_path, h100):
    table, path = _table(tmp_path)
    for fallback in ("error", "roofline"):  # a table measured on another memory system is never used
        with pytest.raises(InputError, match=r"gemm/h100-sxm/bf16 @ 4800 GB/s.*mem_bw_GBps 3352 only") as exc:
            gemm_time_s(h100, 1, 1024, 1024, "bf16", 4800, calibration=table, fallback=fallback)
        assert exc.value.where == "mem_bw_GBps" and exc.value.source == str(path)
        with pytest.raises(InputError, match="3352 only"):  # one element of a vector at another bandwidth
            gemm_time_s(h100, 1, 1024, 1024, "bf16", np.array([3352.0, 3000.0]), calibration=table,
                        fallback=fallback)
    # equal within a relative 1e-6 (a bandwidth summed over stacks may differ in the last digits)
    assert gemm_time_s(h100, 1, 1024, 1024, "bf16", 3352 * (1 + 1e-9), calibration=table) == pytest.approx(10e-6)
    # a Gpu component looks the table up at its own bandwidth
    with pytest.raises(InputError, match="mem_bw_GBps"):
        Gpu(h100, 4800, calibration=table).gemm(1, 1024, 1024, "bf16")


def test_calibration_keeps_tables_of_several_bandwidths_apart(tmp_path, h100):
    rows = CSV + "".join(f"gemm,bf16,{m},{n},1024,,4800,{t},h100-sxm\n"
                         for m, n, t in ((1, 1024, 7), (16, 1024, 14), (1, 4096, 28), (16, 4096, 60)))
    table, _ = _table(tmp_path, rows)
    t = gemm_time_s(h100, np.array([1, 1, 16]), 1024, 1024, "bf16", np.array([3352.0, 4800.0, 4800.0]),
                    calibration=table)
    assert np.allclose(t, [10e-6, 7e-6, 14e-6], rtol=1e-12, atol=0)


def test_calibration_refuses_rows_and_lookups_for_another_gpu(tmp_path, h100):
    h200 = load_config("h200")
    table, path = _table(tmp_path)
    for fallback in ("error", "roofline"):
        with pytest.raises(InputError, match="measurements for gpu 'h100-sxm', not 'h200'") as exc:
            gemm_time_s(h200, 1, 1024, 1024, "bf16", 3352, calibration=table, fallback=fallback)
        assert exc.value.where == "gpu"
    mixed = CSV + "gemm,bf16,1,1024,1024,,4800,8,h200\n"
    table, path = _table(tmp_path, mixed)  # a table may hold several GPUs' measurements ...
    assert gemm_time_s(h200, 1, 1024, 1024, "bf16", 4800, calibration=table) == pytest.approx(8e-6)
    with pytest.raises(InputError, match="loaded for 'h100-sxm'") as exc:  # ... unless loaded for one GPU
        _table(tmp_path, mixed, gpu="h100-sxm")
    assert exc.value.where == "line 7, column gpu"


def test_attention_calibration_coordinates(tmp_path, h100):
    # attention rows: m = query tokens of the kernel, n = mean attended keys per query, k = heads_q * head_dim,
    # keyed by the kernel's KV heads
    rows = "".join(f"attention,bf16,{m},{n},4096,8,3352,{t},h100-sxm\n"
                   for m, n, t in ((1, 1024, 8), (1, 8192, 30), (64, 1024, 40), (64, 8192, 200)))
    table, _ = _table(tmp_path, HEADER + rows)
    kw = dict(n_heads_q=32, n_heads_kv=8, head_dim=128, dtype="bf16", mem_bw_GBps=3352, calibration=table)
    assert attention_time_s(h100, 1, 8192, **kw) == pytest.approx(30e-6, rel=1e-12)
    # 64 decode sequences of 1,024 keys batched into one kernel: m = 64, n = 1024
    t = attention_time_s(h100, np.ones(64), np.full(64, 1024), kernel_of=np.zeros(64, int), **kw)
    assert t[0] == pytest.approx(40e-6, rel=1e-12)
    with pytest.raises(InputError, match="outside"):
        attention_time_s(h100, 1, 8192, **{**kw, "n_heads_q": 64})  # k = 8192 was not measured
    # another GQA ratio (same heads_q * head_dim, 4 KV heads) reads twice the KV: not in the table
    with pytest.raises(InputError, match="no measured kernels for attention/h100-sxm/bf16/kv4"):
        attention_time_s(h100, 1, 8192, **{**kw, "n_heads_kv": 4})
    roof = attention_time_s(h100, 1, 8192, **{**kw, "n_heads_kv": 4, "calibration": None})
    assert attention_time_s(h100, 1, 8192, **{**kw, "n_heads_kv": 4}, fallback="roofline") == roof
