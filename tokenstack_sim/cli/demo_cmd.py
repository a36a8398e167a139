"""`tokenstack demo`: the main job on a built-in default, with no arguments to invent.

Until the serving engine lands, the most useful thing the project does on a default is a DRAM
characterization: the built-in HBM3 and HBM4 presets under sequential, random and mixed traffic.
"""

import click

from tokenstack_sim.config.loader import load_config


@click.command()
@click.option("--requests", "n_requests", type=int, default=200_000, show_default=True)
def demo(n_requests: int) -> None:
    """Characterize the built-in HBM3 and HBM4 presets at command level."""
    from tokenstack_sim.hw.dram.patterns import generate
    from tokenstack_sim.hw.dram.run import run_dram, warmup

    click.echo("compiling the DRAM kernel (cached after the first run) ...", err=True)
    warmup()
    header = (f"{'preset':<18} {'pattern':<11} {'GB/s':>8} {'% peak':>7} {'lat mean ns':>12} {'p99 ns':>8} "
              f"{'row hits':>9} {'refresh':>8} {'nJ/req':>7}")
    click.echo(header)
    click.echo("-" * len(header))
    for preset in ("hbm3-ramulator21", "hbm4-ramulator21"):
        r = load_config(preset)
        for pattern in ("sequential", "random", "mixed"):
            res = run_dram(r, generate(pattern, n_requests, r.capacity_bytes, r.access_bytes, seed=1))
            lat = res.read_latency_ns
            nj = sum(res.energy_pj.values()) / 1e3 / res.requests
            click.echo(f"{preset:<18} {pattern:<11} {res.bandwidth_GBps:>8.1f} {res.pct_of_peak:>6.1f}% "
                       f"{lat['mean']:>12.1f} {lat['p99']:>8.1f} {100 * res.row_hit_rate:>8.1f}% "
                       f"{100 * res.refresh_time_share:>7.2f}% {nj:>7.2f}")
    click.echo(f"\n{n_requests:,} requests each; in-order front end, FR-FCFS, open page, all-bank refresh. "
               "Details: tokenstack dram --help")
