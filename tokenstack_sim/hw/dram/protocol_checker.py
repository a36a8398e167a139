"""An independent DRAM protocol checker: replays a command log and reports every broken rule.

It shares no code with the kernel. The kernel is driven by the constraint table of a family file;
this module writes the JEDEC HBM rules out by hand in terms of the timing parameters (`r.n`), so a
wrong or missing table entry shows up as a violation here. It uses from the config only the timing
values, the organization, the scopes of tFAW / tRRD / refresh, the refresh mode and whether the
command bus is split.

Checked: bank state (ACT to a closed bank, column commands to the open row, PRE to an open bank,
refresh only with the banks closed, auto-precharge closing the bank); same-bank, same-bank-group,
pseudo-channel and SID-to-SID spacing; the activate rate (tRRD_S and the four-activate window) at the
configured scope; all-bank and per-bank refresh spacing; refresh coverage over the run; the data bus
(no overlapping bursts on a pseudo-channel); the command bus (one row and one column command per
channel per cycle, or one command when the bus is not split; an ACT holds the row bus for 2 cycles);
coordinates in range and cycles in order.

PIM all-bank mode: ACTab opens one row in every bank of its scope (a log row with -1 for the levels
the scope spans) after tRP / tRC / tRFC of each bank, MACab needs every bank of the scope open and
tRCD, PREab waits tRAS / tRTP / tWR of each bank; PRD and PWR obey the pseudo-channel data-bus rules of
RD and WR (bursts never overlap) without touching banks.

Left out: power-down and self-refresh states, refresh management (RFM), per-bank refresh ordering
rules beyond tRREFD, and data-bus ECC.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

COMMAND_NAMES = ("ACT", "PRE", "PREA", "RD", "WR", "RDA", "WRA", "REFab", "REFpb",
                 "ACTab", "MACab", "PREab", "PRD", "PWR")  # log codes, in order
ROW_COMMANDS = {"ACT", "PRE", "PREA", "REFab", "REFpb", "ACTab", "PREab"}
SCOPE_COMMANDS = {"PREA", "REFab", "ACTab", "MACab", "PREab", "PRD", "PWR"}  # not addressed to one bank
NEVER = -(10**18)


@dataclass(frozen=True)
class Violation:
    cycle: int
    rule: str
    command: str
    where: tuple  # (channel, pseudo_channel, sid, bank_group, bank)
    detail: str
    earlier_cycle: int | None = None
    required_gap: int | None = None
    actual_gap: int | None = None

    def __str__(self) -> str:
        gap = ""
        if self.required_gap is not None:
            gap = f" (needs {self.required_gap} cycles after cycle {self.earlier_cycle}, got {self.actual_gap})"
        return f"cycle {self.cycle}: {self.rule}: {self.command} at {self.where}: {self.detail}{gap}"


@dataclass
class CheckReport:
    commands: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def counts_by_rule(self) -> dict[str, int]:
        return dict(Counter(v.rule for v in self.violations))

    def __str__(self, limit: int = 10) -> str:
        if self.ok:
            return f"protocol check: {self.commands:,} commands, no violations"
        lines = [f"protocol check: {self.commands:,} commands, {len(self.violations):,} violations"]
        lines += [f"  {rule}: {n:,}" for rule, n in sorted(self.counts_by_rule.items())]
        lines += [f"  {v}" for v in self.violations[:limit]]
        return "\n".join(lines)


class _Checker:
    def __init__(self, resolved):
        self.n = dict(resolved.n)
        o = resolved.config.organization
        self.dims = (o.channels, o.pseudo_channels, o.sids, o.bank_groups, o.banks_per_group)
        self.rows = o.rows
        self.columns = o.columns
        self.faw_by_sid = resolved.config.scopes.faw == "sid"
        self.rrd_by_sid = resolved.config.scopes.rrd == "sid"
        self.refresh_by_sid = resolved.config.scopes.refresh == "sid"
        self.refresh_mode = resolved.config.refresh.mode
        self.split_bus = resolved.config.controller.dual_command_bus
        self.report = CheckReport()
        self.open_row: dict[tuple, int] = {}
        # last cycle of each command kind, per node; keys are coordinate tuples of the node's level
        self.last: dict[tuple, dict[str, int]] = defaultdict(dict)
        self.acts: dict[tuple, deque] = defaultdict(lambda: deque(maxlen=4))
        self.burst_end: dict[tuple, int] = defaultdict(lambda: NEVER)  # per pseudo-channel data bus
        self.refreshes: dict[tuple, list[int]] = defaultdict(list)
        self.bus: dict[tuple, Counter] = {}
        self.prev_cycle = NEVER

    # -- helpers
    def fail(self, t, rule, cmd, where, detail, earlier=None, need=None):
        self.report.violations.append(Violation(t, rule, cmd, where, detail, earlier, need,
                                                None if earlier is None else t - earlier))

    def gap(self, t, cmd, where, node, prev_kind, need, rule):
        earlier = self.last[node].get(prev_kind)
        if earlier is not None and t - earlier < need:
            self.fail(t, rule, cmd, where, f"too soon after {prev_kind}", earlier, need)

    def note(self, node, kind, t):
        self.last[node][kind] = t

    def banks_of(self, scope):
        c, p = scope[0], scope[1]
        sids = [scope[2]] if len(scope) > 2 else range(self.dims[2])
        for s in sids:
            for g in range(self.dims[3]):
                for b in range(self.dims[4]):
                    yield (c, p, s, g, b)

    # -- one command
    def step(self, t, c, p, s, g, b, cmd, row, col):
        n = self.n
        where = (c, p, s, g, b)
        self.report.commands += 1
        if t < self.prev_cycle:
            self.fail(t, "order", cmd, where, f"cycle goes back from {self.prev_cycle}")
        self.prev_cycle = t
        C, P, S, G, B = self.dims
        bank_level = cmd not in SCOPE_COMMANDS
        in_range = 0 <= c < C and 0 <= p < P
        if cmd in SCOPE_COMMANDS and cmd not in ("PREA", "REFab"):
            in_range = 0 <= c < C and -1 <= p < P and -1 <= s < S
        elif bank_level:
            in_range = in_range and 0 <= s < S and 0 <= g < G and 0 <= b < B
        elif self.refresh_by_sid:
            in_range = in_range and 0 <= s < S
        if not in_range:
            self.fail(t, "range", cmd, where, "coordinates outside the organization")
            return
        # command bus
        key = (c, t)
        counts = self.bus.setdefault(key, Counter())
        kind = "row" if cmd in ROW_COMMANDS else "col"
        counts[kind] += 1
        if (self.split_bus and counts[kind] > 1) or (not self.split_bus and sum(counts.values()) > 1):
            self.fail(t, "command_bus", cmd, where, f"second {kind if self.split_bus else ''} command on the channel "
                      "in one cycle")
        if len(self.bus) > 64:  # only the current cycle matters; keep the dict small
            self.bus = {key: counts}
        chan = (c,)
        if kind == "row":
            self.gap(t, cmd, where, chan, "ACT", 2, "row_bus")

        pc = (c, p)
        sid = (c, p, s)
        bg = (c, p, s, g)
        bank = where
        refresh_scope = (c, p, s) if self.refresh_by_sid else (c, p)

        if cmd in ("ACTab", "MACab", "PREab"):
            self.pim_command(t, cmd, (c, p, s), row)
            return
        if cmd in ("PRD", "PWR"):
            self.unit_transfer(t, cmd, (c, p, s, g, b))
            return
        if cmd == "ACT":
            if bank in self.open_row:
                self.fail(t, "bank_state", cmd, where, f"bank already has row {self.open_row[bank]} open")
            if not 0 <= row < self.rows:
                self.fail(t, "range", cmd, where, f"row {row} outside 0..{self.rows - 1}")
            self.gap(t, cmd, where, bank, "ACT", n["nRC"], "tRC")
            self.gap(t, cmd, where, bank, "PRE", n["nRP"], "tRP")
            self.gap(t, cmd, where, bank, "RDA", n["nRTP"] + n["nRP"], "tRTP+tRP")
            self.gap(t, cmd, where, bank, "WRA", n["nCWL"] + n["nBL"] + n["nWR"] + n["nRP"], "tWR+tRP")
            self.gap(t, cmd, where, bank, "REFpb", n["nRFCpb"], "tRFCpb")
            self.gap(t, cmd, where, refresh_scope, "PREA", n["nRP"], "tRP")
            self.gap(t, cmd, where, refresh_scope, "REFab", n["nRFC"], "tRFC")
            self.gap(t, cmd, where, bg, "ACT", n["nRRD_L"], "tRRD_L")
            rrd_node = sid if self.rrd_by_sid else pc
            self.gap(t, cmd, where, ("rrd",) + rrd_node, "ACT", n["nRRD_S"], "tRRD_S")
            faw_node = sid if self.faw_by_sid else pc
            window = self.acts[faw_node]
            if len(window) == 4 and t - window[0] < n["nFAW"]:
                self.fail(t, "tFAW", cmd, where, "fifth ACT inside the four-activate window", window[0], n["nFAW"])
            last_refpb = self.last[pc].get("REFpb")
            if last_refpb is not None and self.last[pc].get("REFpb_bank") != bank and t - last_refpb < n["nRREFD"]:
                self.fail(t, "tRREFD", cmd, where, "ACT too soon after a per-bank refresh of another bank",
                          last_refpb, n["nRREFD"])
            window.append(t)
            self.open_row[bank] = row
            for node in (bank, bg, ("rrd",) + rrd_node, refresh_scope, chan):
                self.note(node, "ACT", t)
        elif cmd == "PRE":
            # JEDEC allows a PRE to a closed bank as a no-op; this project's controllers never issue one,
            # so here it is reported as a scheduler error.
            if bank not in self.open_row:
                self.fail(t, "bank_state", cmd, where, "PRE to a closed bank")
            elif row != self.open_row[bank]:
                self.fail(t, "bank_state", cmd, where, f"PRE names row {row}, the open row is {self.open_row[bank]}")
            self.gap(t, cmd, where, bank, "ACT", n["nRAS"], "tRAS")
            self.gap(t, cmd, where, bank, "RD", n["nRTP"], "tRTP")
            self.gap(t, cmd, where, bank, "WR", n["nCWL"] + n["nBL"] + n["nWR"], "tWR")
            self.open_row.pop(bank, None)
            self.note(bank, "PRE", t)
            self.note(refresh_scope, "PRE", t)
        elif cmd == "PREA":
            scope = (c, p, s) if self.refresh_by_sid else (c, p)
            self.gap(t, cmd, where, scope, "ACT", n["nRAS"], "tRAS")
            self.gap(t, cmd, where, scope, "RD", n["nRTP"], "tRTP")
            self.gap(t, cmd, where, scope, "MAC", n["nRTP"], "tRTP")
            self.gap(t, cmd, where, scope, "WR", n["nCWL"] + n["nBL"] + n["nWR"], "tWR")
            for bk in self.banks_of(scope):
                self.open_row.pop(bk, None)
            self.note(scope, "PREA", t)
        elif cmd in ("RD", "RDA", "WR", "WRA"):
            is_read = cmd in ("RD", "RDA")
            open_row = self.open_row.get(bank)
            if open_row is None:
                self.fail(t, "bank_state", cmd, where, "column command to a closed bank")
            elif open_row != row:
                self.fail(t, "bank_state", cmd, where, f"row {row} is not the open row {open_row}")
            if not 0 <= col < self.columns:
                self.fail(t, "range", cmd, where, f"column {col} outside 0..{self.columns - 1}")
            wr_end = n["nCWL"] + n["nBL"]
            if is_read:
                self.gap(t, cmd, where, bank, "ACT", n["nRCD_RD"], "tRCD_RD")
                self.gap(t, cmd, where, bg, "RD", n["nCCD_L"], "tCCD_L")
                self.gap(t, cmd, where, bg, "WR", wr_end + n["nWTR_L"], "tWTR_L")
                self.gap(t, cmd, where, pc, "RD", max(n["nCCD_S"], n["nBL"]), "tCCD_S")
                self.gap(t, cmd, where, pc, "WR", wr_end + n["nWTR_S"], "tWTR_S")
                for other in range(S):
                    if other != s:
                        self.gap(t, cmd, where, (c, p, other), "RD", n["nCCD_R"], "tCCD_R")
                start, end = t + n["nCL"], t + n["nCL"] + n["nBL"]
            else:
                self.gap(t, cmd, where, bank, "ACT", n["nRCD_WR"], "tRCD_WR")
                self.gap(t, cmd, where, bg, "WR", n["nCCD_L"], "tCCD_L")
                self.gap(t, cmd, where, pc, "WR", max(n["nCCD_S"], n["nBL"]), "tCCD_S")
                self.gap(t, cmd, where, pc, "RD", n["nRTW"], "tRTW")
                start, end = t + n["nCWL"], t + n["nCWL"] + n["nBL"]
            if start < self.burst_end[pc]:
                self.fail(t, "data_bus", cmd, where, f"burst from cycle {start} overlaps one ending at "
                          f"{self.burst_end[pc]}")
            self.burst_end[pc] = max(self.burst_end[pc], end)
            kind_ = "RD" if is_read else "WR"
            for node in (bank, bg, pc, sid, refresh_scope):
                self.note(node, kind_, t)
            if cmd in ("RDA", "WRA"):
                self.open_row.pop(bank, None)
                self.note(bank, cmd, t)
                self.note(refresh_scope, cmd, t)
        elif cmd == "REFab":
            if self.refresh_mode != "all_bank":
                self.fail(t, "refresh_mode", cmd, where, f"all-bank refresh while the mode is {self.refresh_mode}")
            scope = (c, p, s) if self.refresh_by_sid else (c, p)
            self.gap(t, cmd, where, pc, "REFpb", n["nRFCpb"], "tRFCpb")
            open_banks = [bk for bk in self.banks_of(scope) if bk in self.open_row]
            if open_banks:
                self.fail(t, "bank_state", cmd, where, f"{len(open_banks)} bank(s) still open, e.g. {open_banks[0]}")
            self.gap(t, cmd, where, scope, "ACT", n["nRC"], "tRC")
            self.gap(t, cmd, where, scope, "PRE", n["nRP"], "tRP")
            self.gap(t, cmd, where, scope, "PREA", n["nRP"], "tRP")
            self.gap(t, cmd, where, scope, "RDA", n["nRTP"] + n["nRP"], "tRTP+tRP")
            self.gap(t, cmd, where, scope, "WRA", n["nCWL"] + n["nBL"] + n["nWR"] + n["nRP"], "tWR+tRP")
            self.gap(t, cmd, where, scope, "REFab", n["nRFC"], "tRFC")
            self.note(scope, "REFab", t)
            self.refreshes[scope].append(t)
        elif cmd == "REFpb":
            if self.refresh_mode != "per_bank":
                self.fail(t, "refresh_mode", cmd, where, f"per-bank refresh while the mode is {self.refresh_mode}")
            if bank in self.open_row:
                self.fail(t, "bank_state", cmd, where, "per-bank refresh of an open bank")
            self.gap(t, cmd, where, bank, "ACT", n["nRC"], "tRC")
            self.gap(t, cmd, where, bank, "PRE", n["nRP"], "tRP")
            self.gap(t, cmd, where, bank, "RDA", n["nRTP"] + n["nRP"], "tRTP+tRP")
            self.gap(t, cmd, where, bank, "WRA", n["nCWL"] + n["nBL"] + n["nWR"] + n["nRP"], "tWR+tRP")
            self.gap(t, cmd, where, bank, "REFpb", n["nRFCpb"], "tRFCpb")
            self.gap(t, cmd, where, refresh_scope, "REFab", n["nRFC"], "tRFC")
            self.gap(t, cmd, where, refresh_scope, "PREA", n["nRP"], "tRP")
            last = self.last[pc].get("REFpb")
            if last is not None and self.last[pc].get("REFpb_bank") != bank and t - last < n["nRREFD"]:
                self.fail(t, "tRREFD", cmd, where, "per-bank refreshes of two banks too close", last, n["nRREFD"])
            self.note(bank, "REFpb", t)
            self.note(pc, "REFpb", t)
            self.last[pc]["REFpb_bank"] = bank
            self.refreshes[bank].append(t)

    def pim_banks(self, c, p, s):
        C, P, S, G, B = self.dims
        for pp in ([p] if p >= 0 else range(P)):
            for ss in ([s] if s >= 0 else range(S)):
                for g in range(G):
                    for b in range(B):
                        yield (c, pp, ss, g, b)

    def pim_command(self, t, cmd, scope, row):
        n = self.n
        c, p, s = scope
        where = (c, p, s, -1, -1)
        banks = list(self.pim_banks(c, p, s))
        wr_rec = n["nCWL"] + n["nBL"] + n["nWR"]
        if cmd == "ACTab":
            if not 0 <= row < self.rows:
                self.fail(t, "range", cmd, where, f"row {row} outside 0..{self.rows - 1}")
            for bk in banks:
                if bk in self.open_row:
                    self.fail(t, "bank_state", cmd, where, f"bank {bk} already has row {self.open_row[bk]} open")
                    break
            for bk in banks:
                self.gap(t, cmd, bk, bk, "ACT", n["nRC"], "tRC")
                self.gap(t, cmd, bk, bk, "PRE", n["nRP"], "tRP")
                self.gap(t, cmd, bk, bk, "REFpb", n["nRFCpb"], "tRFCpb")
            for rs in {(bk[0], bk[1], bk[2]) if self.refresh_by_sid else (bk[0], bk[1]) for bk in banks}:
                self.gap(t, cmd, where, rs, "PREA", n["nRP"], "tRP")
                self.gap(t, cmd, where, rs, "REFab", n["nRFC"], "tRFC")
                self.note(rs, "ACT", t)
            for bk in banks:
                self.open_row[bk] = row
                self.note(bk, "ACT", t)
            self.note((c,), "ACT", t)
        elif cmd == "MACab":
            rows = {self.open_row.get(bk) for bk in banks}
            if None in rows or len(rows) != 1:
                self.fail(t, "bank_state", cmd, where, "MAC with a bank of the scope closed or on another row")
            for bk in banks:
                self.gap(t, cmd, bk, bk, "ACT", n["nRCD_RD"], "tRCD_RD")
                self.note(bk, "RD", t)
            for rs in {(bk[0], bk[1], bk[2]) if self.refresh_by_sid else (bk[0], bk[1]) for bk in banks}:
                self.note(rs, "MAC", t)  # not "RD": the refresh-scope key can equal the data-bus key
        else:  # PREab
            for bk in banks:
                self.gap(t, cmd, bk, bk, "ACT", n["nRAS"], "tRAS")
                self.gap(t, cmd, bk, bk, "RD", n["nRTP"], "tRTP")
                self.gap(t, cmd, bk, bk, "WR", wr_rec, "tWR")
                self.open_row.pop(bk, None)
                self.note(bk, "PRE", t)
            for rs in {(bk[0], bk[1], bk[2]) if self.refresh_by_sid else (bk[0], bk[1]) for bk in banks}:
                self.note(rs, "PRE", t)

    def unit_transfer(self, t, cmd, where):
        n = self.n
        c, p = where[0], where[1]
        if p < 0:
            self.fail(t, "range", cmd, where, "a transfer must name its pseudo-channel")
            return
        pc = (c, p)
        wr_end = n["nCWL"] + n["nBL"]
        if cmd == "PRD":
            self.gap(t, cmd, where, pc, "RD", max(n["nCCD_S"], n["nBL"]), "tCCD_S")
            self.gap(t, cmd, where, pc, "WR", wr_end + n["nWTR_S"], "tWTR_S")
            start, end = t + n["nCL"], t + n["nCL"] + n["nBL"]
            self.note(pc, "RD", t)
        else:
            self.gap(t, cmd, where, pc, "WR", max(n["nCCD_S"], n["nBL"]), "tCCD_S")
            self.gap(t, cmd, where, pc, "RD", n["nRTW"], "tRTW")
            start, end = t + n["nCWL"], t + n["nCWL"] + n["nBL"]
            self.note(pc, "WR", t)
        if start < self.burst_end[pc]:
            self.fail(t, "data_bus", cmd, where, f"burst from cycle {start} overlaps one ending at {self.burst_end[pc]}")
        self.burst_end[pc] = max(self.burst_end[pc], end)

    # -- end of run
    def coverage(self, end_cycle: int) -> None:
        n = self.n
        C, P, S, G, B = self.dims
        if self.refresh_mode == "all_bank":
            interval = n["nREFI"]
            scopes = [(c, p, s) for c in range(C) for p in range(P) for s in range(S)] if self.refresh_by_sid \
                else [(c, p) for c in range(C) for p in range(P)]
        elif self.refresh_mode == "per_bank":
            interval = n["nREFIpb"] * S * G * B  # every bank of a pseudo-channel in turn
            scopes = [(c, p, s, g, b) for c in range(C) for p in range(P) for s in range(S)
                      for g in range(G) for b in range(B)]
        else:
            return
        for scope in scopes:
            times = [0] + self.refreshes.get(scope, []) + [end_cycle]
            longest = max(b - a for a, b in zip(times, times[1:]))
            if longest > 9 * interval:  # JEDEC lets up to 8 refreshes be postponed
                self.fail(end_cycle, "refresh_coverage", "REF", scope + (-1,) * (5 - len(scope)),
                          f"{longest} cycles without a refresh (limit 9 x {interval})")
            expected = end_cycle // interval
            got = len(self.refreshes.get(scope, []))
            if got < expected - 1:
                self.fail(end_cycle, "refresh_coverage", "REF", scope + (-1,) * (5 - len(scope)),
                          f"{got} refreshes in {end_cycle} cycles, expected at least {expected - 1}")


def check_log(log: np.ndarray, resolved, end_cycle: int | None = None) -> CheckReport:
    """Replay `log` (the command-log structured array) against the rules of `resolved`."""
    checker = _Checker(resolved)
    cols = [log[f].tolist() for f in ("cycle", "channel", "pseudo_channel", "sid", "bank_group", "bank",
                                      "command", "row", "column")]
    for t, c, p, s, g, b, code, row, col in zip(*cols):
        checker.step(t, c, p, s, g, b, COMMAND_NAMES[code], row, col)
    if end_cycle is not None:
        checker.coverage(end_cycle)
    return checker.report


def check_log_file(path: str | Path, resolved, end_cycle: int | None = None) -> CheckReport:
    """Read a CSV command log and check it."""
    from tokenstack_sim.hw.dram.command_log import read_log

    return check_log(read_log(path), resolved, end_cycle)
