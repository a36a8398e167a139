"""Human-readable text of a resolved config (for `tokenstack check`)."""

from __future__ import annotations

from tokenstack_sim.config.dram import TIMING_PARAMS, ResolvedDram
from tokenstack_sim.config.schema import to_dict


def describe_dram(r: ResolvedDram) -> str:
    cfg, o = r.config, r.config.organization
    lines = [f"{cfg.name}  ({cfg.kind}, schema {cfg.schema_version}, family {cfg.family})"]
    if cfg.description:
        lines.append(f"  {cfg.description}")
    if cfg.source:
        lines.append(f"  source: {cfg.source}")
    lines += [
        f"  organization: {o.standard}, {o.channels} ch x {o.pseudo_channels} PC x {o.sids} SID x "
        f"{o.bank_groups} BG x {o.banks_per_group} banks, {o.rows} rows x {o.columns} cols",
        f"  capacity {r.capacity_bytes / 2**30:.2f} GiB; access {r.access_bytes} B; row {r.row_bytes} B",
        f"  clock {cfg.clock.data_rate_gbps} Gb/s per pin, tCK {cfg.clock.tck_ns} ns; peak "
        f"{r.peak_bw_GBps:.1f} GB/s per stack, {r.peak_bw_per_pc_GBps:.1f} GB/s per pseudo-channel",
        "  timing (cycles / ns):",
    ]
    for name in TIMING_PARAMS:
        lines.append(f"    {name:<8} {r.n[name]:>6}  {r.n[name] * cfg.clock.tck_ns:9.3f} ns   {TIMING_PARAMS[name]}")
    if r.waived:
        lines.append(f"  WARNING: waived timing relations (as the source publishes them): {', '.join(r.waived)}")
    lines.append("  scopes: " + ", ".join(f"{k}={v}" for k, v in to_dict(cfg.scopes).items()))
    lines.append(f"  refresh: {cfg.refresh.mode}")
    lines.append("  controller: " + ", ".join(f"{k}={v}" for k, v in to_dict(cfg.controller).items()))
    lines.append("  frontend: " + ", ".join(f"{k}={v}" for k, v in to_dict(cfg.frontend).items()))
    lines.append("  energy: " + ", ".join(f"{k}={v}" for k, v in to_dict(cfg.energy).items()))
    lines.append(f"  constraints: {len(r.constraints)} compiled from family '{cfg.family}'")
    return "\n".join(lines)
