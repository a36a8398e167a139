"""The HBM pin rate as an ablation knob: clock consistency, tCK derivation, the rounding rule for timing
relations, and the kernel's bandwidth following the pin rate (config/dram.py, families/hbm.toml)."""

import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.config.dram import family_beats_per_tck, from_raw
from tokenstack_sim.config.loader import read_raw
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.dram.patterns import generate
from tokenstack_sim.hw.dram.run import run_dram

HBM4_10 = ["clock.data_rate_gbps=10", "clock.tck_ns=0.4"]


def test_mismatched_rate_and_tck_names_both_keys_and_the_fix():
    with pytest.raises(InputError) as err:
        load_config("hbm4-ramulator21", ["clock.data_rate_gbps=10", "clock.tck_ns=0.5"])
    msg = err.value.message
    assert "clock.data_rate_gbps 10" in msg and "clock.tck_ns 0.5" in msg
    assert "4 beats per tCK" in msg and "tck_ns = 0.4" in msg
    assert err.value.source == "--set"  # blamed on the override that broke it


def test_rate_alone_on_a_speed_bin_is_refused():
    # hbm3-ramulator21 gives its core timings in cycles (Ramulator's speed bin): a new rate would shrink them
    with pytest.raises(InputError) as err:
        load_config("hbm3-ramulator21", ["clock.data_rate_gbps=8"])
    assert "clock.tck_ns 0.625" in err.value.message and "tck_ns = 0.5" in err.value.message


def test_rate_alone_derives_tck_where_the_core_timings_are_in_ns(tmp_path):
    at10 = load_config("hbm4-ramulator21", ["clock.data_rate_gbps=10"])
    assert at10.tck_ns == pytest.approx(0.4) and at10.peak_bw_GBps == pytest.approx(2560.0)
    assert dict(at10.n) == dict(load_config("hbm4-ramulator21", HBM4_10).n)
    path = tmp_path / "pin.toml"  # a file restating the rate alone derives its tCK too
    path.write_text('schema_version = 1\nkind = "dram"\nbase = "hbm4-ramulator21"\nname = "x"\n'
                    "[clock]\ndata_rate_gbps = 10.0\n")
    assert load_config(str(path)).tck_ns == pytest.approx(0.4)
    # and through a system's stack, as a one-parameter sweep over the pin rate writes it
    sysc = load_config("tokenstack-hbm4", ["gpu_stack.dram.clock.data_rate_gbps=10"], kind="system")
    assert sysc.gpu_stack.dram.tck_ns == pytest.approx(0.4)


def test_mismatch_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "pin.toml"
    path.write_text('schema_version = 1\nkind = "dram"\nbase = "hbm4-ramulator21"\nname = "x"\n'
                    "[clock]\ndata_rate_gbps = 10.0\ntck_ns = 0.5\n")
    with pytest.raises(InputError) as err:
        load_config(str(path))
    assert str(path) in str(err.value) and err.value.where == "clock" and "tck_ns = 0.4" in err.value.message


def test_published_rounded_tck_is_accepted():
    # AttAcc hard-codes tCK 0.769 ns for 4 / 5.2 Gb/s (hardware.md §7): 0.03% off, kept as published
    assert load_config("hbm3-attacc-5.2").tck_ns == 0.769


def test_tck_is_derived_from_the_rate_when_not_given():
    raw, path = read_raw("hbm4-ramulator21")
    raw["clock"] = {"data_rate_gbps": 8.0}
    at8 = from_raw(raw, path)
    assert at8.tck_ns == 0.5 and dict(at8.n) == dict(load_config("hbm4-ramulator21").n)
    raw["clock"] = {"data_rate_gbps": 10.0}
    assert from_raw(raw, path).tck_ns == pytest.approx(0.4)


def test_family_gives_beats_per_tck(tmp_path):
    bad = tmp_path / "fam.toml"
    bad.write_text('name = "fam"\n')
    with pytest.raises(InputError) as err:
        family_beats_per_tck(str(bad))
    assert err.value.where == "beats_per_tck" and str(bad) in str(err.value)


def test_pin_rate_scales_ns_timings_and_keeps_clock_counted_ones():
    at8, at10 = load_config("hbm4-ramulator21"), load_config("hbm4-ramulator21", HBM4_10)
    assert at10.peak_bw_GBps == pytest.approx(2560.0) and at8.peak_bw_GBps == pytest.approx(2048.0)
    for p in ("nBL", "nCCD_S", "nCCD_L"):  # nCK in the preset (hardware.md §1: column delays in cycles)
        assert at10.n[p] == at8.n[p]
    assert (at8.n["nRCD_RD"], at10.n["nRCD_RD"]) == (39, 49)  # 19.5 ns at 0.5 / 0.4 ns


def test_relation_broken_only_by_rounding_is_restored():
    # tRC 45 = tRAS 28.5 + tRP 16.5 ns holds exactly; at tCK 0.4 ns: ceil(112.5) = 113 < 72 + 42 = 114
    r = load_config("hbm4-ramulator21", HBM4_10)
    assert (r.n["nRAS"], r.n["nRP"], r.n["nRC"]) == (72, 42, 114)
    assert r.waived == ()
    # the Samsung grade relies on it too: tRC_ns 45 alone is 132 cycles at tCK 0.34188 ns
    s = load_config("hbm4-samsung-11.7")
    assert s.n["nRC"] == s.n["nRAS"] + s.n["nRP"] == 133


def test_relation_that_fails_in_ns_still_errors():
    with pytest.raises(InputError, match=r"tRC >= tRAS \+ tRP is violated"):
        load_config("hbm4-ramulator21", ["timing.tRC_ns=44"])  # 44 < 28.5 + 16.5 ns
    with pytest.raises(InputError, match=r"tRC >= tRAS \+ tRP is violated"):
        load_config("hbm3-ramulator21", ["timing.nRC=70"])  # all in cycles: nothing was rounded
    assert load_config("hbm3-attacc-5.2").waived == ("rc_ge_ras_plus_rp",)  # cycles as published, waived


def test_kernel_sequential_bandwidth_rises_with_pin_rate():
    # Measured (20,000 sequential reads, this commit): 1,604.0 GB/s at 8 Gb/s, 1,779.8 GB/s at 10 Gb/s
    # (+11%); before, tCK did not follow the rate and both runs gave the same cycles.
    bw = {}
    for rate, overrides in ((8, []), (10, HBM4_10)):
        r = load_config("hbm4-ramulator21", overrides)
        bw[rate] = run_dram(r, generate("sequential", 20_000, r.capacity_bytes, r.access_bytes)).bandwidth_GBps
    assert bw[10] > 1.05 * bw[8]
    assert bw[10] <= 2560.0
