"""Hand-made per-rule sequences for the protocol checker (no kernel): legal at exact minimum gaps,
one cycle early -> exactly the named rule. (Written as an independent review of the checker.)"""
import numpy as np
import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.config.dram import COMMANDS
from tokenstack_sim.hw.dram.command_log import LOG_DTYPE
from tokenstack_sim.hw.dram.protocol_checker import check_log

pytestmark = pytest.mark.unit
CODE = {c: i for i, c in enumerate(COMMANDS)}
R = load_config("hbm3-ramulator21")
R_PB = load_config("hbm3-ramulator21", ['refresh.mode="per_bank"'])  # for sequences with REFpb
N = R.n
A = (0, 0, 0, 0, 0)   # a bank
B = (0, 0, 0, 0, 1)   # same bank group
D = (0, 0, 0, 1, 0)   # other bank group, same SID
E = (0, 0, 1, 0, 0)   # other SID, same pseudo-channel
F = (0, 1, 0, 0, 0)   # other pseudo-channel, same channel
PC0 = (0, 0, -1, -1, -1)
WR_END = N["nCWL"] + N["nBL"]


def for_seq(seq):
    """The config a sequence is legal under: per-bank refresh if it uses REFpb."""
    return R_PB if any(step[1] == "REFpb" for step in seq) else R


def log_of(seq):
    return np.array([(t, *w, CODE[c], row, col) for t, c, w, row, col in seq], dtype=LOG_DTYPE)


def act(t, w, row=1): return (t, "ACT", w, row, -1)
def pre(t, w, row=1): return (t, "PRE", w, row, -1)
def col(t, c, w, row=1): return (t, c, w, row, 0)
def ref(t, c, w): return (t, c, w, -1, -1)


# (rule(s) expected when the last command is one cycle early, legal sequence with the last at its minimum)
CASES = {
    "tRC": ({"tRC"}, [act(0, A), pre(N["nRAS"], A), act(N["nRC"], A, 2)]),
    "tRP": ({"tRP"}, [act(0, A), pre(50, A), act(50 + N["nRP"], A, 2)]),
    "tRCD_RD": ({"tRCD_RD"}, [act(0, A), col(N["nRCD_RD"], "RD", A)]),
    "tRCD_WR": ({"tRCD_WR"}, [act(0, A), col(N["nRCD_WR"], "WR", A)]),
    "tRAS": ({"tRAS"}, [act(0, A), pre(N["nRAS"], A)]),
    "tRTP": ({"tRTP"}, [act(0, A), col(40, "RD", A), pre(40 + N["nRTP"], A)]),
    "tWR": ({"tWR"}, [act(0, A), col(15, "WR", A), pre(15 + WR_END + N["nWR"], A)]),
    "RDA->ACT": ({"tRTP+tRP"}, [act(0, A), col(40, "RDA", A), act(40 + N["nRTP"] + N["nRP"], A, 2)]),
    "WRA->ACT": ({"tWR+tRP"}, [act(0, A), col(15, "WRA", A), act(15 + WR_END + N["nWR"] + N["nRP"], A, 2)]),
    "tRFCpb": ({"tRFCpb"}, [ref(0, "REFpb", A), act(N["nRFCpb"], A)]),
    "tCCD_L RD": ({"tCCD_L"}, [act(0, A), act(5, B), col(36, "RD", A), col(36 + N["nCCD_L"], "RD", B)]),
    "tCCD_L WR": ({"tCCD_L"}, [act(0, A), act(5, B), col(20, "WR", A), col(20 + N["nCCD_L"], "WR", B)]),
    "tWTR_L": ({"tWTR_L"}, [act(0, A), act(5, B), col(36, "WR", A), col(36 + WR_END + N["nWTR_L"], "RD", B)]),
    "tRRD_L": ({"tRRD_L"}, [act(0, A), act(N["nRRD_L"], B)]),
    "tRRD_S": ({"tRRD_S"}, [act(0, A), act(N["nRRD_S"], D)]),
    # nCCD_S == nBL on this preset, so one cycle early also overlaps the two read bursts
    "tCCD_S": ({"tCCD_S", "data_bus"}, [act(0, A), act(4, D), col(35, "RD", A), col(35 + max(N["nCCD_S"], N["nBL"]), "RD", D)]),
    "tCCD_R": ({"tCCD_R"}, [act(0, A), act(4, E), col(35, "RD", A), col(35 + N["nCCD_R"], "RD", E)]),
    "tRTW": ({"tRTW"}, [act(0, A), act(4, D), col(35, "RD", A), col(35 + N["nRTW"], "WR", D)]),
    "tWTR_S": ({"tWTR_S"}, [act(0, A), act(4, D), col(19, "WR", A), col(19 + WR_END + N["nWTR_S"], "RD", D)]),
    "tFAW": ({"tFAW"}, [act(0, (0, 0, 0, 0, 0)), act(4, (0, 0, 0, 1, 0)), act(8, (0, 0, 0, 2, 0)),
                        act(12, (0, 0, 0, 3, 0)), act(N["nFAW"], (0, 0, 1, 0, 0))]),
    "row_bus": ({"row_bus"}, [act(0, A), act(2, F)]),
    "command_bus row": ({"command_bus"}, [ref(10, "PREA", PC0), ref(11, "PREA", (0, 1, -1, -1, -1))]),
    "command_bus col": ({"command_bus"}, [act(0, A), act(2, F), col(33, "RD", A), col(34, "RD", F)]),
    "tRFC": ({"tRFC"}, [ref(0, "REFab", PC0), act(N["nRFC"], A)]),
    "ACT->REFab": ({"tRC"}, [act(0, A), pre(45, A), ref(N["nRC"], "REFab", PC0)]),
    "PRE->REFab": ({"tRP"}, [act(0, A), pre(50, A), ref(50 + N["nRP"], "REFab", PC0)]),
    "PREA->REFab": ({"tRP"}, [act(0, A), ref(50, "PREA", PC0), ref(50 + N["nRP"], "REFab", PC0)]),
    "REFpb->REFpb": ({"tRREFD"}, [ref(0, "REFpb", A), ref(N["nRREFD"], "REFpb", B)]),
    "REFpb->ACT": ({"tRREFD"}, [ref(0, "REFpb", A), act(N["nRREFD"], B)]),
}


@pytest.mark.parametrize("name", CASES)
def test_minimum_gap_is_legal_and_one_cycle_early_is_caught(name):
    rules, seq = CASES[name]
    report = check_log(log_of(seq), for_seq(seq))
    assert report.ok, str(report)
    t, *rest = seq[-1]
    early = check_log(log_of(seq[:-1] + [(t - 1, *rest)]), for_seq(seq))
    assert set(early.counts_by_rule) == rules, str(early)
    assert all(n == 1 for n in early.counts_by_rule.values()), str(early)


def test_single_command_bus():
    r = load_config("hbm3-ramulator21", ["controller.dual_command_bus=false"])
    seq = [act(0, A), col(31, "RD", A), act(32, F)]
    assert check_log(log_of(seq), r).ok
    assert check_log(log_of(seq[:2] + [act(31, F)]), r).counts_by_rule == {"command_bus": 1}
    assert check_log(log_of(seq[:2] + [act(31, F)]), R).ok   # legal on the split bus


@pytest.mark.parametrize("seq", [
    [col(10, "RD", A)],                                        # RD to a closed bank
    [act(0, A), act(N["nRC"], A, 2)],                          # ACT to an open bank
    [act(0, A, 1), col(40, "RD", A, 2)],                       # RD to a row that is not open
    [act(0, A), ref(N["nRC"], "REFab", PC0)],                  # REFab with a bank open
    [act(0, A), ref(N["nRC"], "REFpb", A)],                    # REFpb to an open bank
    [act(0, A), col(40, "RDA", A), col(80, "RD", A)],          # RDA closed the bank
])
def test_bank_state(seq):
    assert set(check_log(log_of(seq), for_seq(seq)).counts_by_rule) == {"bank_state"}


def test_order_and_range():
    assert "order" in check_log(log_of([act(10, A), act(5, F)]), R).counts_by_rule
    assert "range" in check_log(log_of([act(0, (0, 0, 0, 0, 4))]), R).counts_by_rule
    assert "range" in check_log(log_of([act(0, (16, 0, 0, 0, 0))]), R).counts_by_rule


def test_refresh_coverage():
    o = R.config.organization
    refi = N["nREFI"]
    end = 20 * refi
    pcs = [(c, p) for c in range(o.channels) for p in range(o.pseudo_channels)]
    # every PC refreshed once per nREFI, staggered by 2 cycles to keep the command bus legal
    seq = [ref(k * refi + 2 * i, "REFab", (c, p, -1, -1, -1)) for k in range(1, 20) for i, (c, p) in enumerate(pcs)]
    assert check_log(log_of(seq), R, end_cycle=end).ok
    missing = [e for e in seq if e[2][:2] != (3, 1) or e[0] < 5 * refi]  # PC (3,1) stops after 4 refreshes
    report = check_log(log_of(missing), R, end_cycle=end)
    assert set(report.counts_by_rule) == {"refresh_coverage"}
    assert {v.where[:2] for v in report.violations} == {(3, 1)}
    assert check_log(log_of([]), R, end_cycle=end).counts_by_rule["refresh_coverage"] >= len(pcs)
