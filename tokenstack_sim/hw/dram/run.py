"""Run the DRAM kernel on a request stream and summarize what happened.

`run_dram(resolved, requests)` maps addresses, packs the config into the kernel's arrays, runs the
kernel, and returns a `DramResult`: bandwidth, read latency (arrival to the last data beat, queueing
included), row-hit rate, command counts, refresh share and energy by command class.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tokenstack_sim.config.dram import COMMANDS, LEVELS, ResolvedDram
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.dram import kernels
from tokenstack_sim.hw.dram.address_map import parse_map
from tokenstack_sim.hw.dram.command_log import LOG_DTYPE
from tokenstack_sim.hw.dram.patterns import Requests


@dataclass
class KernelTables:
    """The config in the kernel's array form: `tab` (constraint tables, see kernels.T_*), `tim`, `ctl`."""
    tab: np.ndarray
    state_size: int
    n_banks: int
    tim: np.ndarray
    ctl: np.ndarray

    def fresh_state(self):
        """st, open_row: the timing state and row buffers of an idle, precharged device at cycle 0."""
        return np.zeros(self.state_size, np.int64), np.full(self.n_banks, -1, np.int64)


PIM_COMMANDS = ("ACTab", "MACab", "PREab", "PRD", "PWR")


def pack_tables(r: ResolvedDram, with_pim: bool = True) -> tuple[np.ndarray, int]:
    """The compiled constraint table as the kernel's flat `tab` array, and the size of its state.

    Without PIM programs no PIM command is ever issued, so the rows that lead to or from one are left
    out: every issued command then raises fewer nodes (plain DRAM runs lose no speed to PIM support)."""
    o = r.org
    dims = np.array([o.channels, o.pseudo_channels, o.sids, o.bank_groups, o.banks_per_group], np.int64)
    counts = np.cumprod(dims)
    off = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n_nodes = int(counts.sum())
    code = {c: i for i, c in enumerate(COMMANDS)}
    level = {name: i for i, name in enumerate(LEVELS)}
    rows, wins, wprev, wnext = [], [], [], []
    for c in r.constraints:
        if c.window:
            wins.append((level[c.scope], c.latency_cycles, c.window, 0))
            wprev.append([int(x in c.prev) for x in COMMANDS])
            wnext.append([int(x in c.next) for x in COMMANDS])
            continue
        for p in c.prev:
            for nx in c.next:
                if not with_pim and (p in PIM_COMMANDS or nx in PIM_COMMANDS):
                    continue
                rows.append((code[p], code[nx], level[c.scope], c.latency_cycles, int(c.sibling)))
    cons = np.array(sorted(rows), np.int64).reshape(-1, 5)
    cons_ptr = np.searchsorted(cons[:, 0], np.arange(len(COMMANDS) + 1)).astype(np.int64)
    n_win = len(wins)
    max_w = max((w[2] for w in wins), default=1)
    parts = [cons.ravel(), cons_ptr, np.array(wins, np.int64).ravel(), np.array(wprev, np.int64).ravel(),
             np.array(wnext, np.int64).ravel()]
    bases = np.cumsum([kernels.T_HEADER] + [len(x) for x in parts[:-1]])
    ready_size = n_nodes * kernels.NCMD
    header = np.zeros(kernels.T_HEADER, np.int64)
    header[kernels.T_DIMS:kernels.T_DIMS + 5] = dims
    header[kernels.T_OFF:kernels.T_OFF + 5] = off
    header[kernels.T_NWIN] = n_win
    header[kernels.T_MAXW] = max_w
    header[kernels.T_NNODES] = n_nodes
    header[[kernels.T_CONS, kernels.T_CPTR, kernels.T_WINS, kernels.T_WPREV, kernels.T_WNEXT]] = bases
    header[kernels.T_ST_WH] = ready_size
    header[kernels.T_ST_WP] = ready_size + n_win * n_nodes * max_w
    state_size = ready_size + n_win * n_nodes * max_w + n_win * n_nodes
    return np.concatenate([header, *parts]).astype(np.int64), state_size


def build_tables(r: ResolvedDram, *, log_on: bool = False, open_loop: bool | None = None,
                 with_pim: bool = True) -> KernelTables:
    cfg = r.config
    tab, state_size = pack_tables(r, with_pim)
    ctl_cfg = cfg.controller
    ol = cfg.frontend.mode == "open_loop" if open_loop is None else open_loop
    ctl = np.array([
        ctl_cfg.read_queue, ctl_cfg.write_queue,
        max(1, round(ctl_cfg.write_high_watermark * ctl_cfg.write_queue)),
        round(ctl_cfg.write_low_watermark * ctl_cfg.write_queue),
        int(ctl_cfg.scheduler == "fcfs"), int(ctl_cfg.page_policy == "closed"), int(ctl_cfg.dual_command_bus),
        {"none": 0, "all_bank": 1, "per_bank": 2}[cfg.refresh.mode],
        1 if cfg.scopes.refresh == "pseudo_channel" else 2,
        int(ol), cfg.frontend.requests_per_cycle, int(log_on), ctl_cfg.active_buffer,
        1, 1,  # PIM: other SIDs may be accessed while a SID computes; programs before the queues (stack runs set these)
        ctl_cfg.write_max_age_cycles,
        0,  # refresh phase: cycles into the first refresh interval at cycle 0 (characterization varies it)
        0,  # stop once every request but stream 0's (an open-loop background) is done (op-cost runs set it)
        0,  # the refresh issued `refresh phase` cycles before cycle 0 still runs if that is under tRFC
    ], np.int64)
    n = r.n
    tim = np.array([n["nCL"], n["nCWL"], n["nBL"], n["nREFI"], n["nREFIpb"]], np.int64)
    o = r.org
    n_banks = o.channels * o.pseudo_channels * o.sids * o.bank_groups * o.banks_per_group
    return KernelTables(tab, state_size, n_banks, tim, ctl)


@dataclass
class DramResult:
    """Summary of one DRAM run. Latencies include queueing; bandwidth counts all completed bytes."""
    preset: str
    requests: int
    reads: int
    writes: int
    cycles: int
    sim_time_ns: float
    bandwidth_GBps: float
    peak_GBps: float
    read_latency_ns: dict = field(default_factory=dict)  # mean, p50, p99, min, max
    row_hit_rate: float = 0.0
    command_counts: dict = field(default_factory=dict)
    refresh_time_share: float = 0.0
    energy_pj: dict = field(default_factory=dict)
    wall_s: float = 0.0  # the whole run_dram call: mapping, kernel, summary
    kernel_s: float = 0.0  # the numba kernel alone
    kernel_events: dict = field(default_factory=dict)  # how much work the kernel did (for benchmarks)
    log: np.ndarray | None = None
    latency_cycles: np.ndarray | None = None

    @property
    def pct_of_peak(self) -> float:
        return 100.0 * self.bandwidth_GBps / self.peak_GBps

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("log")
        d.pop("latency_cycles")
        d["pct_of_peak"] = self.pct_of_peak
        return d

    def table(self) -> str:
        lat = self.read_latency_ns
        lines = [
            f"DRAM run: {self.preset}",
            f"  requests          {self.requests:,} ({self.reads:,} reads, {self.writes:,} writes)",
            f"  simulated time    {self.sim_time_ns / 1e3:,.2f} us ({self.cycles:,} cycles)",
            f"  bandwidth         {self.bandwidth_GBps:,.1f} GB/s ({self.pct_of_peak:.1f}% of {self.peak_GBps:,.1f} peak)",
        ]
        if lat:
            lines.append(f"  read latency      mean {lat['mean']:.1f} ns, p50 {lat['p50']:.1f}, p99 {lat['p99']:.1f}, "
                         f"min {lat['min']:.1f} (arrival to last data beat; queueing included)")
        lines += [
            f"  row-hit rate      {100 * self.row_hit_rate:.1f}% (served without an ACT of their own)",
            f"  refresh share     {100 * self.refresh_time_share:.2f}% of time",
            "  commands          " + ", ".join(f"{k} {v:,}" for k, v in self.command_counts.items() if v),
            "  energy            " + ", ".join(f"{k} {v / 1e6:,.3f} uJ" for k, v in self.energy_pj.items()),
            f"  wall time         {self.wall_s:.3f} s ({self.requests / max(self.wall_s, 1e-9):,.0f} requests/s)",
        ]
        return "\n".join(lines)


def map_requests(r: ResolvedDram, req: Requests, *, source: str | None = None) -> dict[str, np.ndarray]:
    amap = parse_map(r.config.controller.address_map, r.org, source=r.source)
    too_big = np.nonzero(req.address >= np.uint64(r.capacity_bytes))[0]
    if len(too_big):
        k = int(too_big[0])
        raise InputError(f"address 0x{int(req.address[k]):x} is beyond the capacity "
                         f"{r.capacity_bytes:,} B of {r.config.name}", source=source, where=req.where(k))
    return amap.decode(req.address // np.uint64(r.access_bytes))


@dataclass
class KernelInput:
    """Everything the kernel runs besides the config: requests (already mapped to coordinates), their
    streams and dependencies, PIM programs and the power budget. `run_dram` fills only the requests;
    the stack model (hw/stack) fills the rest."""
    coords: dict[str, np.ndarray]
    is_write: np.ndarray
    arrive: np.ndarray  # cycles; used by the open-loop ingress of stream 0
    stream: np.ndarray  # stream of each request
    dep: np.ndarray  # request each one waits for (-1 none)
    stream_par: np.ndarray  # (streams, 4): priority, dependency latency, entry spacing x FP, queue share
    pg_scope: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    pg_ins: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    pg_lo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pg_hi: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pg_release: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    power: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))  # on, fJ per cycle, bucket fJ
    cmd_fj: np.ndarray = field(default_factory=lambda: np.zeros(kernels.NCMD, np.int64))

    @classmethod
    def plain(cls, coords, is_write, arrive=None) -> "KernelInput":
        n = len(is_write)
        return cls(coords, is_write, np.zeros(n, np.int64) if arrive is None else arrive,
                   np.zeros(n, np.int64), np.full(n, -1, np.int64),
                   np.array([[0, 0, 0, 1 << 40]], np.int64))


@dataclass
class KernelOutput:
    end_cycle: int
    arrive: np.ndarray
    done: np.ndarray
    miss: np.ndarray
    bank_counts: np.ndarray
    scope_counts: np.ndarray
    log: np.ndarray | None
    diag: np.ndarray
    kernel_s: float
    pg_start: np.ndarray
    pg_done: np.ndarray
    pg_counts: np.ndarray
    power_stats: np.ndarray  # commands held back by the power budget, cycles with one held back


def run_kernel(r: ResolvedDram, inp: KernelInput, *, command_log: bool = False, open_loop: bool = False,
               ctl_overrides: dict[int, int] | None = None) -> KernelOutput:
    """Run the cycle kernel once on mapped requests and PIM programs (growing the log if needed)."""
    n = len(inp.is_write)
    coords = inp.coords
    C = r.org.channels
    order = np.zeros(0, np.int64)
    lo = np.zeros(C, np.int64)
    hi = np.zeros(C, np.int64)
    stream = inp.stream.astype(np.int64)
    n_streams = len(inp.stream_par)
    if open_loop:  # stream 0 arrives by its timestamps
        s0 = np.nonzero(stream == 0)[0]
        order = s0[np.lexsort((s0, inp.arrive[s0], coords["ch"][s0]))].astype(np.int64)
        bounds = np.searchsorted(coords["ch"][order], np.arange(C + 1))
        lo, hi = bounds[:-1].astype(np.int64), bounds[1:].astype(np.int64)
    if not open_loop and (n_streams == 1 or not stream.any()):  # the common case: one in-order stream
        s_order = np.arange(n, dtype=np.int64)
        s_lo = np.zeros(n_streams, np.int64)
        s_hi = np.zeros(n_streams, np.int64)
        s_hi[0] = n
        s_lo[1:] = s_hi[1:] = n
    else:
        idx = np.nonzero(stream >= (1 if open_loop else 0))[0]
        s_order = idx[np.argsort(stream[idx], kind="stable")].astype(np.int64)
        bounds = np.searchsorted(stream[s_order], np.arange(n_streams + 1))
        s_lo, s_hi = bounds[:-1].astype(np.int64), bounds[1:].astype(np.int64)
    tabs = build_tables(r, log_on=command_log, open_loop=open_loop, with_pim=len(inp.pg_lo) > 0)
    for k, v in (ctl_overrides or {}).items():
        tabs.ctl[k] = v
    n_prog = len(inp.pg_lo)
    pg_ch = inp.pg_scope[:, 1] if n_prog else np.zeros(0, np.int64)
    if n_prog and np.any(np.diff(pg_ch) < 0):
        raise ValueError("PIM programs must be sorted by channel")
    pc_bounds = np.searchsorted(pg_ch, np.arange(C + 1))
    pgc_lo, pgc_hi = pc_bounds[:-1].astype(np.int64), pc_bounds[1:].astype(np.int64)
    n_scopes = C * r.org.pseudo_channels * (r.org.sids if r.config.scopes.refresh == "sid" else 1)
    pg_len = int((inp.pg_hi - inp.pg_lo).sum()) if n_prog else 0
    log_cap = 3 * n + 2 * pg_len + 4096 if command_log else 1
    if inp.pg_ins.size:
        log_cap += int(inp.pg_ins[:, 1][np.isin(inp.pg_ins[:, 0], [kernels.OP_MAC, kernels.OP_MAC_BD,
                                                                   kernels.OP_GATHER, kernels.OP_BCAST])].sum())
    while True:
        st, open_row = tabs.fresh_state()
        done = np.zeros(n, np.int64)
        miss = np.zeros(n, np.int8)
        bank_counts = np.zeros((tabs.n_banks, kernels.NCMD), np.int64)
        scope_counts = np.zeros((n_scopes, kernels.NCMD), np.int64)
        log = np.zeros((log_cap if command_log else 1, 9), np.int64)
        arr = inp.arrive.astype(np.int64).copy()
        diag = np.zeros(4, np.int64)
        pg_start = np.zeros(n_prog, np.int64)
        pg_done = np.zeros(n_prog, np.int64)
        pg_counts = np.zeros((n_prog, kernels.NCMD), np.int64)
        pw_stats = np.zeros(3, np.int64)
        t_kernel = time.perf_counter()
        end, log_n, status = kernels.simulate(
            coords["ch"], coords["pc"], coords["sid"], coords["bg"], coords["ba"], coords["row"], coords["col"],
            inp.is_write, arr, stream, inp.dep.astype(np.int64), order, lo, hi,
            s_order, s_lo, s_hi, inp.stream_par.astype(np.int64),
            tabs.tab, tabs.tim, tabs.ctl,
            inp.pg_scope.astype(np.int64), inp.pg_ins.astype(np.int64), inp.pg_lo.astype(np.int64),
            inp.pg_hi.astype(np.int64), inp.pg_release.astype(np.int64), pgc_lo, pgc_hi,
            inp.power.astype(np.int64), inp.cmd_fj.astype(np.int64),
            st, open_row, done, miss, bank_counts, scope_counts, log, diag,
            pg_start, pg_done, pg_counts, pw_stats)
        kernel_s = time.perf_counter() - t_kernel
        if status == 1:
            log_cap *= 2
            continue
        if status == 2:
            raise InputError("the DRAM kernel stopped before serving every request: with these timing values "
                             "no command could ever issue (check the [timing] table)", source=r.source)
        break
    return KernelOutput(int(end), arr, done, miss, bank_counts, scope_counts,
                        log[:log_n] if command_log else None, diag, kernel_s, pg_start, pg_done, pg_counts,
                        pw_stats[:2])


def run_dram(r: ResolvedDram, req: Requests, *, command_log: bool = False, open_loop: bool | None = None,
             source: str | None = None) -> DramResult:
    """Simulate `req` on the device and controller of `r` until every request completes."""
    t0 = time.perf_counter()
    n = len(req)
    coords = map_requests(r, req, source=source)
    ol = (r.config.frontend.mode == "open_loop") if open_loop is None else open_loop
    if ol and req.time_ns is None:
        raise InputError("the open-loop front end needs request times (TIME_NS R|W ADDRESS)", source=source)
    arrive = np.ceil(req.time_ns / r.tck_ns - 1e-9).astype(np.int64) if ol else np.zeros(n, np.int64)
    out = run_kernel(r, KernelInput.plain(coords, req.is_write, arrive), command_log=command_log, open_loop=ol)
    n_scopes = out.scope_counts.shape[0]
    wall = time.perf_counter() - t0
    result = _summarize(r, req, out.arrive, out.done, out.miss, out.end_cycle, out.bank_counts, out.scope_counts,
                        out.log, wall, n_scopes)
    result.kernel_s = out.kernel_s
    d = out.diag
    result.kernel_events = {"event_cycles": int(d[0]), "channel_passes": int(d[1]),
                            "entries_scanned": int(d[2]), "timing_checks": int(d[3])}
    return result


def _summarize(r, req, arrive, done, miss, end, bank_counts, scope_counts, log, wall, n_scopes) -> DramResult:
    o, cfg, n_ = r.org, r.config, r.n
    totals = bank_counts.sum(axis=0) + scope_counts.sum(axis=0)
    counts = {c: int(totals[i]) for i, c in enumerate(COMMANDS)}
    reads = ~req.is_write
    lat_cycles = (done - arrive)[reads]
    sim_ns = end * r.tck_ns
    bytes_done = len(req) * r.access_bytes
    lat = {}
    if len(lat_cycles):
        ns = lat_cycles * r.tck_ns
        lat = {"mean": float(ns.mean()), "p50": float(np.percentile(ns, 50)), "p99": float(np.percentile(ns, 99)),
               "min": float(ns.min()), "max": float(ns.max())}
    if cfg.refresh.mode == "all_bank":
        refresh_share = counts["REFab"] * n_["nRFC"] / max(end * n_scopes, 1)
    elif cfg.refresh.mode == "per_bank":
        refresh_share = counts["REFpb"] * n_["nRFCpb"] / max(end * len(bank_counts), 1)
    else:
        refresh_share = 0.0
    e = cfg.energy
    bits = r.access_bytes * 8
    energy = {
        "activate": counts["ACT"] * e.act_pre_pj,
        "read": (counts["RD"] + counts["RDA"]) * bits * e.rd_pj_per_bit,
        "write": (counts["WR"] + counts["WRA"]) * bits * e.wr_pj_per_bit,
        "refresh": counts["REFab"] * e.ref_ab_pj + counts["REFpb"] * e.ref_pb_pj,
        "background": e.background_mw_per_channel * o.channels * sim_ns,  # mW x ns = pJ
    }
    log_arr = None
    if log is not None:
        log_arr = np.zeros(len(log), LOG_DTYPE)
        for k, name in enumerate(LOG_DTYPE.names):
            log_arr[name] = log[:, k]
    return DramResult(
        preset=cfg.name, requests=len(req), reads=int(reads.sum()), writes=int((~reads).sum()), cycles=end,
        sim_time_ns=sim_ns, bandwidth_GBps=bytes_done / sim_ns if sim_ns else 0.0, peak_GBps=r.peak_bw_GBps,
        read_latency_ns=lat, row_hit_rate=1.0 - float(miss.mean()),
        command_counts=counts, refresh_time_share=refresh_share, energy_pj=energy, wall_s=wall,
        log=log_arr, latency_cycles=lat_cycles)


def warmup() -> None:
    """Compile every kernel once (numba caches the machine code on disk across processes)."""
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.hw.dram.patterns import generate

    r = load_config("hbm3-ramulator21")
    run_dram(r, generate("mixed", 64, r.capacity_bytes, r.access_bytes), command_log=True)
