"""`tokenstack demo`: the main job on a built-in default, with no arguments to invent.

Serves the built-in Azure-conversation-like workload (its own rate, 5.53 req/s, for 5 simulated minutes:
about 1,650 requests) with Llama-3.1-70B on the three headline systems at equal resources —
TokenStack, AttAcc and a GPU with plain HBM4 — and prints the comparison. Op costs the runs need are
characterized on the cycle kernel the first time (in parallel, cached on disk afterwards).
`--hardware` instead characterizes the DRAM presets and PIM attention per placement at command level.
"""

import click

from tokenstack_sim.config.loader import load_config

DEMO_SYSTEMS = ("tokenstack-hbm4", "attacc-hbm4", "gpu-hbm4")


@click.command()
@click.option("--model", default="llama-3.1-70b", show_default=True)
@click.option("--workload", default="azure-conv-like", show_default=True)
@click.option("--duration", "duration_s", type=float, default=300.0, show_default=True, help="Simulated seconds.")
@click.option("--qps", type=float, default=None, help="Request rate (default: the workload's own).")
@click.option("--workers", type=int, default=None, help="Processes (default: one per CPU).")
@click.option("--hardware", is_flag=True, help="Show the command-level DRAM and PIM characterization instead.")
@click.option("--requests", "n_requests", type=int, default=200_000, show_default=True,
              help="With --hardware: DRAM requests per pattern.")
def demo(model, workload, duration_s, qps, workers, hardware, n_requests) -> None:
    """Compare TokenStack, AttAcc and GPU-only HBM4 serving a production-style workload."""
    if hardware:
        _hardware(n_requests)
        return
    import time

    from tokenstack_sim.results.report import COMPACT_COLUMNS, runs_table
    from tokenstack_sim.sim.engine import RunSpec, ensure_tables, required_pairs, run_many
    from tokenstack_sim.sim.step_cost import EngineOptions

    def note(msg: str) -> None:
        click.echo(f"  {msg}", err=True)

    t0 = time.perf_counter()
    spec = RunSpec(workload=workload, qps=qps, duration_s=duration_s)
    options = EngineOptions()
    pairs = [p for s in DEMO_SYSTEMS for p in required_pairs(s, model, options=options)]
    ensure_tables(pairs, workers=workers, progress=note)
    click.echo(f"serving {workload} for {duration_s:g} simulated s with {model} on {', '.join(DEMO_SYSTEMS)} ...",
               err=True)
    runs = run_many([(s, model, spec, options) for s in DEMO_SYSTEMS], workers=workers, progress=note)
    ok = next((r for r in runs if r.status == "ok"), None)
    click.echo("")
    if ok is not None:
        rate = ok.params["qps"] or ok.summary["offered_qps"]
        click.echo(f"{model} on {workload} at {rate:.2f} req/s: {len(ok.requests):,} requests served, "
                   f"{ok.summary['requests']:,} in the statistics (first and last 10% left out); "
                   f"8 GPUs each, equal stacks and dies:")
    click.echo(runs_table(runs, "markdown", columns=COMPACT_COLUMNS))
    click.echo(f"\nSLO: TTFT <= {spec.slo_ttft_s:g} s, TPOT <= {1e3 * spec.slo_tpot_s:g} ms. "
               f"{time.perf_counter() - t0:.0f} s wall. More: tokenstack run --help, tokenstack capacity --help, "
               "tokenstack check tokenstack-hbm4")


def _hardware(n_requests: int) -> None:
    """The DRAM presets under sequential / random / mixed traffic, then PIM attention per placement."""
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
