"""`tokenstack dram` end to end: reports, traces, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.hw.dram.patterns import Requests, read_trace, write_trace

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("dram_warm")]


def tokenstack(*args):
    return subprocess.run([sys.executable, "-m", "tokenstack_sim.cli", *args], capture_output=True, text=True)


def test_pattern_run_prints_the_report():
    proc = tokenstack("dram", "--config", "hbm3-ramulator21", "--pattern", "mixed", "--requests", "3000")
    assert proc.returncode == 0, proc.stderr
    for words in ("bandwidth", "read latency", "queueing included", "row-hit rate", "refresh share", "energy"):
        assert words in proc.stdout


def test_json_and_command_log(tmp_path):
    log = tmp_path / "cmds.csv"
    proc = tokenstack("dram", "--pattern", "random", "--requests", "2000", "--json", "--command-log", str(log))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["requests"] == 2000 and data["command_counts"]["RD"] == 2000
    lines = log.read_text().splitlines()
    assert lines[0] == "cycle,channel,pseudo_channel,sid,bank_group,bank,command,row,column"
    assert len(lines) - 1 == sum(data["command_counts"].values())


def test_text_and_npz_traces_round_trip(tmp_path):
    r = load_config("hbm3-ramulator21")
    req = Requests(np.arange(0, 64 * 32, 32, dtype=np.uint64), np.arange(64) % 3 == 0, np.arange(64) * 2.0)
    for name in ("t.trace", "t.npz"):
        write_trace(req, tmp_path / name)
        back = read_trace(tmp_path / name)
        assert np.array_equal(back.address, req.address) and np.array_equal(back.is_write, req.is_write)
        proc = tokenstack("dram", "--config", "hbm3-ramulator21", "--trace", str(tmp_path / name), "--open-loop")
        assert proc.returncode == 0, proc.stderr
    assert r.capacity_bytes > req.address.max()


@pytest.mark.parametrize("content, words", [
    ("R 0x100\nX 0x200\n", "line 2: expected 'R|W ADDRESS'"),
    ("# header\n\nR 0x0\nR 0x400000000000\n", "line 4: address 0x400000000000 is beyond the capacity"),
    ("R 0x10000000000000000\n", "line 1: address 0x10000000000000000 is outside"),
    ("nan R 0x40\n1 R 0x80\n", "line 1: expected a finite time >= 0 ns"),
    ("1 R 0x40\n-5 R 0x80\n", "line 2: expected a finite time >= 0 ns"),
    (b"R 0x0\n\xff\xfeR\n", "line 2: not UTF-8 text"),
    ("R 0x100\nR zz\n", "line 2"),
    ("R 0x100\n# comment\nW 0x400000000000\n", "is beyond the capacity"),
    ("", "trace has no requests"),
])
def test_bad_traces_fail_with_file_and_line(tmp_path, content, words):
    path = tmp_path / "bad.trace"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    proc = tokenstack("dram", "--trace", str(path))
    assert proc.returncode == 2
    assert words in proc.stderr and "bad.trace" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, words", [
    (["--pattern", "random", "--requests", "0"], "'--requests': 0 is not in the range x>=1"),
    (["--pattern", "random", "--seed", "-1"], "'--seed': -1 is not in the range x>=0"),
    (["--pattern", "random", "--write-fraction", "1.5"], "expected a fraction"),
    (["--trace", "nowhere.trace"], "trace file not found"),
    ([], "give exactly one of --trace or --pattern"),
    (["--pattern", "random", "--set", "controller.address_map=\"ch,bogus\""], "unknown field 'bogus'"),
])
def test_bad_arguments_exit_2(args, words):
    proc = tokenstack("dram", *args)
    assert proc.returncode == 2
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_open_loop_needs_times(tmp_path):
    path = tmp_path / "untimed.trace"
    path.write_text("R 0x0\n")
    proc = tokenstack("dram", "--trace", str(path), "--open-loop")
    assert proc.returncode == 2 and "needs request times" in proc.stderr


@pytest.mark.parametrize("arrays, words", [
    ({"address": np.array([33.7]), "is_write": np.array([False])}, "'address' must be a 1-D integer array"),
    ({"address": np.zeros((4, 2), np.uint64), "is_write": np.zeros(4, bool)}, "1-D integer array"),
    ({"address": np.zeros(0, np.uint64), "is_write": np.zeros(0, bool)}, "trace has no requests"),
    ({"address": np.array([object()], dtype=object), "is_write": np.array([False])}, "not a readable .npz"),
    ({"address": np.array([0, 64], np.uint64), "is_write": np.zeros(2, bool), "time_ns": np.array([0, np.nan])},
     "time_ns must be finite"),
])
def test_bad_npz_traces(tmp_path, arrays, words):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    proc = tokenstack("dram", "--trace", str(path))
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr


def test_command_log_into_a_new_folder_is_readable(tmp_path):
    target = tmp_path / "new" / "cmds.csv"
    proc = tokenstack("dram", "--pattern", "random", "--requests", "100", "--command-log", str(target))
    assert proc.returncode == 0, proc.stderr
    assert target.stat().st_mode & 0o044  # not mkstemp's private 0600
