"""PIM units and the all-bank command programs that run attention on them.

A PIM *scope* (`pim.mode_scope`: one SID of a pseudo-channel, a pseudo-channel, or a channel) is what
one all-bank command covers. Where the units sit decides how a MAC command is fed:

| placement  | units per scope          | data per MAC command            | spacing floor            |
|------------|--------------------------|---------------------------------|--------------------------|
| bank       | one per bank             | one column of every bank        | nCCDAB (power-limited)   |
| bank_pair  | one per two banks        | one column of half the banks    | nCCDAB                   |
| bank_group | one per bank group       | one column of one bank per BG   | max(nCCDAB, nCCD_L)      |
| base_die   | `base_die_units_per_pc`  | one read burst (x tsv_width)    | the data bus (PRD = RD)  |

A MAC command is further spaced by the units' compute: each unit does `lanes` MACs per cycle of its own
clock, and every KV element it receives costs `gqa` MACs (the query heads sharing that KV head), so
grouped-query attention makes near-bank units compute-bound. Time = max(bytes / internal bandwidth,
MACs / unit rate) is what the kernel produces, with row switches, refresh and transfers on top.

An attention program (one KV-head slice on one scope) is the AttAcc flow with flash-decoding partitions:
broadcast q to the units (PWR), stream K rows (ACTab, MACab..., PREab), gather the scores to the base
die (PRD), softmax there, broadcast the probabilities (PWR), stream V rows, gather the partial outputs
with their running max and sum (PRD). Partitions on different scopes are merged on the base die at the
end (a few cycles, not simulated). KV heads are sharded over the scopes and a head's tokens striped
over its scopes; base-die placement needs no broadcast or score gather (the data comes to it).

A batch of decode sequences (`batch_attention_programs`) packs its (sequence, head) items over the
scopes (`batch_work`): whole items longest-first to the least-loaded scope when there are at least as
many items as scopes, else each item striped over a minimax number of scopes; a scope runs its slices
one after the other, each the full flow above. scripts/pim_batch_check.py compares this with the
serving engine's compositions from the single-sequence op (results/pim_batch.md).

Left out: the units' register-file capacity (scores of one row at a time are assumed to fit), a barrier
between the scopes of one head (flash-decoding needs none), and PIM-side softmax.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from tokenstack_sim.hw.dram import kernels

SCOPE_LEVEL = {"channel": 0, "pseudo_channel": 1, "sid": 2}


@dataclass(frozen=True)
class PimUnits:
    """What the PIM units of one scope can do (derived from the stack config)."""
    placement: str
    level: int
    banks_per_scope: int
    units_per_scope: int
    bytes_per_mac_cmd: int  # data the scope's units consume per MAC command
    mac_cmds_per_row: int  # MAC commands to consume one all-bank row of the scope
    row_bytes_per_scope: int  # one all-bank row over the scope's banks
    floor_cycles: int  # spacing floor of MAC commands (bus or power)
    mac_per_ns_per_unit: float
    tck_ns: float
    n_scopes: int  # PIM scopes in the stack
    pcs_per_scope: int

    @classmethod
    def of(cls, stack) -> "PimUnits":
        cfg, d = stack.config, stack.dram
        o, n = d.org, d.n
        pim = cfg.pim
        level = SCOPE_LEVEL[pim.mode_scope]
        per_sid = o.bank_groups * o.banks_per_group
        pim_units = stack.tier_units("pim")
        if level == 2:
            banks, pcs, n_scopes = per_sid, 1, len(pim_units) * o.pseudo_channels
        elif level == 1:
            banks, pcs = per_sid * o.sids, 1
            n_scopes = len({c for c, _ in pim_units}) * o.pseudo_channels
        else:
            banks, pcs = per_sid * o.sids * o.pseudo_channels, o.pseudo_channels
            n_scopes = len({c for c, _ in pim_units})
        acc = d.access_bytes
        if pim.placement == "bank":
            units, per_cmd, floor = banks, banks * acc, pim.mac_spacing_cycles
            rate = pim.lanes * pim.unit_clock_ghz
        elif pim.placement == "bank_pair":
            units, per_cmd, floor = banks // 2, banks // 2 * acc, pim.mac_spacing_cycles
            rate = pim.lanes * pim.unit_clock_ghz
        elif pim.placement == "bank_group":
            units = banks // o.banks_per_group
            per_cmd, floor = units * acc, max(pim.mac_spacing_cycles, n["nCCD_L"])
            rate = pim.lanes * pim.unit_clock_ghz
        else:
            units = pim.base_die_units_per_pc * pcs
            per_cmd = int(acc * cfg.basedie.tsv_width_mult)
            floor = max(n["nCCD_S"], n["nBL"])
            rate = pim.base_die_lanes * pim.base_die_clock_ghz
        row_bytes = banks * d.row_bytes
        return cls(pim.placement, level, banks, units, per_cmd, math.ceil(row_bytes / per_cmd), row_bytes, floor,
                   rate, d.tck_ns, n_scopes, pcs)

    @property
    def internal_bw_GBps(self) -> float:
        """Stack-wide data rate into the units at the spacing floor (bytes per ns = GB/s)."""
        return self.n_scopes * self.bytes_per_mac_cmd / (self.floor_cycles * self.tck_ns)

    @property
    def peak_tflops(self) -> float:
        return self.n_scopes * self.units_per_scope * self.mac_per_ns_per_unit * 2 / 1e3

    def mac_spacing_fp(self, elem_bytes: int, macs_per_elem: int) -> int:
        """Spacing of MAC commands in cycles x kernels.FP: the floor or the units' compute time."""
        elems_per_unit = self.bytes_per_mac_cmd / self.units_per_scope / elem_bytes
        compute_cycles = elems_per_unit * macs_per_elem / self.mac_per_ns_per_unit / self.tck_ns
        return math.ceil(max(self.floor_cycles, compute_cycles) * kernels.FP)


@dataclass
class Programs:
    """PIM programs in the kernel's array form, plus what they amount to (for reports and energy)."""
    scope: list = field(default_factory=list)  # (level, c, p, s) per program
    ins: list = field(default_factory=list)  # (op, a, b, energy_fj) rows
    lo: list = field(default_factory=list)
    hi: list = field(default_factory=list)
    release: list = field(default_factory=list)
    label: list = field(default_factory=list)  # op id of each program (several ops may share a run)
    totals: dict = field(default_factory=dict)  # per op id: bytes, MACs, softmax elements, ...

    def add(self, scope, instructions, release, label):
        self.lo.append(len(self.ins))
        self.ins.extend(instructions)
        self.hi.append(len(self.ins))
        self.scope.append(scope)
        self.release.append(release)
        self.label.append(label)

    def arrays(self):
        """Programs sorted by channel, as the kernel wants them, and the order used."""
        if not self.scope:
            z = np.zeros(0, np.int64)
            return np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64), z, z, z, z
        scope = np.array(self.scope, np.int64)
        order = np.argsort(scope[:, 1], kind="stable")
        return (scope[order], np.array(self.ins, np.int64).reshape(-1, 4), np.array(self.lo, np.int64)[order],
                np.array(self.hi, np.int64)[order], np.array(self.release, np.int64)[order], order)


def _scopes(stack, units: PimUnits) -> list[tuple[int, int, int, int]]:
    o = stack.dram.org
    pim = stack.tier_units("pim")
    if units.level == 2:
        return [(2, c, p, s) for c, s in pim for p in range(o.pseudo_channels)]
    chans = sorted({c for c, _ in pim})
    if units.level == 1:
        return [(1, c, p, 0) for c in chans for p in range(o.pseudo_channels)]
    return [(0, c, 0, 0) for c in chans]


def attention_programs(stack, *, tokens: int, kv_heads: int, gqa: int, head_dim: int, kv_bytes: int = 2,
                       programs: Programs | None = None, release_cycle: int = 0, label: int = 0,
                       translation=None, first_row: int = 0, channels: tuple[int, ...] | None = None) -> Programs:
    """Programs for one layer's decode attention of one request: `tokens` of KV for `kv_heads` heads
    with `gqa` query heads each, spread over every PIM scope of the stack. `channels` keeps only the
    programs of those channels (a representative slice: the work is still divided over all scopes)."""
    _require_pim(stack)
    u = PimUnits.of(stack)
    progs = programs or Programs()
    scopes = _scopes(stack, u)
    n_sc = len(scopes)
    # heads over scopes; a head's tokens striped over its scopes
    if n_sc >= kv_heads:
        per_head = n_sc // kv_heads
        work = {i: [] for i in range(n_sc)}
        for h in range(kv_heads):
            base, extra = divmod(tokens, per_head)
            for j in range(per_head):
                work[h * per_head + j].append((h, base + (1 if j < extra else 0)))
    else:
        work = {i: [] for i in range(n_sc)}
        for h in range(kv_heads):
            work[h % n_sc].append((h, tokens))
    _emit_scopes(stack, u, scopes, work, gqa=gqa, head_dim=head_dim, kv_bytes=kv_bytes, progs=progs,
                 release_cycle=release_cycle, label=label, translation=translation, first_row=first_row,
                 channels=channels)
    return progs


def _require_pim(stack) -> None:
    if not stack.has_pim:
        from tokenstack_sim.errors import InputError

        raise InputError(f"stack {stack.config.name} has no PIM dies")


def _emit_scopes(stack, u: PimUnits, scopes, work: dict, *, gqa: int, head_dim: int, kv_bytes: int,
                 progs: Programs, release_cycle: int, label: int, translation, first_row: int,
                 channels: tuple[int, ...] | None) -> None:
    """One program per scope with work: the AttAcc flow for each of its (key, tokens) slices in turn.
    `work[i]` lists scope i's slices; a slice's key names its KV pages for the translation cache."""
    cfg = stack.config
    e = cfg.pim_energy
    d = stack.dram
    acc = d.access_bytes
    base_die = u.placement == "base_die"
    read_pj_bit = {"bank": e.bank_read_pj_per_bit, "bank_pair": e.bank_read_pj_per_bit,
                   "bank_group": e.bank_group_read_pj_per_bit, "base_die": e.base_die_read_pj_per_bit}[u.placement]
    macs_per_cmd = u.bytes_per_mac_cmd // kv_bytes * gqa
    mac_fj = round((u.bytes_per_mac_cmd * 8 * read_pj_bit + macs_per_cmd * e.mac_pj) * 1000)
    act_fj = round(u.banks_per_scope * d.config.energy.act_pre_pj * 1000)
    xfer_fj = round(acc * 8 * e.unit_transfer_pj_per_bit * 1000)
    spacing = u.mac_spacing_fp(kv_bytes, gqa)
    softmax_rate = cfg.pim.softmax_elements_per_cycle * u.pcs_per_scope
    tot = progs.totals.setdefault(label, {"kv_bytes": 0, "macs": 0, "softmax_elements": 0, "transfer_bytes": 0,
                                          "scopes": 0, "idle_scopes": 0, "translation_cycles": 0,
                                          "tlb_hits": 0, "tlb_misses": 0})
    page = cfg.basedie.tlb_page_bytes
    for i, sc in enumerate(scopes):
        if channels is not None and sc[1] not in channels:
            continue
        items = [(h, t) for h, t in work[i] if t > 0]
        if not items:
            tot["idle_scopes"] += 1
            continue
        tot["scopes"] += 1
        ins = []
        row = first_row
        for h, t in items:
            part_bytes = t * head_dim * kv_bytes  # K (or V) of this slice
            if not base_die:
                ins.append((kernels.OP_BCAST, math.ceil(gqa * head_dim * 2 / acc), 0, xfer_fj))
            for phase in range(2):  # 0: K and scores, 1: V and outputs
                if phase == 1 and not base_die:
                    ins.append((kernels.OP_BCAST, math.ceil(gqa * t * 2 / acc), 0, xfer_fj))
                left = math.ceil(part_bytes / u.bytes_per_mac_cmd)
                done_bytes = 0
                while left > 0:
                    if translation is not None and done_bytes % page == 0:
                        cyc = translation.lookup(("kv", label, h, i, phase, done_bytes // page))
                        if cyc:
                            ins.append((kernels.OP_WAIT, cyc, 0, 0))
                    k = min(left, u.mac_cmds_per_row)
                    ins.append((kernels.OP_ACT, row % stack.rows_of[sc[1], sc[3]], 0, act_fj))
                    ins.append((kernels.OP_MAC_BD if base_die else kernels.OP_MAC, k, spacing, mac_fj))
                    left -= k
                    done_bytes += k * u.bytes_per_mac_cmd
                    row += 1
                if phase == 0:
                    if not base_die:
                        ins.append((kernels.OP_GATHER, math.ceil(gqa * t * 2 / acc), 0, xfer_fj))
                    ins.append((kernels.OP_WAIT, math.ceil(gqa * t / softmax_rate), 0, 0))
                elif not base_die:
                    ins.append((kernels.OP_GATHER, math.ceil((gqa * head_dim * 4 + gqa * 8) / acc), 0, xfer_fj))
            tot["kv_bytes"] += 2 * part_bytes
            tot["macs"] += 2 * t * head_dim * gqa
            tot["softmax_elements"] += gqa * t
            if not base_die:
                tot["transfer_bytes"] += acc * (math.ceil(gqa * head_dim * 2 / acc) + 2 * math.ceil(gqa * t * 2 / acc)
                                                + math.ceil((gqa * head_dim * 4 + gqa * 8) / acc))
        ins.append((kernels.OP_PRE, 0, 0, 0))
        progs.add(sc, ins, release_cycle, label)
    if translation is not None:
        tot["tlb_hits"], tot["tlb_misses"] = translation.hits, translation.misses


def batch_work(n_scopes: int, tokens_per_seq, kv_heads: int) -> dict[int, list]:
    """How a batch's (sequence, head) work items are packed over `n_scopes` scopes: scope -> a list of
    ((sequence, head), tokens) slices, run in that order.

    Items >= scopes: whole items, longest first, each to the scope with the fewest tokens so far (LPT;
    ties to the lower scope). Fewer items than scopes: every scope is used, an item striped over k_i
    scopes, the k_i chosen greedily to minimize the largest tokens-per-scope max(t_i / k_i) (a scope at a
    time to the item with the most tokens per scope; ties to the earlier item), an item's scopes
    contiguous. Sequences with no tokens are left out. One sequence of H heads gets the scopes
    `attention_programs` gives it when H divides the scope count."""
    items = [((s, h), int(t)) for s, t in enumerate(tokens_per_seq) for h in range(kv_heads) if int(t) > 0]
    work: dict[int, list] = {i: [] for i in range(n_scopes)}
    if not items:
        return work
    if len(items) >= n_scopes:
        load = [(0, i) for i in range(n_scopes)]
        heapq.heapify(load)
        for n in sorted(range(len(items)), key=lambda n: -items[n][1]):
            tok, i = heapq.heappop(load)
            work[i].append(items[n])
            heapq.heappush(load, (tok + items[n][1], i))
        return work
    k = [1] * len(items)
    heap = [(-t, n) for n, (_, t) in enumerate(items)]
    heapq.heapify(heap)
    for _ in range(n_scopes - len(items)):
        _, n = heapq.heappop(heap)
        k[n] += 1
        heapq.heappush(heap, (-items[n][1] / k[n], n))
    i = 0
    for n, (key, t) in enumerate(items):
        base, extra = divmod(t, k[n])
        for j in range(k[n]):
            work[i].append((key, base + (1 if j < extra else 0)))
            i += 1
    return work


def batch_attention_programs(stack, tokens_per_seq, *, kv_heads: int, gqa: int, head_dim: int, kv_bytes: int = 2,
                             programs: Programs | None = None, release_cycle: int = 0, label: int = 0,
                             translation=None, first_row: int = 0,
                             channels: tuple[int, ...] | None = None) -> Programs:
    """Programs for one layer's decode attention of a batch: sequence s holds `tokens_per_seq[s]` tokens
    of KV for each of `kv_heads` heads, and its (sequence, head) items are packed over the PIM scopes
    (`batch_work`; AttAcc-style head/request-level parallelism). A scope runs its slices one after the
    other, each the full flow of `attention_programs` (q broadcast, K rows, score gather, softmax,
    probability broadcast, V rows, output gather); every slice starts a new row. The op time is the
    slowest scope's. `channels` keeps only those channels' programs, but the packing is not symmetric
    over channels, so a slice of channels need not hold the slowest scope."""
    _require_pim(stack)
    u = PimUnits.of(stack)
    progs = programs or Programs()
    scopes = _scopes(stack, u)
    work = batch_work(len(scopes), list(tokens_per_seq), kv_heads)
    _emit_scopes(stack, u, scopes, work, gqa=gqa, head_dim=head_dim, kv_bytes=kv_bytes, progs=progs,
                 release_cycle=release_cycle, label=label, translation=translation, first_row=first_row,
                 channels=channels)
    return progs
