"""DRAM device and memory-controller configuration: the `kind = "dram"` config.

A DRAM config is a device (organization, clock, timing parameters, constraint scopes, refresh, energy
per action) plus the controller and front end that drive it. Timing parameters are given in cycles
(`nRCD_RD = 31`) or in nanoseconds (`tRCD_RD_ns = 19.4`, rounded up to whole cycles at resolve time),
exactly one form per parameter, each in the unit its source gives it: a pin-rate change then scales the
ns-specified core timings and keeps the clock-counted ones (burst, column-to-column delays). The command
set, the constraint table and the data beats per command clock come from a *family* file
(`arch_configs/dram/families/<family>.toml`), so a standard is data, not code.

The clock: `data_rate_gbps x tck_ns` must equal the family's `beats_per_tck` (a published, rounded tCK
such as AttAcc's 0.769 ns for 4 / 5.2 Gb/s is accepted within 0.1%). A config that gives only
`data_rate_gbps` gets `tck_ns = beats_per_tck / data_rate_gbps`; a rate set alone (a `--set` or a file
over a base) drops the stated tCK where the core timings are in ns (config/loader.py `_rate_alone`), so
`--set clock.data_rate_gbps=10` on hbm4-ramulator21 is a real pin-rate change; where the two disagree (a
speed bin with its core in cycles given a new rate, or both keys set inconsistently) resolve stops and
names the consistent value.

`resolve_dram()` is pure: it derives cycle counts, compiles the constraint table against the timing
values, checks the relations that must hold between timings, and computes capacity and peak bandwidth.
Each timing is rounded up to cycles on its own, so a relation that holds in ns (tRC >= tRAS + tRP) can
fail by a cycle after rounding; such a relation is restored by rounding up its dependent parameter
(nRC = max(nRC, nRAS + nRP)), as a controller programmed from the datasheet would. A relation that
fails in ns, or between values all given in cycles, is an error unless waived by name.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Mapping

from tokenstack_sim.config.expr import evaluate
from tokenstack_sim.config.schema import spec
from tokenstack_sim.errors import InputError

# Every timing parameter a DRAM preset must define, with what it means.
TIMING_PARAMS: dict[str, str] = {
    "nBL": "burst length on the data bus",
    "nCL": "read latency (RD to first data)",
    "nCWL": "write latency (WR to first data)",
    "nRCD_RD": "ACT to RD, same bank",
    "nRCD_WR": "ACT to WR, same bank",
    "nRP": "PRE to ACT, same bank",
    "nRAS": "ACT to PRE, same bank",
    "nRC": "ACT to ACT, same bank",
    "nWR": "write recovery (end of write data to PRE)",
    "nRTP": "RD to PRE, same bank",
    "nCCD_S": "column to column, different bank group",
    "nCCD_L": "column to column, same bank group",
    "nCCD_R": "read to read, different SID of one pseudo-channel",
    "nRRD_S": "ACT to ACT, different bank group",
    "nRRD_L": "ACT to ACT, same bank group",
    "nFAW": "window for four ACTs",
    "nWTR_S": "end of write data to RD, different bank group",
    "nWTR_L": "end of write data to RD, same bank group",
    "nRTW": "RD to WR",
    "nRFC": "all-bank refresh cycle time",
    "nRFCpb": "per-bank refresh cycle time",
    "nREFI": "all-bank refresh interval",
    "nREFIpb": "per-bank refresh interval (one bank of the refresh scope every nREFIpb)",
    "nRREFD": "per-bank refresh to per-bank refresh or ACT, different bank",
}

MAX_CYCLES = 1 << 32  # no DRAM timing is anywhere near 2^32 cycles; larger is a typo
COMMANDS = ("ACT", "PRE", "PREA", "RD", "WR", "RDA", "WRA", "REFab", "REFpb",
            # PIM all-bank mode and unit/base-die transfers (see the family file): used by stack runs
            "ACTab", "MACab", "PREab", "PRD", "PWR")
LEVELS = ("channel", "pseudo_channel", "sid", "bank_group", "bank")
Scope = Literal["channel", "pseudo_channel", "sid", "bank_group", "bank"]


@dataclass(frozen=True)
class Organization:
    standard: str = spec(doc="standard name, e.g. 'HBM3'")
    channels: int = spec(min=1, max=1024, doc="channels per stack")
    pseudo_channels: int = spec(min=1, max=16, doc="pseudo-channels per channel")
    sids: int = spec(min=1, max=16, doc="stack IDs (ranks) per pseudo-channel")
    bank_groups: int = spec(min=1, max=64, doc="bank groups per SID")
    banks_per_group: int = spec(min=1, max=64, doc="banks per bank group")
    rows: int = spec(min=1, max=1 << 24, doc="rows per bank")
    columns: int = spec(min=1, max=1 << 16, doc="column accesses (bursts) per row")
    dq_bits: int = spec(min=1, max=4096, doc="data pins per pseudo-channel")
    burst_length: int = spec(min=1, max=256, doc="beats per access")
    dies: int = spec(min=1, max=64, doc="DRAM dies in the stack")
    die_density_gbit: int = spec(min=1, max=1024, doc="die density in Gbit")

    def __post_init__(self) -> None:
        if (self.dq_bits * self.burst_length) % 8:
            raise InputError(f"dq_bits x burst_length = {self.dq_bits * self.burst_length} bits is not a whole "
                             "number of bytes per access", where="burst_length")


@dataclass(frozen=True)
class Clock:
    data_rate_gbps: float = spec(min=0.1, max=1000.0, doc="data rate per pin in Gb/s")
    tck_ns: float | None = spec(None, min=0.01, max=100.0, doc="command clock period in ns (default: the "
                                "family's beats_per_tck / data_rate_gbps)")


@dataclass(frozen=True)
class Scopes:
    faw: Literal["pseudo_channel", "sid"] = spec("pseudo_channel", doc="level at which tFAW counts ACTs")
    rrd: Literal["pseudo_channel", "sid"] = spec("pseudo_channel", doc="level at which tRRD_S applies")
    refresh: Literal["pseudo_channel", "sid"] = spec("pseudo_channel", doc="what one all-bank REF covers")
    pim: Literal["channel", "pseudo_channel", "sid"] = spec(
        "sid", doc="what one all-bank PIM command covers (set by a stack config's pim.mode_scope)")


@dataclass(frozen=True)
class Refresh:
    mode: Literal["all_bank", "per_bank", "none"] = spec("all_bank", doc="refresh policy")


@dataclass(frozen=True)
class Energy:
    """Energy per DRAM action; defaults must be cited in each preset.

    A bit moved between a cell and the stack's pins crosses up to five segments (FGDRAM's breakdown via
    AttAcc, hardware.md §2); each has its own pJ/bit so that every path (GPU, DMA, PIM placement) is the
    sum of the segments it crosses (hw/stack/energy.py). Reads and writes cross the same segments at the
    same cost [E]. The ACT/PRE share is not a per-bit figure here: ACTs are counted (act_pre_pj each)."""
    act_pre_pj: float = spec(min=0.0, doc="one ACT plus its PRE, pJ")
    cell_rw_pj_per_bit: float = spec(min=0.0, doc="cell read or write into the bank's column path, pJ/bit")
    bank_to_bankgroup_pj_per_bit: float = spec(min=0.0, doc="column decoder to the bank-group mux, pJ/bit")
    bankgroup_to_global_pj_per_bit: float = spec(min=0.0, doc="bank-group mux to the global I/O mux, pJ/bit")
    tsv_pj_per_bit: float = spec(min=0.0, doc="through-silicon vias between a core die and the base die, pJ/bit")
    interposer_pj_per_bit: float = spec(min=0.0, doc="base-die PHY and silicon-interposer I/O to the GPU, pJ/bit")
    ref_ab_pj: float = spec(min=0.0, doc="one all-bank REF of the refresh scope, pJ")
    ref_pb_pj: float = spec(min=0.0, doc="one per-bank REF, pJ")
    background_mw_per_channel: float = spec(min=0.0, doc="standby power per channel, mW")

    @property
    def rd_pj_per_bit(self) -> float:
        """A read from a cell to the stack's pins: every segment (derived, not a config key)."""
        return (self.cell_rw_pj_per_bit + self.bank_to_bankgroup_pj_per_bit + self.bankgroup_to_global_pj_per_bit
                + self.tsv_pj_per_bit + self.interposer_pj_per_bit)

    @property
    def wr_pj_per_bit(self) -> float:
        """A write from the stack's pins to a cell: the same segments as a read [E]."""
        return self.rd_pj_per_bit


@dataclass(frozen=True)
class Controller:
    read_queue: int = spec(32, min=1, max=4096, doc="read-queue entries per channel controller")
    write_queue: int = spec(32, min=1, max=4096, doc="write-buffer entries per channel controller")
    write_high_watermark: float = spec(0.8, min=0.0, max=1.0, doc="drain writes from this fill fraction")
    write_low_watermark: float = spec(0.2, min=0.0, max=1.0, doc="stop draining at this fill fraction")
    scheduler: Literal["frfcfs", "fcfs"] = spec("frfcfs", doc="request scheduler")
    page_policy: Literal["open", "closed"] = spec("open", doc="row-buffer policy")
    address_map: str = spec("mop4clxor", doc="named map (mop4clxor, row_major, bank_first) or field order")
    active_buffer: int = spec(0, min=0, max=4096, doc="requests whose row was activated for them leave the "
                              "queue count, up to this many per channel (Ramulator 2's active buffer)")
    dual_command_bus: bool = spec(True, doc="one row and one column command per cycle (HBM's split CA bus)")
    write_max_age_cycles: int = spec(0, min=0, max=1 << 30, doc="drain the write buffer once its oldest write "
                                     "has waited this long (0: only by watermark or an empty read queue)")

    def __post_init__(self) -> None:
        if self.write_low_watermark >= self.write_high_watermark:
            raise InputError("write_low_watermark must be below write_high_watermark", where="write_low_watermark")


@dataclass(frozen=True)
class Frontend:
    mode: Literal["in_order", "open_loop"] = spec("in_order", doc="how requests reach the controllers")
    requests_per_cycle: int = spec(32, min=1, doc="requests the in-order front end offers per DRAM cycle")


@dataclass(frozen=True)
class DramConfig:
    """A `kind = "dram"` config file, as written (before resolve)."""
    schema_version: int = spec(min=1, max=1, doc="config schema version (1)")
    kind: Literal["dram"] = spec(doc="'dram'")
    name: str = spec(doc="preset name")
    family: str = spec(doc="command/constraint family file under arch_configs/dram/families")
    organization: Organization = spec()
    clock: Clock = spec()
    timing: Mapping[str, float] = spec(doc="timing parameters: nX in cycles or tX_ns in ns")
    energy: Energy = spec()
    description: str = spec("", doc="free text")
    source: str = spec("", doc="where the numbers come from")
    base: str = spec("", doc="preset this file extends")
    waive_relations: tuple[str, ...] = spec((), doc="timing relations the source itself violates")
    scopes: Scopes = spec(default_factory=Scopes)
    refresh: Refresh = spec(default_factory=Refresh)
    controller: Controller = spec(default_factory=Controller)
    frontend: Frontend = spec(default_factory=Frontend)


# Relations checked at load: (name, description, dependent parameter, the lower bound on it as a function
# of the other parameters, strict). They hold when n[dependent] >= bound (> bound if strict); the bound
# works on cycles and on ns alike, so a failure caused only by rounding can be told from a real one.
RELATIONS = (
    ("ras_ge_rcd", "tRAS >= tRCD_RD", "nRAS", lambda n: n["nRCD_RD"], False),
    ("rc_ge_ras_plus_rp", "tRC >= tRAS + tRP", "nRC", lambda n: n["nRAS"] + n["nRP"], False),
    ("ccd_l_ge_ccd_s", "tCCD_L >= tCCD_S", "nCCD_L", lambda n: n["nCCD_S"], False),
    ("rrd_l_ge_rrd_s", "tRRD_L >= tRRD_S", "nRRD_L", lambda n: n["nRRD_S"], False),
    ("wtr_l_ge_wtr_s", "tWTR_L >= tWTR_S", "nWTR_L", lambda n: n["nWTR_S"], False),
    ("faw_ge_rrd_s", "tFAW >= tRRD_S", "nFAW", lambda n: n["nRRD_S"], False),
    ("refi_gt_rfc", "tREFI > tRFC", "nREFI", lambda n: n["nRFC"], True),
    ("refresh_positive", "tRFC, tRFCpb, tREFIpb and the burst length >= 1 cycle", None,
     lambda n: min(n["nRFC"], n["nRFCpb"], n["nREFIpb"], n["nBL"]), False),
    ("ccd_s_ge_bl", "tCCD_S >= burst length (no data-bus overlap)", "nCCD_S", lambda n: n["nBL"], False),
    ("rtw_clears_bus", "tRTW >= CL + BL - CWL (read data leaves the bus before write data)", "nRTW",
     lambda n: n["nCL"] + n["nBL"] - n["nCWL"], False),
)
RELATION_PARAMS = {  # the parameters each relation reads, for its error message
    "ras_ge_rcd": ("nRAS", "nRCD_RD"), "rc_ge_ras_plus_rp": ("nRC", "nRAS", "nRP"),
    "ccd_l_ge_ccd_s": ("nCCD_L", "nCCD_S"), "rrd_l_ge_rrd_s": ("nRRD_L", "nRRD_S"),
    "wtr_l_ge_wtr_s": ("nWTR_L", "nWTR_S"), "faw_ge_rrd_s": ("nFAW", "nRRD_S"), "refi_gt_rfc": ("nREFI", "nRFC"),
    "refresh_positive": ("nRFC", "nRFCpb", "nREFIpb", "nBL"), "ccd_s_ge_bl": ("nCCD_S", "nBL"),
    "rtw_clears_bus": ("nRTW", "nCL", "nBL", "nCWL"),
}
TCK_REL_TOL = 1e-3  # a published tCK rounded to 3 digits (AttAcc's 0.769 ns for 4 / 5.2 Gb/s: 3e-4 off)


@dataclass(frozen=True)
class Constraint:
    """One compiled timing constraint."""
    name: str
    scope: str
    prev: tuple[str, ...]
    next: tuple[str, ...]
    latency_cycles: int
    window: int = 0
    sibling: bool = False


@dataclass(frozen=True)
class Family:
    name: str
    levels: tuple[str, ...]
    commands: tuple[str, ...]
    constraints: tuple[dict, ...]
    source: str
    beats_per_tck: float | None = None  # data beats per pin per command clock (None: not checked)


@dataclass(frozen=True)
class ResolvedDram:
    """A DRAM config with every derived value computed. Nothing here changes after resolve."""
    config: DramConfig
    source: str
    n: Mapping[str, int]  # timing in cycles, by parameter name
    constraints: tuple[Constraint, ...]
    waived: tuple[str, ...]
    access_bytes: int = field(default=0)
    row_bytes: int = field(default=0)
    capacity_bytes: int = field(default=0)
    banks_per_pc: int = field(default=0)
    peak_bw_GBps: float = field(default=0.0)
    peak_bw_per_pc_GBps: float = field(default=0.0)

    @property
    def org(self) -> Organization:
        return self.config.organization

    @property
    def tck_ns(self) -> float:
        return self.config.clock.tck_ns

    def describe(self) -> str:
        from tokenstack_sim.config.report import describe_dram

        return describe_dram(self)

    def as_dict(self) -> dict:
        from tokenstack_sim.config.schema import to_dict

        data = to_dict(self.config)
        data["derived"] = {"timing_cycles": dict(self.n), "capacity_bytes": self.capacity_bytes,
                           "peak_bw_GBps": self.peak_bw_GBps, "waived_relations": list(self.waived)}
        return data

    def validate_runtime(self) -> None:
        """Checks that need more than the schema (the address map parses against the organization)."""
        from tokenstack_sim.hw.dram.address_map import parse_map

        parse_map(self.config.controller.address_map, self.org, source=self.source)


def timing_cycles(timing: Mapping[str, float], tck_ns: float, *, source: str | None) -> dict[str, int]:
    """Turn the `[timing]` table (nX cycles or tX_ns) into cycles, one value per known parameter."""
    out: dict[str, int] = {}
    for key, value in timing.items():
        where = f"timing.{key}"
        if key.startswith("n") and key in TIMING_PARAMS:
            if not math.isfinite(value) or not float(value).is_integer() or not 0 <= value <= MAX_CYCLES:
                raise InputError(f"expected a whole number of cycles from 0 to {MAX_CYCLES}, got {value:g}",
                                 source=source, where=where)
            name, cycles = key, int(value)
        elif key.startswith("t") and key.endswith("_ns") and "n" + key[1:-3] in TIMING_PARAMS:
            if not math.isfinite(value) or not 0 <= value <= MAX_CYCLES * tck_ns:
                raise InputError(f"expected a time from 0 to {MAX_CYCLES * tck_ns:g} ns, got {value:g}",
                                 source=source, where=where)
            # JEDEC rounding: a time becomes the smallest whole number of cycles that covers it.
            name, cycles = "n" + key[1:-3], math.ceil(value / tck_ns - 1e-6)
        else:
            valid = ", ".join(f"{p} / t{p[1:]}_ns" for p in TIMING_PARAMS)
            raise InputError(f"unknown timing parameter; valid: {valid}", source=source, where=where)
        if name in out:
            raise InputError(f"{name} is given twice (in cycles and in ns); give one", source=source, where=where)
        out[name] = cycles
    missing = [p for p in TIMING_PARAMS if p not in out]
    if missing:
        raise InputError(f"missing timing parameters: {', '.join(missing)} "
                         f"(give nX in cycles or tX_ns in ns)", source=source, where="timing")
    return out


def compile_constraints(family: Family, n: Mapping[str, int], scopes: Scopes) -> tuple[Constraint, ...]:
    out = []
    for i, c in enumerate(family.constraints):
        where = f"constraints[{i}] ({c.get('name', '?')})"
        scope = c["scope"]
        if scope.startswith("@"):
            if not hasattr(scopes, scope[1:]):
                raise InputError(f"unknown scope reference {scope!r}", source=family.source, where=where)
            scope = getattr(scopes, scope[1:])
        if scope not in family.levels:
            raise InputError(f"scope {scope!r} is not a level ({', '.join(family.levels)})",
                             source=family.source, where=where)
        for cmd in (*c["prev"], *c["next"]):
            if cmd not in family.commands:
                raise InputError(f"unknown command {cmd!r}", source=family.source, where=where)
        lat = evaluate(c["latency"], n, source=family.source, where=f"{where}.latency")
        out.append(Constraint(c["name"], scope, tuple(c["prev"]), tuple(c["next"]), max(lat, 0),
                              int(c.get("window", 0)), bool(c.get("sibling", False))))
    return tuple(out)


def resolve_clock(clock: Clock, family: Family, *, source: str | None) -> Clock:
    """The clock with tck_ns filled in (beats_per_tck / data_rate_gbps when not given), checked against the
    family's beats per tCK: a pin rate and a tCK that disagree are an error naming both and the fix."""
    beats = family.beats_per_tck
    if beats is None:  # a family built without the clock figure (tests): tck_ns must be given
        if clock.tck_ns is None:
            raise InputError(f"clock.tck_ns is missing and family {family.name!r} gives no beats_per_tck to "
                             "derive it from", source=source, where="clock.tck_ns")
        return clock
    want_tck = beats / clock.data_rate_gbps
    if clock.tck_ns is None:
        return dataclasses.replace(clock, tck_ns=want_tck)
    if abs(clock.data_rate_gbps * clock.tck_ns / beats - 1) > TCK_REL_TOL:
        raise InputError(f"clock.data_rate_gbps {clock.data_rate_gbps:g} and clock.tck_ns {clock.tck_ns:g} "
                         f"disagree: {beats:g} beats per tCK (family {family.name!r}) needs tck_ns = "
                         f"{want_tck:.6g} (or data_rate_gbps = {beats / clock.tck_ns:.6g}); set both keys together "
                         "(a rate set alone derives tck_ns where the core timings are in ns; a preset with "
                         "them in cycles, a speed bin, keeps its clock)",
                         source=source, where="clock")
    return clock


def timing_ns(timing: Mapping[str, float], n: Mapping[str, int], tck_ns: float) -> dict[str, float]:
    """Each parameter in ns as its source gives it: a tX_ns value as written, an nX value times tCK."""
    out = {p: c * tck_ns for p, c in n.items()}
    for key, value in timing.items():
        if key.endswith("_ns"):
            out["n" + key[1:-3]] = float(value)
    return out


def check_relations(n: dict[str, int], ns: Mapping[str, float], waived: tuple[str, ...], *,
                    source: str | None) -> tuple[str, ...]:
    """Check RELATIONS on the cycle values `n`, in place; returns the names restored by rounding.

    A relation that fails in cycles but holds on the ns values (`ns`: each parameter as its source gives
    it) failed only because each term was rounded up to cycles on its own: the dependent parameter is
    rounded up to the bound (nRC = max(nRC, nRAS + nRP)), as a controller programmed from the datasheet
    does. A relation that also fails in ns (or whose terms are all given in cycles) is an error unless
    its name is in `waived`. Relations run in order until nothing changes (nRAS may rise before nRC)."""
    restored: list[str] = []
    for _ in range(len(RELATIONS) + 1):
        changed = False
        for name, text, dep, bound, strict in RELATIONS:
            need = bound(n) + (1 if strict else 0)
            if dep is None:
                if need >= 1:
                    continue
            elif n[dep] >= need:
                continue
            if dep is not None:
                need_ns, have_ns = bound(ns), ns[dep]
                if have_ns > need_ns if strict else have_ns >= need_ns - 1e-9:
                    n[dep] = need
                    restored.append(name)
                    changed = True
                    continue
            if name in waived:
                continue
            values = ", ".join(f"{p}={n[p]}" for p in RELATION_PARAMS[name])
            raise InputError(f"timing relation {text} is violated ({values} cycles); fix the values or "
                             f"list '{name}' in waive_relations with the source's reason", source=source,
                             where="timing")
        if not changed:
            break
    return tuple(dict.fromkeys(restored))


def resolve_dram(cfg: DramConfig, family: Family, *, source: str | None = None) -> ResolvedDram:
    """Derive the clock, cycles, constraints, capacity and bandwidth; check the timing relations."""
    cfg = dataclasses.replace(cfg, clock=resolve_clock(cfg.clock, family, source=source))
    tck_ns = cfg.clock.tck_ns
    n = timing_cycles(cfg.timing, tck_ns, source=source)
    known = {r[0] for r in RELATIONS}
    for w in cfg.waive_relations:
        if w not in known:
            raise InputError(f"unknown relation {w!r}; known: {', '.join(sorted(known))}",
                             source=source, where="waive_relations")
    check_relations(n, timing_ns(cfg.timing, n, tck_ns), tuple(cfg.waive_relations), source=source)
    o = cfg.organization
    access_bytes = o.dq_bits * o.burst_length // 8
    row_bytes = access_bytes * o.columns
    banks_per_pc = o.sids * o.bank_groups * o.banks_per_group
    capacity = row_bytes * o.rows * banks_per_pc * o.pseudo_channels * o.channels
    per_pc_GBps = o.dq_bits * cfg.clock.data_rate_gbps / 8
    return ResolvedDram(
        config=cfg, source=source or "", n=MappingProxyType(n),
        constraints=compile_constraints(family, n, cfg.scopes),
        waived=tuple(cfg.waive_relations), access_bytes=access_bytes, row_bytes=row_bytes,
        capacity_bytes=capacity, banks_per_pc=banks_per_pc,
        peak_bw_GBps=per_pc_GBps * o.pseudo_channels * o.channels, peak_bw_per_pc_GBps=per_pc_GBps)



def from_raw(raw: dict, path) -> ResolvedDram:
    """The `kind = "dram"` resolver used by the config loader."""
    from tokenstack_sim.config.loader import load_family
    from tokenstack_sim.config.schema import build

    cfg = build(DramConfig, raw, source=str(path))
    family = load_family(cfg.family, source=str(path))
    family = dataclasses.replace(family, beats_per_tck=family_beats_per_tck(family.source))
    return resolve_dram(cfg, family, source=str(path))


def family_beats_per_tck(family_path: str) -> float:
    """The family file's `beats_per_tck` (data beats per pin per command clock), checked.

    Read here rather than by the loader's family reader, which builds the constraint table only."""
    from tokenstack_sim.config.loader import read_toml

    value = read_toml(Path(family_path)).get("beats_per_tck")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 64:
        raise InputError(f"expected a number of data beats per tCK above 0 and at most 64, got {value!r}",
                         source=family_path, where="beats_per_tck")
    return float(value)
