"""One HBM stack of capacity and PIM dies with its base die: the `kind = "stack"` config.

A stack config names a DRAM preset for the device timing and organization, then says which dies the
stack has and what they are. HBM3/HBM4 style (hardware.md §1): a stack of `dies` core dies is split
into `sids` stack IDs; each SID is a group of `dies / sids` dies, and within a SID each die serves an
equal share of the channels. Every SID of a channel shares that channel's command and data buses.
A die is `capacity` (plain DRAM) or `pim` (near-bank compute units that take array area, so the die
keeps `pim_layer_capacity_factor` of its rows; Aquabolt-XL: 0.5, hardware.md §3).

A *partial SID* (PIM dies that are not a whole number of SIDs) is modelled, not refused: the PIM tier
is the set of (channel, SID) pairs whose die is a PIM die, so such a SID computes on some of its
channels only and its capacity differs by channel. An all-bank PIM scope wider than a SID
(`pim.mode_scope = pseudo_channel | channel`) needs every SID of the channel to be PIM, and a stack
that mixes tiers under such a scope is refused.

`resolve_stack()` is pure: it loads the DRAM preset (with `dram_set` overrides and the stack's own SID
count), expands the die list and derives per-(channel, SID) tiers and capacities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tokenstack_sim.config.schema import build, spec, to_dict
from tokenstack_sim.errors import InputError

PLACEMENTS = ("bank", "bank_pair", "bank_group", "base_die")
# basedie.dma_GBps bounds [E]. Below ~5 GB/s the op-cost grid's largest DMA (64 MiB, opcost/table.py
# DMA_SIZES) outlasts the most background a load level may use (simulate.MAX_BACKGROUND_BYTES) and its
# characterization fails (measured: 1 GB/s fails at 16 MB under 0.2; 8 GB/s characterizes both KV DMAs to
# 0.2). 1e6 GB/s is far above any stack's channels (HBM4: 2,048 GB/s), i.e. no cap in effect.
DMA_GBPS_MIN, DMA_GBPS_MAX = 8.0, 1e6


@dataclass(frozen=True)
class Die:
    kind: Literal["capacity", "pim"] = spec(doc="'capacity' or 'pim'")
    sid: int = spec(min=0, max=63, doc="stack ID (SID) the die belongs to")
    channels: tuple[int, ...] = spec(doc="channels whose banks of this SID sit on this die")


@dataclass(frozen=True)
class Layout:
    dies: int = spec(min=1, max=64, doc="core DRAM dies in the stack")
    sids: int = spec(min=1, max=16, doc="stack IDs; each is a group of dies / sids dies")
    pim_dies: int = spec(0, min=0, max=64, doc="PIM dies, taken from the top of the stack (highest SIDs)")
    pim_layer_capacity_factor: float = spec(
        0.5, min=0.01, max=1.0, doc="share of a plain die's capacity a PIM die keeps (Aquabolt-XL 0.5)")


@dataclass(frozen=True)
class Pim:
    placement: Literal["bank", "bank_pair", "bank_group", "base_die"] = spec(
        "bank", doc="where the PIM units sit: per bank, per bank pair, per bank group or on the base die")
    lanes: int = spec(16, min=1, max=4096, doc="FP16 MAC lanes per near-bank unit")
    unit_clock_ghz: float = spec(1.0, min=0.01, max=10.0, doc="clock of a near-bank unit")
    mac_spacing_cycles: int = spec(4, min=1, max=1024,
                                   doc="minimum spacing of all-bank MAC commands (nCCDAB; power-limited)")
    mode_scope: Literal["channel", "pseudo_channel", "sid"] = spec(
        "sid", doc="what one all-bank command covers (AttAcc: channel)")
    concurrent_access: bool = spec(
        True, doc="ordinary reads and writes to other SIDs of a pseudo-channel may issue while a SID computes")
    base_die_units_per_pc: int = spec(1, min=1, max=64, doc="base-die PIM units per pseudo-channel")
    base_die_lanes: int = spec(64, min=1, max=4096, doc="FP16 MAC lanes per base-die unit")
    base_die_clock_ghz: float = spec(2.0, min=0.01, max=10.0, doc="base-die logic clock")
    softmax_elements_per_cycle: int = spec(16, min=1, max=4096,
                                           doc="base-die softmax throughput per pseudo-channel, per DRAM cycle")


@dataclass(frozen=True)
class BaseDie:
    arbitration: Literal["gpu_first", "dma_first", "fifo"] = spec(
        "gpu_first", doc="priority between GPU and DMA requests in each pseudo-channel's scheduler")
    pim_first: bool = spec(True, doc="PIM programs take command slots before the request queues")
    dma_queue_share: float = spec(0.5, min=0.01, max=1.0, doc="share of each queue DMA requests may hold")
    tsv_width_mult: float = spec(1.0, min=1.0, max=16.0,
                                 doc="TSV bundle width relative to the channel's (designs that add TSVs)")
    tlb_entries: int = spec(1024, min=1, max=1 << 24, doc="translation entries held on the base die")
    tlb_page_bytes: int = spec(65536, min=64, max=1 << 32, doc="bytes one translation entry covers")
    tlb_hit_cycles: int = spec(2, min=0, max=1 << 20, doc="lookup latency on a hit, DRAM cycles")
    tlb_miss_cycles: int = spec(60, min=0, max=1 << 20, doc="page-table walk on a miss, DRAM cycles")
    quant_units_per_channel: int = spec(2, min=1, max=64, doc="inline quantizers per channel")
    quant_lanes: int = spec(16, min=1, max=4096, doc="elements per cycle per quantizer")
    quant_clock_ghz: float = spec(1.0, min=0.01, max=10.0, doc="quantizer clock")
    quant_pipeline_cycles: int = spec(5, min=0, max=4096, doc="quantizer latency, its own cycles")
    dma_buffer_latency_cycles: int = spec(4, min=0, max=4096,
                                          doc="DRAM cycles from read data in the base die to the write's entry")
    # No public figure for an HBM4 base die's DMA or logic throughput (hardware.md §1 gives process and
    # TSV counts only), so the default is no cap [E]: a DMA moves as fast as the channels serve it, as
    # before the knob existed. Set it to ask what a slower (or cheaper) DMA engine costs.
    dma_GBps: float | None = spec(None, doc="DMA engine throughput cap per stack, GB/s of data read "
                                  f"({DMA_GBPS_MIN:,.0f} to {DMA_GBPS_MAX:,.0f}); unset = no cap")

    def __post_init__(self) -> None:
        v = self.dma_GBps
        if v is not None and not DMA_GBPS_MIN <= v <= DMA_GBPS_MAX:  # also refuses nan
            raise InputError(f"expected the DMA engine's cap in GB/s of data read per stack, from "
                             f"{DMA_GBPS_MIN:,.0f} to {DMA_GBPS_MAX:,.0f} (leave it unset for no cap), got {v:g}",
                             where="dma_GBps")


@dataclass(frozen=True)
class Power:
    budget_w: float = spec(37.0, min=0.0, doc="stack power budget shared by PIM, arrays, I/O and DMA; 0 = off")
    window_ns: float = spec(1000.0, min=1.0, doc="averaging window of the budget (bucket size)")


@dataclass(frozen=True)
class PimEnergy:
    """Energy of the PIM units' and the base die's logic. Bits moved through the arrays, the column path
    and the TSVs are priced by the DRAM preset's segments ([energy], hw/stack/energy.py); the four
    `*_pj_per_bit` keys below are read only by the power budget (hw/stack/pim.py charges each PIM
    command's data at them), not by the energy account."""
    mac_pj: float = spec(0.32, min=0.0, doc="one FP16 MAC")
    bank_read_pj_per_bit: float = spec(0.55, min=0.0, doc="power budget only: cell to a bank-level unit")
    bank_group_read_pj_per_bit: float = spec(1.56, min=0.0, doc="power budget only: cell to a bank-group unit")
    base_die_read_pj_per_bit: float = spec(3.29, min=0.0, doc="power budget only: cell to the base die")
    unit_transfer_pj_per_bit: float = spec(2.79, min=0.0, doc="power budget only: unit registers to the "
                                           "base die and back (BG mux, GIO, TSV)")
    quant_pj_per_element: float = spec(0.3, min=0.0, doc="quantize or dequantize one element")
    softmax_pj_per_element: float = spec(1.5, min=0.0, doc="exp, sum and scale of one score on the base die")


@dataclass(frozen=True)
class Area:
    die_mm2: float = spec(121.0, min=1.0, doc="area of one core DRAM die")
    base_die_mm2: float = spec(121.0, min=1.0, doc="area of the base (logic) die")
    base_die_controller_mm2: float = spec(4.0, min=0.0, doc="scheduler, DMA engine and translation per stack")
    base_die_pim_unit_mm2: float = spec(0.05, min=0.0, doc="one base-die PIM unit (placement base_die)")
    quantizer_mm2: float = spec(0.01, min=0.0, doc="one inline quantizer")


@dataclass(frozen=True)
class StackConfig:
    schema_version: int = spec(min=1, max=1, doc="config schema version (1)")
    kind: Literal["stack"] = spec(doc="'stack'")
    name: str = spec(doc="preset name")
    dram: str = spec(doc="DRAM preset (or .toml path) giving timing and per-SID organization")
    layout: Layout = spec()
    description: str = spec("", doc="free text")
    source: str = spec("", doc="where the numbers come from")
    base: str = spec("", doc="preset this file extends")
    dram_set: tuple[str, ...] = spec((), doc="overrides applied to the DRAM preset, as --set KEY=VALUE")
    dies: tuple[Die, ...] = spec((), doc="explicit die list (default: derived from [layout])")
    pim: Pim = spec(default_factory=Pim)
    basedie: BaseDie = spec(default_factory=BaseDie)
    power: Power = spec(default_factory=Power)
    pim_energy: PimEnergy = spec(default_factory=PimEnergy)
    area: Area = spec(default_factory=Area)


@dataclass(frozen=True)
class ResolvedStack:
    """A stack with its DRAM device resolved and its tiers derived. Nothing here changes after resolve."""
    config: StackConfig
    source: str
    dram: object  # ResolvedDram
    dies: tuple[Die, ...]
    # per (channel, SID): index of the die, 1 if PIM, and rows per bank available
    die_of: np.ndarray = field(repr=False)
    is_pim: np.ndarray = field(repr=False)
    rows_of: np.ndarray = field(repr=False)

    @property
    def has_pim(self) -> bool:
        return bool(self.is_pim.any())

    def tier_units(self, tier: str) -> list[tuple[int, int]]:
        """(channel, SID) pairs of a tier ('pim' or 'capacity'), channel-major."""
        want = 1 if tier == "pim" else 0
        C, S = self.is_pim.shape
        return [(c, s) for s in range(S) for c in range(C) if self.is_pim[c, s] == want]

    def tier_capacity_bytes(self, tier: str) -> int:
        o = self.dram.org
        per_row_all_pcs = self.dram.row_bytes * o.bank_groups * o.banks_per_group * o.pseudo_channels
        return int(sum(self.rows_of[c, s] * per_row_all_pcs for c, s in self.tier_units(tier)))

    @property
    def capacity_bytes(self) -> int:
        return self.tier_capacity_bytes("pim") + self.tier_capacity_bytes("capacity")

    def describe(self) -> str:
        from tokenstack_sim.hw.stack.area import stack_area

        cfg, o = self.config, self.dram.org
        gib = 2 ** 30
        lines = [f"{cfg.name}  (stack, schema {cfg.schema_version}, DRAM {self.dram.config.name})"]
        if cfg.description:
            lines.append(f"  {cfg.description}")
        if cfg.source:
            lines.append(f"  source: {cfg.source}")
        n_pim = sum(d.kind == "pim" for d in self.dies)
        lines += [
            f"  dies: {len(self.dies)} ({n_pim} PIM, {len(self.dies) - n_pim} capacity) in {o.sids} SIDs; "
            f"{o.channels} channels x {o.pseudo_channels} pseudo-channels",
            f"  capacity: {self.capacity_bytes / gib:.2f} GiB = PIM tier "
            f"{self.tier_capacity_bytes('pim') / gib:.2f} GiB + capacity tier "
            f"{self.tier_capacity_bytes('capacity') / gib:.2f} GiB (PIM dies keep "
            f"{cfg.layout.pim_layer_capacity_factor:.0%})",
            f"  external bandwidth {self.dram.peak_bw_GBps:.1f} GB/s",
        ]
        for s in range(o.sids):
            kinds = {("pim" if self.is_pim[c, s] else "capacity") for c in range(o.channels)}
            lines.append(f"    SID {s}: {'/'.join(sorted(kinds))}"
                         + ("  (partial: PIM on some channels only)" if len(kinds) > 1 else ""))
        if self.has_pim:
            from tokenstack_sim.hw.stack.pim import PimUnits

            u = PimUnits.of(self)
            lines.append(f"  PIM: {cfg.pim.placement} units, {u.units_per_scope} per {cfg.pim.mode_scope} scope, "
                         f"{u.internal_bw_GBps:,.0f} GB/s internal, {u.peak_tflops:.2f} TFLOPS FP16 peak, "
                         f"MAC spacing {cfg.pim.mac_spacing_cycles} cycles, concurrent access "
                         f"{'on' if cfg.pim.concurrent_access else 'off'}")
        lines.append("  base die: " + ", ".join(f"{k}={v}" for k, v in to_dict(cfg.basedie).items()))
        lines.append(f"  power budget: {cfg.power.budget_w:g} W over {cfg.power.window_ns:g} ns"
                     if cfg.power.budget_w else "  power budget: off")
        a = stack_area(self)
        lines.append(f"  area: {a['total_mm2']:.1f} mm2 of silicon ({a['dies_mm2']:.0f} dies + "
                     f"{a['base_die_mm2']:.0f} base die; base-die logic {a['base_die_logic_mm2']:.2f} mm2)")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        data = to_dict(self.config)
        data["derived"] = {"capacity_bytes": self.capacity_bytes,
                           "pim_tier_bytes": self.tier_capacity_bytes("pim"),
                           "capacity_tier_bytes": self.tier_capacity_bytes("capacity"),
                           "dram": self.dram.config.name}
        return data


def _expand_dies(lay: Layout, channels: int, source: str | None) -> tuple[Die, ...]:
    if lay.dies % lay.sids:
        raise InputError(f"{lay.dies} dies do not split into {lay.sids} SIDs of equal size",
                         source=source, where="layout.sids")
    per_sid = lay.dies // lay.sids
    if channels % per_sid:
        raise InputError(f"{channels} channels do not split over the {per_sid} dies of a SID",
                         source=source, where="layout.dies")
    if lay.pim_dies > lay.dies:
        raise InputError(f"{lay.pim_dies} PIM dies in a stack of {lay.dies}", source=source, where="layout.pim_dies")
    share = channels // per_sid
    out = []
    for d in range(lay.dies):
        sid, k = divmod(d, per_sid)
        out.append(Die("pim" if d >= lay.dies - lay.pim_dies else "capacity", sid,
                       tuple(range(k * share, (k + 1) * share))))
    return tuple(out)


def resolve_stack(cfg: StackConfig, *, source: str | None = None) -> ResolvedStack:
    from tokenstack_sim.config.loader import load_config

    lay = cfg.layout
    overrides = [*cfg.dram_set, f"organization.sids={lay.sids}", f"organization.dies={lay.dies}",
                 f'scopes.pim="{cfg.pim.mode_scope}"']
    try:
        dram = load_config(cfg.dram, overrides, kind="dram")
    except InputError as exc:
        raise InputError(f"in DRAM preset {cfg.dram!r}: {exc.message}", source=source,
                         where="dram" + (f" ({exc.where})" if exc.where else "")) from None
    o = dram.org
    dies = cfg.dies or _expand_dies(lay, o.channels, source)
    if cfg.dies and len(cfg.dies) != lay.dies:
        raise InputError(f"{len(cfg.dies)} dies listed but layout.dies = {lay.dies}", source=source, where="dies")
    die_of = np.full((o.channels, o.sids), -1, np.int64)
    for i, d in enumerate(dies):
        if d.sid >= o.sids:
            raise InputError(f"SID {d.sid} outside 0..{o.sids - 1}", source=source, where=f"dies[{i}].sid")
        for c in d.channels:
            if not 0 <= c < o.channels:
                raise InputError(f"channel {c} outside 0..{o.channels - 1}", source=source,
                                 where=f"dies[{i}].channels")
            if die_of[c, d.sid] >= 0:
                raise InputError(f"channel {c} of SID {d.sid} is already served by die {die_of[c, d.sid]}",
                                 source=source, where=f"dies[{i}].channels")
            die_of[c, d.sid] = i
    missing = np.argwhere(die_of < 0)
    if len(missing):
        c, s = missing[0]
        raise InputError(f"no die serves channel {c} of SID {s}", source=source, where="dies")
    is_pim = np.array([[dies[die_of[c, s]].kind == "pim" for s in range(o.sids)] for c in range(o.channels)],
                      np.int8)
    rows_of = np.where(is_pim == 1, math.floor(o.rows * lay.pim_layer_capacity_factor), o.rows).astype(np.int64)
    if cfg.pim.mode_scope != "sid" and is_pim.any():
        mixed = [c for c in range(o.channels) if 0 < is_pim[c].sum() < o.sids]
        if mixed:
            raise InputError(f"pim.mode_scope = {cfg.pim.mode_scope!r} puts every SID of a channel in all-bank "
                             f"mode, but channel {mixed[0]} mixes PIM and capacity dies; use mode_scope = 'sid' "
                             "or make every die of those channels PIM", source=source, where="pim.mode_scope")
    return ResolvedStack(cfg, source or "", dram, tuple(dies), die_of, is_pim, rows_of)


def from_raw(raw: dict, path) -> ResolvedStack:
    """The `kind = "stack"` resolver used by the config loader."""
    cfg = build(StackConfig, raw, source=str(path))
    dram_name = cfg.dram
    if dram_name.endswith(".toml") and not dram_name.startswith("/"):
        from pathlib import Path

        candidate = Path(path).parent / dram_name  # a relative DRAM path is relative to the stack file
        if candidate.is_file():
            cfg = StackConfig(**{**cfg.__dict__, "dram": str(candidate)})
    return resolve_stack(cfg, source=str(path))
