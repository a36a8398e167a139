"""`tokenstack workload ...`: inspect, synthesize, convert, fit and fetch request traces.

A thin layer: every command reads with `tokenstack_sim.workload.readers.read_trace`, transforms with the
workload layer, and prints or writes. Bad input raises `InputError`, which the top-level CLI prints on
one line with exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.fetch import KNOWN_TRACES, fetch as fetch_trace
from tokenstack_sim.workload.fit import fit_spec, write_spec
from tokenstack_sim.workload.hashing import reblock
from tokenstack_sim.workload.prefix_model import MOONCAKE_CONV, add_prefix_structure
from tokenstack_sim.workload.readers import FORMATS, read_trace
from tokenstack_sim.workload.shaping import retime, scale_rate, window
from tokenstack_sim.workload.spec import load_spec
from tokenstack_sim.workload.stats import TraceStats, trace_stats
from tokenstack_sim.workload.store import save_npz
from tokenstack_sim.workload.synth import synthesize
from tokenstack_sim.workload.arrivals import FAMILIES


@click.group()
def workload() -> None:
    """Production traces and synthetic request tables."""


def _trace_options(command):
    """The options every command that reads a trace shares."""
    options = [
        click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Trace format (default: detect)."),
        click.option("--skip-bad", is_flag=True, help="Skip malformed rows and report how many, instead of failing."),
        click.option("--map", "mapping", multiple=True, metavar="FIELD=COLUMN",
                     help="Column mapping for --format generic (arrival, input_tokens, output_tokens, ...)."),
        click.option("--time-unit", type=click.Choice(["s", "ms", "us"]), default="s", help="Generic arrival unit."),
        click.option("--failed", type=click.Choice(["drop", "keep"]), default="drop",
                     help="BurstGPT 0-token (failed) rows: drop and count, or keep flagged."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _read(trace: str, fmt, skip_bad, mapping, time_unit, failed):
    pairs = {}
    for item in mapping:
        field, sep, column = item.partition("=")
        if not sep or not field or not column:
            raise InputError(f"--map {item!r}: expected FIELD=COLUMN", where="--map")
        pairs[field.strip()] = column.strip()
    table = read_trace(trace, fmt, skip_bad=skip_bad, mapping=pairs or None, time_unit=time_unit, failed=failed)
    skipped = table.meta.get("skipped_rows", 0)
    if skipped:
        click.echo(f"skipped {skipped} bad row(s); first: {table.meta.get('first_skipped')}", err=True)
    if table.meta.get("failed_dropped"):
        click.echo(f"dropped {table.meta['failed_dropped']} failed (0-token response) row(s)", err=True)
    return table


def _npz_output(output: str) -> str:
    """Refuse an output name whose suffix is not .npz: the file written is always an .npz archive."""
    if Path(output).suffix.lower() != ".npz":
        raise InputError(f"the output is an .npz request table; name it *.npz, not {Path(output).name!r}", where="-o")
    return output


def format_stats(name: str, stats: TraceStats) -> str:
    lines = [
        f"trace            {name}",
        f"requests         {stats.requests:,}",
        f"duration         {stats.duration_s:,.1f} s",
        f"rate             {stats.rate_qps:.3f} req/s",
        f"inter-arrival CV {stats.interarrival_cv:.3f}",
        f"Fano (1 s)       {stats.fano_1s:.3f}",
        "",
        f"{'tokens':<17}{'mean':>10}{'p50':>10}{'p99':>10}{'max':>10}",
    ]
    for label, length in (("input", stats.input_tokens), ("output", stats.output_tokens)):
        lines.append(f"{label:<17}{length.mean:>10,.1f}{length.p50:>10,.0f}{length.p99:>10,.0f}{length.max:>10,.0f}")
    lines.append("")
    if stats.prefix is None:
        lines.append("prefix-hit       n/a (the trace has no prefix hashes; see `convert --add-prefix`)")
    else:
        p = stats.prefix
        lines += [
            "prefix-hit potential (unbounded cache, arrival order)",
            f"  token hit      {100 * p.token_hit_frac:.1f}%",
            f"  per request    p50 {p.request_hit_p50:.2f}, p90 {p.request_hit_p90:.2f}",
            f"  blocks reused  {100 * p.blocks_reused_frac:.1f}% of unique blocks referenced more than once",
        ]
    return "\n".join(lines)


def _plot(table, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = table.rows
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    minutes = np.bincount((rows["arrival_s"] // 60).astype(np.int64))
    axes[0].step(np.arange(len(minutes)), minutes, where="post")
    axes[0].set(xlabel="minute", ylabel="requests / min", title="arrivals")
    for ax, column in zip(axes[1:], ("input_tokens", "output_tokens")):
        values = np.maximum(rows[column], 1)
        ax.hist(values, bins=np.logspace(0, np.log10(values.max() + 1), 60))
        ax.set(xscale="log", xlabel=column.replace("_", " "), ylabel="requests", title=column.split("_")[0] + " length")
    fig.suptitle(table.meta.get("source", ""))
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except (OSError, ValueError) as exc:  # unwritable folder, or a suffix matplotlib cannot render
        raise InputError(f"cannot write the plot ({getattr(exc, 'strerror', None) or exc})", source=path, where="--plot") from None
    finally:
        plt.close(fig)


@workload.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@_trace_options
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also save arrivals and length histograms (PNG).")
def inspect(trace, fmt, skip_bad, mapping, time_unit, failed, plot_path) -> None:
    """Print lengths, rate, inter-arrival CV and prefix-hit potential of TRACE."""
    table = _read(trace, fmt, skip_bad, mapping, time_unit, failed)
    click.echo(format_stats(Path(trace).name, trace_stats(table)))
    if plot_path:
        _plot(table, plot_path)
        click.echo(f"plot written to {plot_path}")


@workload.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--requests", "-n", type=click.IntRange(min=1), required=True, help="Number of requests.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .npz.")
def synth(spec, requests, seed, output) -> None:
    """Generate a synthetic request table from a workload SPEC (TOML)."""
    _npz_output(output)
    table = synthesize(load_spec(spec), requests, seed)
    save_npz(table, output)
    click.echo(f"wrote {len(table):,} requests to {output}")


@workload.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@_trace_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .npz.")
@click.option("--window", "window_s", nargs=2, type=float, metavar="START_S END_S", help="Keep arrivals in [START, END) s.")
@click.option("--rate", "rate_qps", type=float, help="Scale time to this mean rate (keeps the inter-arrival CV).")
@click.option("--retime", "family", type=click.Choice(FAMILIES), help="Replace arrivals with this renewal process.")
@click.option("--cv", type=float, help="Inter-arrival CV for --retime (default: the trace's).")
@click.option("--add-prefix", is_flag=True, help="Add the Mooncake-calibrated prefix model (traces without hashes).")
@click.option("--block-tokens", type=int, help="Re-block prefix hashes to this KV block size (e.g. 16).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for --retime and --add-prefix.")
def convert(trace, fmt, skip_bad, mapping, time_unit, failed, output, window_s, rate_qps, family, cv, add_prefix,
            block_tokens, seed) -> None:
    """Convert TRACE to the project's .npz format, optionally shaping its load."""
    _npz_output(output)
    if cv is not None and not family:
        raise InputError("--cv only applies with --retime", where="--cv")
    table = _read(trace, fmt, skip_bad, mapping, time_unit, failed)
    if window_s:
        table = window(table, *window_s)
    if family:
        table = retime(table, family, seed, rate_qps=rate_qps, cv=cv)
    elif rate_qps:
        table = scale_rate(table, rate_qps)
    if add_prefix:
        if table.has_prefix:
            raise InputError("the trace already has prefix hashes; --add-prefix would replace them", source=trace)
        table = add_prefix_structure(table, MOONCAKE_CONV, seed)
    if block_tokens:
        table = reblock(table, block_tokens)
    save_npz(table, output)
    click.echo(f"wrote {len(table):,} requests to {output}")


@workload.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@_trace_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output spec (.toml).")
@click.option("--name", help="Spec name (default: the output file's stem).")
def fit(trace, fmt, skip_bad, mapping, time_unit, failed, output, name) -> None:
    """Estimate a synthetic workload spec from TRACE."""
    table = _read(trace, fmt, skip_bad, mapping, time_unit, failed)
    spec = fit_spec(table, name or Path(output).stem)
    write_spec(spec, output, comment=f"Fitted by `tokenstack workload fit` from {Path(trace).name}.")
    click.echo(f"wrote {output}")


@workload.command()
@click.argument("name", type=click.Choice(sorted(KNOWN_TRACES)))
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Cache folder (default: $TOKENSTACK_CACHE_DIR or ~/.cache/tokenstack/traces).")
@click.option("--base-url", help="Mirror laid out like the cache folder (default: $TOKENSTACK_TRACE_BASE_URL, else the public address).")
def fetch(name, cache_dir, base_url) -> None:
    """Download a known public trace into the cache, verified by sha256."""
    path = fetch_trace(name, cache_dir, base_url)
    click.echo(f"{name}: {path} (licence: {KNOWN_TRACES[name].licence})")
