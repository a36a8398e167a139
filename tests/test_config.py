"""Config loading: presets, inheritance, overrides, and a clear error for every kind of bad input."""

import subprocess
import sys

import pytest

from tokenstack_sim.config import list_presets, load_config
from tokenstack_sim.errors import InputError

pytestmark = pytest.mark.unit

PRESETS = ["hbm3-ramulator21", "hbm4-ramulator21", "hbm3-attacc-5.2", "hbm3e-micron-9.2", "hbm4-samsung-11.7"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_resolves(name):
    r = load_config(name)
    assert r.config.name == name
    assert r.config.schema_version == 1
    assert r.capacity_bytes > 0 and r.peak_bw_GBps > 0
    assert all(v >= 0 for v in r.n.values())


def test_list_presets_names_them_all():
    assert set(PRESETS) <= set(list_presets())


def test_derived_values_match_the_sources():
    hbm3 = load_config("hbm3-ramulator21")
    assert hbm3.capacity_bytes == 8 * 2**30  # HBM3_8Gb_8hi (hardware.md §6)
    assert hbm3.peak_bw_GBps == pytest.approx(819.2)
    assert hbm3.n["nRFC"] == 416  # 260 ns at 0.625 ns, rounded up
    hbm4 = load_config("hbm4-ramulator21")
    assert hbm4.peak_bw_GBps == pytest.approx(2048.0)  # 2 TB/s at 8 Gb/s (hardware.md §1)
    assert hbm4.n["nRCD_RD"] == 39  # 19.5 ns / 0.5 ns
    assert hbm4.n["nRP"] + hbm4.n["nRCD_RD"] + hbm4.n["nCL"] == 92  # 46.0 ns (dram_reference_points.md)
    attacc = load_config("hbm3-attacc-5.2")
    assert attacc.capacity_bytes == 16 * 2**30 and attacc.waived == ("rc_ge_ras_plus_rp",)


def test_base_inheritance_and_units():
    vendor = load_config("hbm4-samsung-11.7")
    assert vendor.config.organization.channels == 32  # from hbm4-ramulator21
    assert vendor.n["nCCD_S"] == 2  # set in cycles, replacing the base's tCCD_S_ns
    assert vendor.n["nRAS"] == 84  # 28.5 ns at 0.34188 ns, rounded up


def test_override_changes_one_value():
    r = load_config("hbm3-ramulator21", ["controller.read_queue=64", "timing.tRCD_RD_ns=20"])
    assert r.config.controller.read_queue == 64
    assert r.n["nRCD_RD"] == 32


def _write(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text('schema_version = 1\nkind = "dram"\nbase = "hbm3-ramulator21"\nname = "x"\nfamily = "hbm"\n' + text)
    return path


@pytest.mark.parametrize("text, where, words", [
    ("[controller]\nreadqueue = 3\n", "controller.readqueue", "unknown key; valid keys here: active_buffer"),
    ("[controller]\nread_queue = \"big\"\n", "controller.read_queue", "expected an integer"),
    ("[controller]\nread_queue = 0\n", "controller.read_queue", "must be >= 1"),
    ("[timing]\nnRC = 10\n", "timing", "tRC >= tRAS + tRP is violated"),
    ("[timing]\ntRCX_ns = 10\n", "timing.tRCX_ns", "unknown timing parameter"),
    ("[controller]\npage_policy = \"half\"\n", "controller.page_policy", "expected 'open' or 'closed'"),
    ("[controller]\naddress_map = \"ch,row,bogus\"\n", None, "unknown field 'bogus'"),
    ("[timing]\ntRC_ns = inf\n", "timing.tRC_ns", "expected a time from 0 to"),
    ("[timing]\nnCL = 1e300\n", "timing.nCL", "expected a whole number of cycles"),
    ("[timing]\nnREFIpb = 0\n", "timing", "tREFIpb and the burst length >= 1 cycle"),
    ("[organization]\nrows = 4611686018427387904\n", "organization.rows", "must be <= 16777216"),
    ("[organization]\ndq_bits = 1\nburst_length = 1\n", "organization.burst_length", "whole number of bytes"),
])
def test_bad_values_name_file_and_key(tmp_path, text, where, words):
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as err:
        r = load_config(str(path))
        from tokenstack_sim.hw.dram.address_map import parse_map  # maps are checked when a run builds them
        parse_map(r.config.controller.address_map, r.org, source=r.source)
    msg = str(err.value)
    assert words in msg
    assert str(path) in msg
    if where:
        assert err.value.where == where


def test_unknown_preset_lists_known_ones():
    with pytest.raises(InputError, match="known presets: .*hbm3-ramulator21"):
        load_config("hbm5-imaginary")


def test_wrong_schema_version(tmp_path):
    path = tmp_path / "v2.toml"
    path.write_text('schema_version = 2\nkind = "dram"\n')
    with pytest.raises(InputError, match="unsupported schema version 2"):
        load_config(str(path))


def test_bad_override_is_blamed_on_set():
    with pytest.raises(InputError) as err:
        load_config("hbm3-ramulator21", ["controller.write_queue=-4"])
    assert err.value.source == "--set" and err.value.where == "controller.write_queue"
    with pytest.raises(InputError, match="expected key.path=value"):
        load_config("hbm3-ramulator21", ["controller.write_queue"])
    with pytest.raises(InputError, match="base cannot be overridden"):
        load_config("hbm3-ramulator21", ["base=\"hbm4-ramulator21\""])
    with pytest.raises(InputError) as err:  # a relation broken by an override is blamed on the override
        load_config("hbm3-ramulator21", ["timing.nRC=1"])
    assert err.value.source == "--set" and "tRC >= tRAS + tRP" in err.value.message


def test_relative_base_path_is_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "parent.toml").write_text(
        'schema_version = 1\nkind = "dram"\nbase = "hbm3-ramulator21"\nname = "p"\nfamily = "hbm"\n'
        '[controller]\nread_queue = 48\n')
    (tmp_path / "sub" / "child.toml").write_text(
        'schema_version = 1\nkind = "dram"\nbase = "parent.toml"\nname = "c"\nfamily = "hbm"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config("sub/child.toml").config.controller.read_queue == 48


def test_not_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("schema_version = = 1\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(str(path))


@pytest.mark.parametrize("args, words", [
    (["check", "hbm3-ramulator21", "--set", "controller.foo=1"], "controller.foo: unknown key"),
    (["check", "nope-preset"], "unknown preset"),
    (["check", "missing.toml"], "missing.toml: file not found"),
])
def test_cli_errors_are_one_line_exit_2(args, words):
    proc = subprocess.run([sys.executable, "-m", "tokenstack_sim.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_check_prints_resolved_config():
    proc = subprocess.run([sys.executable, "-m", "tokenstack_sim.cli", "check", "hbm3-attacc-5.2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    assert "WARNING: waived timing relations" in proc.stdout and "nRCD_RD" in proc.stdout
