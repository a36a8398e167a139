"""`tokenstack robustness SPEC.toml`: a robustness study on the sweep machinery (robust/sweep.py), and the
robustness part of `tokenstack report DIR`. Exit status as `tokenstack sweep`: 0 every point finished, 1
some point failed (rerun to retry), 2 bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.argument("spec_file", type=click.Path(dir_okay=False))
@click.option("-j", "--jobs", "workers", type=int, default=None,
              help="Local worker processes (default: one per CPU).")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS", help="Run the points on a Dask scheduler.")
@click.option("--dask-local", "dask_local", type=int, default=None, metavar="N",
              help="Start a local Dask cluster of N worker processes.")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Study folder (default: robustness-<spec file name>).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Skip finished points.")
@click.option("--dry-run", is_flag=True, help="Check the spec and list its points; run nothing.")
def robustness(spec_file, workers, dask_address, dask_local, out, resume, dry_run) -> None:
    """Designs/policies x injector types x magnitudes x seeds (a sweep spec with a [robustness] table; format
    in tokenstack_sim/robust/sweep.py): every point nominal and perturbed, then robustness (performance kept),
    resilience (recovery time) and work lost against the nominal run of the same seed.

    \b
    tokenstack robustness scripts/sweeps/robustness_example.toml -j 2 --out robust-example
    tokenstack report robust-example      # tables, heatmaps and recovery plots
    """
    from tokenstack_sim.cli.sweep_cmd import _executor, _line, _note
    from tokenstack_sim.robust.report import summary_table
    from tokenstack_sim.robust.sweep import expand_points, load_robust_spec, run_robustness
    from tokenstack_sim.sweep.points import check_points
    from tokenstack_sim.sweep.runner import point_label

    rs = load_robust_spec(spec_file)
    out_dir = Path(out) if out else Path(f"robustness-{Path(spec_file).stem}")
    if dry_run:
        points = expand_points(rs)
        check_points(rs.sweep, points)
        for p in points:
            inj = p.params.get("perturb")
            click.echo(point_label(p) + (f" {inj[0]['type']} m={inj[0]['magnitude']:g}" if inj else " nominal"))
        click.echo(f"{len(points)} points for {out_dir}", err=True)
        return
    executor = _executor(workers, dask_address, dask_local)
    result, rows = run_robustness(rs, out_dir, executor=executor, resume=resume, characterize_workers=workers,
                                  progress=_line, note=_note)
    click.echo(summary_table(rows))
    click.echo(f"{out_dir}: {result.total} points, {result.skipped} already finished; {len(rows)} perturbed runs "
               f"compared in {out_dir / 'robustness.json'} ({result.wall_s:.1f} s)", err=True)
    if result.errors:
        click.echo(f"{len(result.errors)} point(s) failed (first: {result.errors[0][0]}: {result.errors[0][1]})",
                   err=True)
        sys.exit(1)


def report_robustness(sweep_dir, fmt: str, plot_dir) -> None:
    """The robustness tables and plots of a study folder (when it has robustness.json)."""
    from tokenstack_sim.robust.report import write_report
    from tokenstack_sim.robust.sweep import read_rows

    doc = read_rows(sweep_dir)
    target = Path(plot_dir) if plot_dir else Path(sweep_dir) / "report"
    table, images = write_report(doc, target, "csv" if fmt == "csv" else "markdown")
    click.echo("\nRobustness (perturbed / nominal, same seed; recovery from the disruption's end):")
    click.echo(table)
    for p in images:
        click.echo(f"wrote {p}", err=True)
