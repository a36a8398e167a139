"""System configs: presets load and check, equal resources, bandwidth from the stacks, capacity tiers,
AttAcc's own configuration, KV capacity under vLLM's budget, and bad inputs named by key."""

import subprocess
import sys

import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.system import equal_resources_report, kv_capacity_bytes, memory_bandwidth_GBps, weights_fit

pytestmark = pytest.mark.unit

SYSTEMS = ["gpu-hbm3e", "gpu-hbm4", "uniform-pim-hbm4", "tokenstack-hbm4", "attacc-hbm4", "attacc-hbm3"]
EQUAL = ["gpu-hbm4", "uniform-pim-hbm4", "tokenstack-hbm4", "attacc-hbm4"]
GIB = 2 ** 30
# hardware.md §1: HBM4 is 2048 b per stack at 8 Gb/s (JEDEC), 12-high of 32 Gb dies.
HBM4_STACK_GBPS = 2048 * 8 / 8
HBM4_12H_BYTES = 12 * 32 * GIB // 8


@pytest.fixture(scope="module")
def systems():
    return {n: load_config(n, kind="system") for n in SYSTEMS}


@pytest.mark.parametrize("name", SYSTEMS)
def test_every_system_preset_checks_through_the_cli(name):
    out = subprocess.run([sys.executable, "-m", "tokenstack_sim.cli", "check", name], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(name) and "GPU-side bandwidth" in out.stdout and out.stdout.rstrip().endswith("ok")


def test_system_as_dict_carries_the_derived_totals(systems):
    d = systems["tokenstack-hbm4"].as_dict()
    assert d["kind"] == "system" and d["derived"]["total_stacks"] == 64 and d["derived"]["total_dies"] == 768


def test_equal_resources_same_gpus_stacks_and_dies(systems):
    ref = systems["gpu-hbm4"]
    for n in EQUAL:
        s = systems[n]
        assert (s.gpus, s.gpu.name, s.tp) == (8, "b200", 8)
        assert s.stacks_per_gpu == 8 and s.total_stacks == 64  # b200's 8 sites (hardware.md GPU table)
        assert s.total_dies == ref.total_dies == 8 * 8 * 12
        assert s.stack_area_mm2 == pytest.approx(ref.stack_area_mm2)  # same dies, same base dies


def test_gpu_bandwidth_is_stacks_times_stack_peak(systems):
    for n in ["gpu-hbm4", "uniform-pim-hbm4", "tokenstack-hbm4"]:
        bw = memory_bandwidth_GBps(systems[n])
        assert bw["per_gpu"] == pytest.approx(8 * HBM4_STACK_GBPS)
        assert bw["total"] == pytest.approx(8 * 8 * HBM4_STACK_GBPS)
    # HBM3E (Micron 9.2 Gb/s, 1024 b): 1,177.6 GB/s per stack, 9.42 TB/s for 8 stacks (hardware.md §1, §4)
    assert systems["gpu-hbm3e"].gpu_bw_GBps == pytest.approx(8 * 1024 * 9.2 / 8)
    assert systems["gpu-hbm3e"].gpu_bw_GBps / 1e3 == pytest.approx(9.42, abs=0.005)


@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_attacc_gpu_side_shrinks_with_pim_stacks(k):
    s = load_config("attacc-hbm4", [f"pim_device.pim_stacks={k}"], kind="system")
    assert s.gpu_stacks_per_gpu == 8 - k and s.pim_stacks_per_gpu == k and s.total_stacks == 64
    assert s.gpu_bw_GBps == pytest.approx((8 - k) * HBM4_STACK_GBPS)
    assert s.capacity_per_gpu_bytes("gpu_capacity") == (8 - k) * HBM4_12H_BYTES
    assert s.capacity_per_gpu_bytes("pim_device") == k * HBM4_12H_BYTES // 2  # all-PIM at 50% (hardware.md §3)
    assert s.pim_link.name == "nvlink5"
    assert s.pim_stack.config.pim.mode_scope == "channel"


def test_capacity_ordering_follows_pim_layer_arithmetic(systems):
    # hardware.md §3: a stack with k PIM layers of N holds (N - 0.5 k) / N of plain.
    plain, ts, uni = (systems[n].capacity_bytes_per_gpu for n in ["gpu-hbm4", "tokenstack-hbm4", "uniform-pim-hbm4"])
    assert plain == 8 * HBM4_12H_BYTES == 384 * GIB
    assert ts == pytest.approx(plain * (12 - 0.5 * 4) / 12)
    assert uni == pytest.approx(plain * (12 - 0.5 * 12) / 12)
    assert plain > ts > uni
    t = systems["tokenstack-hbm4"]
    assert t.capacity_per_gpu_bytes("gpu_pim") == 8 * 4 * 32 * GIB // 8 // 2  # 4 PIM dies at half of 32 Gb


def test_hbm3e_stack_is_24_gib_8_high(systems):
    s = systems["gpu-hbm3e"].gpu_stack
    assert len(s.dies) == 8 and s.dram.org.sids == 2 and s.dram.org.die_density_gbit == 24
    assert s.capacity_bytes == 8 * 24 * GIB // 8  # HBM3E 8-H "24 GB" (hardware.md §1)
    assert systems["gpu-hbm3e"].capacity_bytes_per_gpu == 192 * GIB  # B200's 192 GB part (GPU table)


def test_attacc_hbm3_reproduces_attaccs_configuration(systems):
    s = systems["attacc-hbm3"]
    assert s.gpus == 8 and s.gpu.name == "a100-sxm"  # NUM_ATTACC = 8 (hardware.md §7)
    # 3,352 GB/s per GPU in AttAcc; our 5.2 Gb/s pins give 5 x 665.6 = 3,328 (0.72% low, see the preset)
    assert s.gpu_bw_GBps == pytest.approx(5 * 1024 * 5.2 / 8)
    assert s.gpu_bw_GBps == pytest.approx(3352, rel=0.01)
    assert s.gpus * s.pim_stacks_per_gpu == 40  # 8 x NUM_HBM = 5
    assert s.gpus * s.capacity_per_gpu_bytes("pim_device") == 640 * GIB  # 40 x 16 GB
    assert s.capacity_per_gpu_bytes("gpu_capacity") == 80 * GIB  # A100a 80 GB
    assert s.pim_link.config.bw_per_direction_GBps * 2 == 600  # NVLink3 600 GB/s
    # bank-level PIM with the power cap: ~7.1 TB/s internal per stack (hardware.md §7)
    assert s.pim_internal_bw_GBps / 5 == pytest.approx(7.1e3, rel=0.01)


def test_kv_capacity_follows_vllm_budget(systems):
    w = 141e9  # Llama-3.1-70B BF16 weights, 70.55 B params x 2 B (hardware.md §4)
    act = 2e9
    t = systems["tokenstack-hbm4"]
    kv = kv_capacity_bytes(t, w, act, per_gpu=True)
    assert kv["gpu_capacity"] == pytest.approx(0.9 * 8 * 32 * GIB - w / 8 - act, abs=2)
    assert kv["gpu_pim"] == pytest.approx(0.9 * 8 * 8 * GIB, abs=2)
    assert kv["pim_device"] == 0
    total = kv_capacity_bytes(t, w, act)
    assert total["gpu_capacity"] == pytest.approx(8 * kv["gpu_capacity"], abs=16)
    # uniform PIM: the weights land on the PIM tier, the only one it has
    u = kv_capacity_bytes(systems["uniform-pim-hbm4"], w, per_gpu=True)
    assert u["gpu_pim"] == pytest.approx(0.9 * 192 * GIB - w / 8, abs=2) and u["gpu_capacity"] == 0
    # AttAcc: weights on the GPU's stacks only; the PIM device holds KV only
    a = kv_capacity_bytes(systems["attacc-hbm4"], w, per_gpu=True)
    assert a["pim_device"] == pytest.approx(0.9 * 4 * 24 * GIB, abs=2)


def test_weights_that_do_not_fit_are_refused(systems):
    s = systems["attacc-hbm3"]  # 80 GiB per GPU on the GPU side; 0.9 x 80 GiB x 8 = 618 GB usable
    assert weights_fit(s, 350e9)  # GPT-3 175B in BF16 fits over 8 GPUs
    assert not weights_fit(s, 700e9)
    with pytest.raises(InputError) as exc:
        kv_capacity_bytes(s, 700e9)
    assert exc.value.where == "weight_bytes"


def test_equal_resources_report_lists_each_system(systems):
    text = equal_resources_report([systems[n] for n in SYSTEMS])
    lines = text.splitlines()
    assert len(lines) == 2 + len(SYSTEMS)
    row = next(line for line in lines if line.startswith("attacc-hbm4"))
    assert "64 (32+32)" in row and "768" in row and "65.5" in row  # 4 x 2.048 TB/s x 8 GPUs


@pytest.mark.parametrize("name,override,where", [
    ("gpu-hbm4", "tp=3", "tp"),
    ("gpu-hbm4", "tp=4", "tp"),  # data-parallel replicas are out of scope
    ("gpu-hbm4", "gpu_stacks_per_gpu=9", "gpu_stacks_per_gpu"),
    ("attacc-hbm4", "gpu_stacks_per_gpu=5", "gpu_stacks_per_gpu"),  # 4 sites are PIM
    ("attacc-hbm4", "pim_device.pim_stacks=9", "pim_device.pim_stacks"),
    ("attacc-hbm4", "pim_device.pim_stacks=8", "pim_device.pim_stacks"),
    ("gpu-hbm4", "gpu=nope", "gpu"),
    ("gpu-hbm4", "gpu_stack=nope", "gpu_stack"),
    ("attacc-hbm4", "pim_device.link=nope", "pim_device.link"),
    ("attacc-hbm4", "pim_device.stack=hbm4-12h-plain", "pim_device.stack"),  # no PIM dies
    ("gpu-hbm4", "gpu_link=b200", "gpu_link"),  # a GPU preset where a link is expected
    ("gpu-hbm4", "pim_device.pim_stacks=2", "pim_device.stack"),  # a partial table names the missing key
    ("gpu-hbm4", "memory_bw_GBps=9000", "memory_bw_GBps"),
])
def test_bad_inputs_name_the_key(name, override, where):
    with pytest.raises(InputError) as exc:
        load_config(name, [override], kind="system")
    assert exc.value.where is not None and exc.value.where.startswith(where), str(exc.value)
