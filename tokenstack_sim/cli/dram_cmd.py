"""`tokenstack dram`: run the cycle-level DRAM kernel on a trace or a synthetic pattern."""

from __future__ import annotations

import json
import sys

import click

from tokenstack_sim.cli.config_cmd import set_option
from tokenstack_sim.config.loader import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.dram.patterns import PATTERNS, generate, read_trace


@click.command()
@click.option("--config", "config", default="hbm4-ramulator21", show_default=True,
              help="DRAM preset name or TOML file.")
@click.option("--trace", type=click.Path(dir_okay=False), help="Trace file (text or .npz).")
@click.option("--pattern", type=click.Choice(PATTERNS), help="Synthetic pattern instead of a trace.")
@click.option("--requests", "n_requests", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Requests for --pattern.")
@click.option("--write-fraction", type=float, default=None, help="Share of writes for --pattern "
              "(default 0, or 1/3 for 'mixed').")
@click.option("--stride", "stride_bytes", type=int, default=4096, show_default=True, help="Bytes, for 'strided'.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--open-loop", is_flag=True, help="Use the trace's timestamps (open-loop front end).")
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--command-log", type=click.Path(dir_okay=False), help="Write every command issued (CSV).")
@click.option("--check", "run_check", is_flag=True, help="Replay the command log through the protocol checker.")
def dram(config, trace, pattern, n_requests, write_fraction, stride_bytes, seed, open_loop, overrides, as_json,
         command_log, run_check):
    """Simulate DRAM requests at command level and report bandwidth, latency, row hits, refresh, energy."""
    from tokenstack_sim.hw.dram.command_log import write_log
    from tokenstack_sim.hw.dram.run import run_dram

    r = load_config(config, overrides, kind="dram")
    if (trace is None) == (pattern is None):
        raise InputError("give exactly one of --trace or --pattern", where="dram")
    if trace:
        req = read_trace(trace)
    else:
        req = generate(pattern, n_requests, r.capacity_bytes, r.access_bytes, write_fraction=write_fraction,
                       stride_bytes=stride_bytes, seed=seed)
    click.echo(f"simulating {len(req):,} requests on {r.config.name} ...", err=True)
    result = run_dram(r, req, command_log=bool(command_log or run_check), open_loop=True if open_loop else None,
                      source=trace)
    if command_log:
        write_log(result.log, command_log)
    report = None
    if run_check:
        from tokenstack_sim.hw.dram.protocol_checker import check_log

        report = check_log(result.log, r, end_cycle=result.cycles)
    if as_json:
        data = result.to_dict()
        if report is not None:
            data["protocol_violations"] = len(report.violations)
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(result.table())
        if report is not None:
            click.echo(str(report))
    if report is not None and not report.ok:
        sys.exit(1)
