"""`tokenstack demo`: the main job on a built-in default, with no arguments to invent.

Until the serving engine lands, the most useful things the project does on a default are a DRAM
characterization (the built-in HBM3 and HBM4 presets under sequential, random and mixed traffic) and
PIM attention on a TokenStack HBM4 stack per PIM placement, alone and beside GPU streaming.
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
    _pim_attention()


def _pim_attention() -> None:
    from tokenstack_sim.hw.stack.dma import GpuStream
    from tokenstack_sim.hw.stack.pim import attention_programs
    from tokenstack_sim.hw.stack.run import run_stack

    shape = dict(kv_heads=8, gqa=8, head_dim=128, kv_bytes=2)  # Llama-3.1-70B, BF16 KV
    click.echo("\nPIM attention, one Llama-3.1-70B layer (8 KV heads x GQA 8, BF16), one request, on "
               "hbm4-12h-tokenstack:")
    header = f"{'placement':<11} {'tokens':>7} {'alone us':>9} {'with GPU us':>12} {'GPU GB/s':>9} {'uJ':>7}"
    click.echo(header)
    click.echo("-" * len(header))
    for placement in ("bank", "bank_pair", "bank_group", "base_die"):
        st = load_config("hbm4-12h-tokenstack", [f'pim.placement="{placement}"'], kind="stack")
        for tokens in (2048, 8192):
            alone = run_stack(st, programs=attention_programs(st, tokens=tokens, **shape))
            t = alone.op_time_ns[0]
            both = run_stack(st, programs=attention_programs(st, tokens=tokens, **shape),
                             gpu=GpuStream(int(t * st.dram.peak_bw_GBps * 1.3)))
            click.echo(f"{placement:<11} {tokens:>7,} {t / 1e3:>9.2f} {both.op_time_ns[0] / 1e3:>12.2f} "
                       f"{both.gpu_bw_GBps:>9.0f} {sum(alone.energy_pj.values()) / 1e6:>7.1f}")
    click.echo("'with GPU': the GPU streams from the two capacity SIDs meanwhile. More: "
               "scripts/pim_attention_table.py, tokenstack op --help")
