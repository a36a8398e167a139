"""Run GPU traffic, cross-layer DMA and PIM programs together on one stack's cycle kernel.

The base-die controller is the kernel's per-channel scheduler with three sources: GPU requests
(stream 0), DMA reads and writes (streams 1 and 2, limited to `dma_queue_share` of each queue and
ordered against the GPU by `basedie.arbitration`) and PIM programs (before the queues when
`basedie.pim_first`). The stack's power budget is a bucket refilled at (budget - background) watts
and drained by every command's energy; a command that finds it empty waits (throttling), refresh never
waits. Energy is counted actions x the energy table (energy.py); nothing is charged that the kernel did not
count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tokenstack_sim.config.dram import COMMANDS
from tokenstack_sim.hw.dram import kernels
from tokenstack_sim.hw.dram.run import KernelInput, run_kernel
from tokenstack_sim.hw.stack.dma import (DMA_READ, DMA_WRITE, GPU, DmaJob, GpuStream, build_streams,
                                         per_channel_streams, stream_params)
from tokenstack_sim.hw.stack.energy import SEGMENTS, count_path, energy_pj
from tokenstack_sim.hw.stack.pim import Programs

CMD = {c: i for i, c in enumerate(COMMANDS)}


@dataclass
class StackResult:
    stack: str
    cycles: int
    time_ns: float
    gpu_bytes: int = 0
    gpu_time_ns: float = 0.0
    gpu_bw_GBps: float = 0.0
    dma_read_bytes: int = 0
    dma_write_bytes: int = 0
    dma_time_ns: float = 0.0
    op_time_ns: dict = field(default_factory=dict)  # PIM op label -> last program done - release
    foreground_time_ns: float = 0.0  # a foreground stream measured under background traffic
    background_last_arrival_ns: float = 0.0  # open-loop GPU traffic: when its last request arrived
    throttled_commands: int = 0
    throttled_cycles: int = 0
    command_counts: dict = field(default_factory=dict)
    energy_pj: dict = field(default_factory=dict)
    actions: dict = field(default_factory=dict)  # counted actions (energy.py), energy = actions x table
    pim_totals: dict = field(default_factory=dict)
    wall_s: float = 0.0
    log: np.ndarray | None = None

    @property
    def throttled_share(self) -> float:
        return self.throttled_cycles / self.cycles if self.cycles else 0.0

    def table(self) -> str:
        lines = [f"stack run: {self.stack}", f"  simulated time   {self.time_ns:,.1f} ns ({self.cycles:,} cycles)"]
        if self.gpu_bytes:
            lines.append(f"  GPU traffic      {self.gpu_bytes:,} B in {self.gpu_time_ns:,.1f} ns = "
                         f"{self.gpu_bw_GBps:,.1f} GB/s")
        if self.dma_read_bytes:
            lines.append(f"  DMA              read {self.dma_read_bytes:,} B, wrote {self.dma_write_bytes:,} B in "
                         f"{self.dma_time_ns:,.1f} ns")
        for k, v in self.op_time_ns.items():
            lines.append(f"  PIM op {k}         {v:,.1f} ns")
        lines.append(f"  power throttling {self.throttled_commands:,} commands held back; "
                     f"{self.throttled_share:.1%} of cycles")
        lines.append("  commands         " + ", ".join(f"{k} {v:,}" for k, v in self.command_counts.items() if v))
        lines.append("  energy           " + ", ".join(f"{k} {v / 1e6:,.3f} uJ" for k, v in self.energy_pj.items()
                                                     if v))
        return "\n".join(lines)


def _power_table(stack) -> tuple[np.ndarray, np.ndarray]:
    d = stack.dram
    e = d.config.energy
    bits = d.access_bytes * 8
    fj = np.zeros(kernels.NCMD, np.int64)
    fj[CMD["ACT"]] = round(e.act_pre_pj * 1000)
    for c in ("RD", "RDA"):
        fj[CMD[c]] = round(bits * e.rd_pj_per_bit * 1000)
    for c in ("WR", "WRA"):
        fj[CMD[c]] = round(bits * e.wr_pj_per_bit * 1000)
    fj[CMD["REFab"]] = round(e.ref_ab_pj * 1000)
    fj[CMD["REFpb"]] = round(e.ref_pb_pj * 1000)
    p = stack.config.power
    if p.budget_w <= 0:
        return np.zeros(3, np.int64), fj
    static_w = e.background_mw_per_channel * d.org.channels / 1000
    # W x ns = nJ = 1e6 fJ
    rate = max(1, round((p.budget_w - static_w) * d.tck_ns * 1e6))
    bucket = max(rate, round(p.budget_w * p.window_ns * 1e6))
    return np.array([1, rate, bucket], np.int64), fj


def run_stack(stack, *, gpu: GpuStream | None = None, dma: tuple[DmaJob, ...] | list = (),
              programs: Programs | None = None, translator=None, command_log: bool = False,
              foreground: GpuStream | None = None, refresh_phase_cycles: int = 0,
              refresh: bool = True, stop_after_op: bool = False,
              refresh_in_progress: bool = False) -> StackResult:
    """Run GPU traffic, DMA jobs and PIM programs together until all are done. `translator` (a
    `translation.Translator`) charges the DMA engine's page translations; PIM programs carry theirs.
    The run starts `refresh_phase_cycles` into the refresh interval (0: just after a refresh, the next due
    one interval in; with `refresh_in_progress=True` (all-bank refresh), that refresh was issued
    `refresh_phase_cycles` before the start, so a start within its tRFC waits for it); `refresh=False`
    runs without refresh, whatever the DRAM config says (the op-cost characterization separates an op's
    own time from the refreshes that land in it: hw/opcost).
    `stop_after_op=True` ends the run once the DMA jobs, the foreground stream and the programs are done,
    leaving the open-loop GPU background's later requests unserved (they cannot change the op). The op's
    time is exact; the GPU figures and the GPU-read actions still count every background request
    generated, served or not (the op-cost characterization keeps only the op's time from such runs)."""
    t0 = time.perf_counter()
    d = stack.dram
    if foreground is not None and dma:
        raise ValueError("a foreground stream and DMA jobs cannot share one run")
    s = build_streams(stack, gpu, dma, translator, foreground)
    power, cmd_fj = _power_table(stack)
    progs = programs or Programs()
    pg_scope, pg_ins, pg_lo, pg_hi, pg_release, order = progs.arrays()
    stream, groups = per_channel_streams(s.kind, s.coords["ch"], s.open_loop)
    inp = KernelInput(s.coords, s.is_write, s.arrive, stream, s.dep,
                      np.tile(stream_params(stack, dma, foreground is not None), (groups, 1)),
                      pg_scope, pg_ins, pg_lo, pg_hi, pg_release, power, cmd_fj)
    b = stack.config.basedie
    ctl = {13: int(stack.config.pim.concurrent_access), 14: int(b.pim_first), 16: int(refresh_phase_cycles)}
    if refresh_in_progress:
        ctl[18] = 1
    if not refresh:
        ctl[7] = 0  # the kernel's refresh mode: 0 none
    if stop_after_op:
        if not s.open_loop:
            raise ValueError("stop_after_op needs an open-loop GPU background (stream 0)")
        ctl[17] = 1
    if dma:
        # the write-drain watermark must be reachable by DMA writes alone, which hold at most their share
        c = d.config.controller
        share = int(inp.stream_par[DMA_WRITE, 3])
        hi = min(max(1, round(c.write_high_watermark * c.write_queue)), share)
        ctl[2], ctl[3] = hi, 0  # and drains it fully: fewer read-write turnarounds
    if foreground is not None:  # one queue per source: the controller's queues hold both
        c = d.config.controller
        ctl[0], ctl[1] = 2 * c.read_queue, 2 * c.write_queue
    out = run_kernel(d, inp, command_log=command_log, open_loop=s.open_loop, ctl_overrides=ctl)
    tck = d.tck_ns
    res = StackResult(stack.config.name, out.end_cycle, out.end_cycle * tck, wall_s=0.0, log=out.log)
    g = s.kind == GPU
    if g.any():
        res.gpu_bytes = int(g.sum()) * d.access_bytes
        first = out.arrive[g].min() if s.open_loop else 0
        res.gpu_time_ns = float(out.done[g].max() - first) * tck
        res.gpu_bw_GBps = res.gpu_bytes / res.gpu_time_ns if res.gpu_time_ns else 0.0
    dm = (s.kind == DMA_READ) | (s.kind == DMA_WRITE)
    if s.open_loop and g.any():
        res.background_last_arrival_ns = float(out.arrive[g].max()) * tck
    if foreground is not None:
        res.foreground_time_ns = float(out.done[dm].max()) * tck if dm.any() else 0.0
    elif dm.any():
        res.dma_read_bytes, res.dma_write_bytes = s.dma_read_bytes, s.dma_write_bytes
        res.dma_time_ns = float(out.done[dm].max()) * tck  # DMA jobs start at cycle 0
    labels = np.array(progs.label, np.int64)[order] if len(order) else np.zeros(0, np.int64)
    for lab in np.unique(labels):
        m = labels == lab
        res.op_time_ns[int(lab)] = float(out.pg_done[m].max() - pg_release[m].min()) * tck
    res.throttled_commands, res.throttled_cycles = int(out.power_stats[0]), int(out.power_stats[1])
    totals = out.bank_counts.sum(axis=0) + out.scope_counts.sum(axis=0) + out.pg_counts.sum(axis=0)
    res.command_counts = {c: int(totals[i]) for i, c in enumerate(COMMANDS)}
    res.actions = _actions(stack, s, out, progs, order, foreground is not None)
    res.energy_pj = energy_pj(stack, res.actions, res.time_ns)
    res.pim_totals = progs.totals
    res.wall_s = time.perf_counter() - t0
    return res


def _actions(stack, s, out, progs, order, foreground: bool = False) -> dict[str, float]:
    """The run's counted actions (see energy.py), from the kernel's command counts: every bit moved is
    counted on each segment of its path (energy.PATHS). A `foreground` stream (in the DMA-read slot) is
    GPU traffic."""
    from tokenstack_sim.hw.stack.pim import PimUnits

    d, cfg = stack.dram, stack.config
    bits = d.access_bytes * 8
    counts = out.bank_counts.sum(axis=0) + out.scope_counts.sum(axis=0)
    pg = out.pg_counts.sum(axis=0)
    gpu = (s.kind == GPU) | ((s.kind == DMA_READ) if foreground else False)
    dma = ~gpu & ((s.kind == DMA_READ) | (s.kind == DMA_WRITE))
    dma_cmd_bits = bits * cfg.basedie.tsv_width_mult  # data one DMA command moves
    acts = {"dram_act": float(counts[CMD["ACT"]])}
    for a in SEGMENTS:
        acts[a] = 0.0
    count_path(acts, "gpu_read", (gpu & ~s.is_write).sum() * bits)
    count_path(acts, "gpu_write", (gpu & s.is_write).sum() * bits)
    count_path(acts, "dma_read", (dma & ~s.is_write).sum() * dma_cmd_bits)  # a DMA = its read + its write
    count_path(acts, "dma_write", (dma & s.is_write).sum() * dma_cmd_bits)
    acts.update({"quant_elements": float(s.quant_elements),
                 "refresh_ab": float(counts[CMD["REFab"]]),
                 "refresh_pb": float(counts[CMD["REFpb"]])})
    if progs.totals:
        u = PimUnits.of(stack)
        base_die = u.placement == "base_die"
        mac_cmds = pg[CMD["PRD"]] if base_die else pg[CMD["MACab"]]
        transfers = 0 if base_die else pg[CMD["PRD"]] + pg[CMD["PWR"]]
        count_path(acts, f"pim_read_{u.placement}", mac_cmds * u.bytes_per_mac_cmd * 8)
        count_path(acts, f"unit_transfer_{u.placement}", transfers * bits)
        acts.update({
            "pim_bank_acts": float(pg[CMD["ACTab"]] * u.banks_per_scope),
            "pim_macs": float(sum(t.get("macs", 0) for t in progs.totals.values())),
            "softmax_elements": float(sum(t.get("softmax_elements", 0) for t in progs.totals.values())),
        })
    return acts
