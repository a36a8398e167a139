"""The independent protocol checker: silent on real kernel runs, loud on planted violations."""

import numpy as np
import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.config.dram import COMMANDS
from tokenstack_sim.hw.dram.command_log import LOG_DTYPE, read_log, write_log
from tokenstack_sim.hw.dram.patterns import Requests, generate
from tokenstack_sim.hw.dram.protocol_checker import check_log
from tokenstack_sim.hw.dram.run import run_dram

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("dram_warm")]
CODE = {c: i for i, c in enumerate(COMMANDS)}


def _run(preset, overrides, pattern, n, seed=1):
    r = load_config(preset, overrides)
    res = run_dram(r, generate(pattern, n, r.capacity_bytes, r.access_bytes, seed=seed), command_log=True)
    return r, res


@pytest.mark.parametrize("preset, overrides", [
    ("hbm3-ramulator21", []),
    ("hbm3-ramulator21", ["refresh.mode=\"per_bank\""]),
    ("hbm3-ramulator21", ["scopes.refresh=\"sid\"", "scopes.faw=\"sid\"", "scopes.rrd=\"sid\""]),
    ("hbm3-ramulator21", ["controller.page_policy=\"closed\""]),
    ("hbm3-ramulator21", ["controller.dual_command_bus=false", "controller.scheduler=\"fcfs\""]),
    ("hbm4-ramulator21", []),
    ("hbm3-attacc-5.2", []),
    ("hbm3e-micron-9.2", ["controller.active_buffer=0"]),
])
@pytest.mark.parametrize("pattern", ["sequential", "random", "mixed", "strided"])
def test_real_runs_have_no_violations(preset, overrides, pattern):
    # long enough (over 8 us) for two or more refresh intervals in every pattern
    r, res = _run(preset, overrides, pattern, 250_000 if pattern == "sequential" else 60_000)
    assert res.command_counts["REFab"] + res.command_counts["REFpb"] > 0
    report = check_log(res.log, r, end_cycle=res.cycles)
    assert report.ok, str(report)
    assert report.commands == len(res.log) == sum(res.command_counts.values())


def test_open_loop_run_with_writes_has_no_violations():
    r = load_config("hbm4-ramulator21")
    req = generate("mixed", 30_000, r.capacity_bytes, r.access_bytes, seed=7)
    req = Requests(req.address, req.is_write, np.sort(np.random.default_rng(7).uniform(0, 30_000, len(req))))
    res = run_dram(r, req, command_log=True, open_loop=True)
    assert check_log(res.log, r, end_cycle=res.cycles).ok


@pytest.fixture(scope="module")
def real_log():
    r, res = _run("hbm3-ramulator21", [], "mixed", 40_000)
    return r, res.log, res.cycles


def _first(log, cmd, start=0):
    return start + int(np.flatnonzero(log["command"][start:] == CODE[cmd])[0])


def test_planted_early_read_is_caught(real_log):
    r, log, end = real_log
    log = log.copy()
    k = _first(log, "ACT")
    bank = tuple(log[k][f] for f in ("channel", "pseudo_channel", "sid", "bank_group", "bank"))
    same = np.flatnonzero((log["channel"] == bank[0]) & (log["pseudo_channel"] == bank[1]) & (log["sid"] == bank[2])
                          & (log["bank_group"] == bank[3]) & (log["bank"] == bank[4]))
    rd = [j for j in same if j > k and log["command"][j] in (CODE["RD"], CODE["WR"])][0]
    log["cycle"][rd] = log["cycle"][k] + r.n["nRCD_RD"] - 1  # one cycle too early (reads) or earlier
    log = np.sort(log, order="cycle", kind="stable")
    report = check_log(log, r)
    assert not report.ok
    assert {"tRCD_RD", "tRCD_WR"} & set(report.counts_by_rule)


def test_planted_missing_precharge_is_caught(real_log):
    r, log, end = real_log
    k = _first(log, "PRE")
    report = check_log(np.delete(log, k), r)
    assert report.counts_by_rule.get("bank_state", 0) >= 1


def test_planted_fifth_activate_is_caught():
    r = load_config("hbm3-ramulator21")
    n = r.n
    rows = []
    t = 100
    for g in range(5):  # five ACTs in five different banks, spaced by tRRD_L only
        rows.append((t, 0, 0, g % 2, g % 4, g // 4, CODE["ACT"], 1, -1))
        t += max(n["nRRD_L"], n["nRRD_S"], 2)
    log = np.array(rows, dtype=LOG_DTYPE)
    report = check_log(log, r)
    assert report.counts_by_rule == {"tFAW": 1}
    assert report.violations[0].required_gap == n["nFAW"]


def test_hand_made_legal_sequence_and_one_cycle_early_variants():
    r = load_config("hbm3-ramulator21")
    n = r.n
    act, rd = 100, 100 + n["nRCD_RD"]
    pre = max(act + n["nRAS"], rd + n["nRTP"])
    act2 = max(pre + n["nRP"], act + n["nRC"])
    good = [(act, "ACT", 5, -1), (rd, "RD", 5, 3), (pre, "PRE", 5, -1), (act2, "ACT", 9, -1)]

    def log_of(seq):
        return np.array([(t, 0, 0, 0, 0, 0, CODE[c], row, col) for t, c, row, col in seq], dtype=LOG_DTYPE)

    assert check_log(log_of(good), r).ok
    binding_act2 = "tRP" if pre + n["nRP"] >= act + n["nRC"] else "tRC"
    for i, rule in [(1, "tRCD_RD"), (2, "tRAS"), (3, binding_act2)]:
        bad = list(good)
        t, c, row, col = bad[i]
        bad[i] = (t - 1, c, row, col)
        report = check_log(log_of(bad), r)
        assert rule in report.counts_by_rule, (rule, str(report))


def test_refresh_coverage_and_command_bus(real_log, tmp_path):
    r, log, end = real_log
    no_refresh = log[log["command"] != CODE["REFab"]]
    no_refresh = no_refresh[no_refresh["command"] != CODE["PREA"]]
    report = check_log(no_refresh, r, end_cycle=end * 20)
    assert report.counts_by_rule.get("refresh_coverage", 0) > 0
    k = _first(log, "RD")
    doubled = np.insert(log, k + 1, log[k])  # a second column command in the same cycle
    report = check_log(doubled, r)
    assert "command_bus" in report.counts_by_rule
    path = tmp_path / "log.csv"
    write_log(log[:500], path)
    assert np.array_equal(read_log(path), log[:500])


def test_precharge_row_refresh_mode_and_refpb_before_refab():
    r = load_config("hbm3-ramulator21")
    n = r.n
    rows = [(100, 0, 0, 0, 0, 0, CODE["ACT"], 4, -1), (100 + n["nRAS"], 0, 0, 0, 0, 0, CODE["PRE"], 5, -1)]
    assert "bank_state" in check_log(np.array(rows, dtype=LOG_DTYPE), r).counts_by_rule  # wrong row named
    refs = [(100, 0, 0, 0, 0, 0, CODE["REFpb"], -1, -1), (113, 0, 0, -1, -1, -1, CODE["REFab"], -1, -1)]
    report = check_log(np.array(refs, dtype=LOG_DTYPE), r)  # all-bank mode: REFpb is out of place
    assert {"refresh_mode", "tRFCpb"} <= set(report.counts_by_rule)


def test_log_grows_when_refresh_outnumbers_requests():
    # 100 requests over 1 ms: ~16k refresh commands, more than the first log buffer holds
    r = load_config("hbm3-ramulator21")
    req = generate("random", 100, r.capacity_bytes, r.access_bytes, seed=2)
    req = Requests(req.address, req.is_write, np.linspace(0, 1e6, 100))
    res = run_dram(r, req, command_log=True, open_loop=True)
    assert len(res.log) == sum(res.command_counts.values()) > 3 * 100 + 4096
    assert check_log(res.log, r, end_cycle=res.cycles).ok
