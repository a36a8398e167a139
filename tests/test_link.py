"""Links: presets, point-to-point transfers, ring all-reduce time and bytes, energy."""

import numpy as np
import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.link import (allreduce_link_bytes, allreduce_time_s, link_energy_pj, transfer_link_bytes,
                                    transfer_time_s)

pytestmark = pytest.mark.unit

LINKS = ["pcie5-x16", "nvlink-c2c", "nvlink4", "nvlink3-600", "nvlink5"]


@pytest.mark.parametrize("name", LINKS)
def test_every_link_preset_loads_and_describes(name):
    link = load_config(name, kind="link")
    assert link.config.name == name
    text = link.describe()
    assert name in text and "GB/s per direction" in text and "pJ/bit" in text
    assert link.as_dict()["derived"]["bidirectional_GBps"] == 2 * link.config.bw_per_direction_GBps


@pytest.mark.parametrize("name", ["nvlink4", "h100-sxm"])
def test_check_command_describes_gpu_and_link(name):
    from click.testing import CliRunner

    from tokenstack_sim.cli import config_cmd

    result = CliRunner().invoke(config_cmd.check, [name])
    assert result.exit_code == 0, result.output
    assert name in result.output and result.output.rstrip().endswith("ok")
    bad = CliRunner().invoke(config_cmd.check, [name, "--set", "mem_bw_GBps=1"])
    assert bad.exit_code != 0


def test_link_numbers_match_the_sources():
    assert load_config("nvlink4").config.bw_per_direction_GBps * 2 == 900     # hardware.md §7 (H100 NVLink)
    assert load_config("nvlink3-600").config.bw_per_direction_GBps * 2 == 600  # hardware.md §7 (AttAcc)
    assert load_config("nvlink5").config.bw_per_direction_GBps * 2 == 1800
    assert load_config("nvlink4").config.energy_pj_per_bit == 1.3              # hardware.md §2


def test_unknown_link_key_is_refused():
    with pytest.raises(InputError, match="unknown key"):
        load_config("nvlink4", ["bandwidth=1"])


def test_transfer_time_and_bytes():
    link = load_config("nvlink3-600")
    # AttAcc's X2G time = bytes / (600 GB/s / 2) (hardware.md §7), plus the 2.5 us latency
    assert transfer_time_s(link, 600e6) == pytest.approx(2.5e-6 + 600e6 / 300e9, rel=1e-12)
    assert transfer_time_s(link, 0) == 0.0
    assert transfer_link_bytes(600e6) == 600e6
    half = load_config("nvlink3-600", ["bw_efficiency=0.5"])
    assert transfer_time_s(half, 600e6) == pytest.approx(2.5e-6 + 600e6 / 150e9, rel=1e-12)


def test_allreduce_single_gpu_is_free():
    link = load_config("nvlink4")
    assert allreduce_time_s(link, 1e9, 1) == 0.0
    assert allreduce_link_bytes(1e9, 1) == 0.0


def test_ring_allreduce_by_hand():
    link = load_config("nvlink4")  # 450 GB/s each way, 2.5 us per step
    # p = 2, 1 MB: 2*(1/2)*1e6 B / 450e9 B/s = 2.2222 us, plus 2 steps x 2.5 us
    assert allreduce_time_s(link, 1e6, 2) == pytest.approx(2.2222222e-6 + 5e-6, rel=1e-7)
    # p = 8, 8 MB: 2*(7/8)*8e6 = 14e6 B / 450e9 = 31.1111 us, plus 14 steps x 2.5 us = 35 us
    assert allreduce_time_s(link, 8e6, 8) == pytest.approx(31.111111e-6 + 35e-6, rel=1e-7)
    # bytes over all links: each of 8 GPUs sends 14 chunks of 1 MB
    assert allreduce_link_bytes(8e6, 8) == 14 * 8 * 1e6
    assert link_energy_pj(link, allreduce_link_bytes(8e6, 8)) == pytest.approx(112e6 * 8 * 1.3)


def test_vectorized_equals_scalar():
    link = load_config("nvlink5")
    b = np.array([0.0, 1e3, 1e6, 5e8])
    p = np.array([1, 2, 4, 8])
    vec = allreduce_time_s(link, b, p)
    assert np.array_equal(vec, [allreduce_time_s(link, float(x), int(y)) for x, y in zip(b, p)])
    assert np.array_equal(transfer_time_s(link, b), [transfer_time_s(link, float(x)) for x in b])
    with pytest.raises(InputError):
        allreduce_time_s(link, 1.0, 0)


def test_allreduce_algorithms_by_hand_and_auto_picks_the_fastest():
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.hw.link import allreduce_link_bytes, allreduce_time_s

    lk = load_config("nvlink5", kind="link")
    bw, lat = lk.effective_bw_Bps, lk.latency_s
    small, big, p = 160e3, 512e6, 8
    assert allreduce_time_s(lk, small, p, "one_shot") == pytest.approx(7 * small / bw + 2 * lat)
    assert allreduce_time_s(lk, small, p, "two_shot") == pytest.approx(2 * 7 / 8 * small / bw + 4 * lat)
    assert allreduce_time_s(lk, small, p, "ring") == pytest.approx(2 * 7 / 8 * small / bw + 14 * lat)
    # small messages: one-shot wins; large: the bandwidth-optimal ones (two-shot, fewer latencies than ring)
    assert allreduce_time_s(lk, small, p, "auto") == allreduce_time_s(lk, small, p, "one_shot")
    assert allreduce_time_s(lk, big, p, "auto") == allreduce_time_s(lk, big, p, "two_shot")
    assert allreduce_link_bytes(small, p, "auto", lk) == pytest.approx(p * (p - 1) * small)
    assert allreduce_link_bytes(big, p, "auto", lk) == pytest.approx(2 * (p - 1) * big)
    assert allreduce_time_s(lk, small, 1, "auto") == 0.0
    with pytest.raises(InputError):
        allreduce_time_s(lk, small, p, "tree")
    with pytest.raises(InputError):
        allreduce_link_bytes(small, p, "auto")
