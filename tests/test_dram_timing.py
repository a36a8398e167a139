"""Each JEDEC constraint, through the kernel's own timing state: refused one cycle early, allowed on time.

The expected gaps are written here by hand from the JEDEC HBM rules (hardware.md §1, §6), not read from
the constraint family file that drives the kernel, so that a wrong or missing table entry fails a test.
"""

import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.config.dram import COMMANDS
from tokenstack_sim.hw.dram import kernels
from tokenstack_sim.hw.dram.run import build_tables

pytestmark = pytest.mark.timing

CODE = {c: i for i, c in enumerate(COMMANDS)}
T0 = 1000  # the first command's cycle, far from the start so that nothing else binds

# (prev, next, where the second command goes relative to the first, expected gap from the JEDEC rule)
BANK, BG, SID, PC, CH = (0, 0, 0, 0, 0), (0, 0, 0, 0, 1), (0, 0, 0, 1, 0), (0, 0, 1, 0, 0), (0, 1, 0, 0, 0)
CASES = [
    ("ACT", "RD", BANK, lambda n: n["nRCD_RD"]),
    ("ACT", "WR", BANK, lambda n: n["nRCD_WR"]),
    ("ACT", "PRE", BANK, lambda n: n["nRAS"]),
    ("ACT", "ACT", BANK, lambda n: n["nRC"]),
    ("PRE", "ACT", BANK, lambda n: n["nRP"]),
    ("RD", "PRE", BANK, lambda n: n["nRTP"]),
    ("WR", "PRE", BANK, lambda n: n["nCWL"] + n["nBL"] + n["nWR"]),
    ("RDA", "ACT", BANK, lambda n: n["nRTP"] + n["nRP"]),
    ("WRA", "ACT", BANK, lambda n: n["nCWL"] + n["nBL"] + n["nWR"] + n["nRP"]),
    ("REFpb", "ACT", BANK, lambda n: n["nRFCpb"]),
    ("PRE", "REFpb", BANK, lambda n: n["nRP"]),
    ("RD", "RD", BG, lambda n: n["nCCD_L"]),
    ("WR", "WR", BG, lambda n: n["nCCD_L"]),
    ("WR", "RD", BG, lambda n: n["nCWL"] + n["nBL"] + n["nWTR_L"]),
    ("ACT", "ACT", BG, lambda n: n["nRRD_L"]),
    ("RD", "RD", SID, lambda n: max(n["nCCD_S"], n["nBL"])),
    ("WR", "WR", SID, lambda n: max(n["nCCD_S"], n["nBL"])),
    ("WR", "RD", SID, lambda n: n["nCWL"] + n["nBL"] + n["nWTR_S"]),
    ("RD", "WR", SID, lambda n: n["nRTW"]),
    ("ACT", "ACT", SID, lambda n: n["nRRD_S"]),
    ("RD", "RD", PC, lambda n: max(n["nCCD_R"], n["nCCD_S"], n["nBL"])),
    ("ACT", "ACT", PC, lambda n: n["nRRD_S"]),
    ("REFpb", "REFpb", SID, lambda n: n["nRREFD"]),
    ("REFpb", "ACT", SID, lambda n: n["nRREFD"]),
    ("ACT", "ACT", CH, lambda n: 2),  # an ACT holds the channel's row-command bus for 2 cycles
    ("ACT", "PRE", CH, lambda n: 2),
]


class Device:
    """The kernel's timing state for one preset, driven command by command."""

    def __init__(self, preset, overrides=()):
        self.r = load_config(preset, list(overrides))
        self.tabs = build_tables(self.r)
        self.st, _ = self.tabs.fresh_state()
        self.ref_level = 1 if self.r.config.scopes.refresh == "pseudo_channel" else 2

    def _level(self, cmd):
        return self.ref_level if cmd in ("PREA", "REFab") else 4

    def issue(self, cmd, addr, t):
        kernels.record(self.tabs.tab, self.st, CODE[cmd], self._level(cmd), *addr, t)

    def earliest(self, cmd, addr):
        return kernels.earliest(self.tabs.tab, self.st, CODE[cmd], self._level(cmd), *addr)

    def allowed(self, cmd, addr, t):
        return self.earliest(cmd, addr) <= t


@pytest.mark.parametrize("preset", ["hbm3-ramulator21", "hbm4-ramulator21", "hbm3-attacc-5.2"])
@pytest.mark.parametrize("prev, nxt, rel, gap", CASES, ids=[f"{p}-{q}-{'bank bg sid pc ch'.split()[i]}"
                                                           for p, q, r, _ in CASES
                                                           for i in [[BANK, BG, SID, PC, CH].index(r)]])
def test_refused_one_cycle_early_allowed_on_time(preset, prev, nxt, rel, gap):
    dev = Device(preset)
    first = (0, 0, 0, 0, 0)
    dev.issue(prev, first, T0)
    t_ok = T0 + gap(dev.r.n)
    assert not dev.allowed(nxt, rel, t_ok - 1), f"{nxt} allowed one cycle before {prev}+{gap(dev.r.n)}"
    assert dev.allowed(nxt, rel, t_ok)


@pytest.mark.parametrize("prev, nxt, gap", [
    ("REFab", "ACT", lambda n: n["nRFC"]),
    ("PREA", "ACT", lambda n: n["nRP"]),
    ("PREA", "REFab", lambda n: n["nRP"]),
])
def test_all_bank_refresh_rules(prev, nxt, gap):
    dev = Device("hbm3-ramulator21")
    pc = (0, 1, 0, 0, 0)
    dev.issue(prev, pc, T0)
    target = (0, 1, 1, 2, 3)  # any bank of that pseudo-channel
    t_ok = T0 + gap(dev.r.n)
    assert not dev.allowed(nxt, target, t_ok - 1)
    assert dev.allowed(nxt, target, t_ok)
    assert dev.allowed(nxt, (0, 0, 1, 2, 3), T0 + 2)  # the other pseudo-channel is not refreshing


@pytest.mark.parametrize("prev, gap", [("ACT", lambda n: n["nRC"]), ("PRE", lambda n: n["nRP"]),
                                       ("RDA", lambda n: n["nRTP"] + n["nRP"])])
def test_refab_waits_for_every_bank(prev, gap):
    dev = Device("hbm3-ramulator21")
    dev.issue(prev, (0, 0, 1, 3, 2), T0)
    t_ok = T0 + gap(dev.r.n)
    assert not dev.allowed("REFab", (0, 0, 0, 0, 0), t_ok - 1)
    assert dev.allowed("REFab", (0, 0, 0, 0, 0), t_ok)


@pytest.mark.parametrize("preset, scope", [("hbm3-ramulator21", "pseudo_channel"), ("hbm4-ramulator21", "sid")])
def test_four_activate_window(preset, scope):
    dev = Device(preset, [f"scopes.faw=\"{scope}\""])
    n = dev.r.n
    # four ACTs in different bank groups of one SID, each as early as tRRD_S and the row bus allow
    t = T0
    times = []
    for g in range(4):
        addr = (0, 0, 0, g, 0)
        t = max(t, dev.earliest("ACT", addr))
        dev.issue("ACT", addr, t)
        times.append(t)
    fifth = (0, 0, 0, 0, 1)
    t_ok = max(times[0] + n["nFAW"], times[-1] + n["nRRD_S"], times[0] + n["nRRD_L"])
    assert not dev.allowed("ACT", fifth, t_ok - 1)
    assert dev.allowed("ACT", fifth, t_ok)
    other_sid = (0, 0, 1, 0, 1)
    if scope == "sid":  # the window counts per SID: another SID only waits for tRRD_S / the row bus
        assert dev.allowed("ACT", other_sid, times[-1] + max(n["nRRD_S"], 2))
    else:
        assert not dev.allowed("ACT", other_sid, t_ok - 1)


@pytest.mark.parametrize("prev, gap", [
    ("ACT", lambda n: n["nRAS"]),
    ("RD", lambda n: n["nRTP"]),
    ("RDA", lambda n: n["nRTP"]),
    ("WR", lambda n: n["nCWL"] + n["nBL"] + n["nWR"]),
    ("WRA", lambda n: n["nCWL"] + n["nBL"] + n["nWR"]),
])
def test_precharge_all_waits_for_every_bank(prev, gap):
    # found by the protocol checker: PREA once followed WRA without waiting for write recovery
    dev = Device("hbm3-ramulator21")
    dev.issue(prev, (0, 1, 1, 2, 3), T0)
    t_ok = T0 + gap(dev.r.n)
    assert not dev.allowed("PREA", (0, 1, 0, 0, 0), t_ok - 1)
    assert dev.allowed("PREA", (0, 1, 0, 0, 0), t_ok)
