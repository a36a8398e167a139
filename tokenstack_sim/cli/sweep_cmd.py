"""`tokenstack sweep SPEC.toml` and the sweep-folder view of `tokenstack report DIR`.

A thin layer over `sweep/` (spec, points, executors, runner) and `results/sweep_report.py` (plots and the
HTML page). Progress lines go to stderr; tables to stdout. Exit status: 0 when every point finished,
1 when some point failed (its message is in the index and on stderr; rerunning retries it), 2 for bad
input (the spec, an option).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tokenstack_sim.errors import InputError


def _note(msg: str) -> None:
    click.echo(f"  {msg}", err=True)


def _line(msg: str) -> None:
    click.echo(msg, err=True)


def _executor(workers, dask_address, dask_local):
    from tokenstack_sim.hw.opcost.characterize import _cpus
    from tokenstack_sim.sweep.executor import DaskExecutor, LocalExecutor

    if workers is not None and workers < 1:
        raise InputError(f"expected at least 1 process, got {workers}", where="-j")
    if dask_address is not None and dask_local is not None:
        raise InputError("give --dask ADDRESS or --dask-local N, not both", where="--dask")
    if dask_address is not None or dask_local is not None:
        return DaskExecutor(address=dask_address, local_workers=dask_local)
    return LocalExecutor(workers or _cpus())


@click.command()
@click.argument("spec_file", type=click.Path(dir_okay=False))
@click.option("-j", "--jobs", "workers", type=int, default=None,
              help="Local worker processes (default: one per CPU); also the processes that characterize "
                   "missing op costs first.")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Run the points on the Dask scheduler at ADDRESS (e.g. tcp://host:8786); needs the [dist] extra.")
@click.option("--dask-local", "dask_local", type=int, default=None, metavar="N",
              help="Start a local Dask cluster of N single-threaded worker processes for the sweep.")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Sweep folder (default: sweep-<spec file name> in the current folder).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip points whose file is finished; --no-resume runs every point again.")
@click.option("--keep-stale", is_flag=True,
              help="Also skip finished points computed by other code (the simulator's sources or presets "
                   "changed since they ran); by default they run again.")
@click.option("--dry-run", is_flag=True, help="Check the spec and list its points; run nothing.")
def sweep(spec_file, workers, dask_address, dask_local, out, resume, keep_stale, dry_run) -> None:
    """Run every point of a design-space sweep SPEC_FILE (TOML): one HDF5 file per point plus an index.

    \b
    tokenstack sweep scripts/sweeps/example.toml -j 2 --out sweep-example
    tokenstack sweep my.toml --dask-local 4          # the same results on a local Dask cluster
    tokenstack report sweep-example                  # tables, plots and report.html
    """
    from tokenstack_sim.sweep.points import check_points, expand
    from tokenstack_sim.sweep.runner import point_label, run_sweep
    from tokenstack_sim.sweep.spec import load_sweep_spec

    spec = load_sweep_spec(spec_file)
    executor = _executor(workers, dask_address, dask_local)
    out_dir = Path(out) if out else Path(f"sweep-{Path(spec_file).stem}")
    if dry_run:
        points = expand(spec)
        check_points(spec, points)
        swept = {d.name for d in spec.dims if d.swept}
        for p in points:
            click.echo(point_label(p, swept))
        click.echo(f"{len(points)} points ({spec.method} sampling) for {out_dir}", err=True)
        return
    result = run_sweep(spec, out_dir, executor=executor, resume=resume, characterize_workers=workers,
                       progress=_line, note=_note, keep_stale=keep_stale)
    ran = sum(result.counts.values())
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items())) or "nothing to run"
    again = f" ({result.stale} of them finished by other code before)" if result.stale else ""
    click.echo(f"{out_dir}: {result.total} points, {result.skipped} already finished, {ran} run ({by_status}){again} "
               f"in {result.wall_s:.1f} s; index {out_dir / 'index.json'}", err=True)
    if result.errors:
        click.echo(f"{len(result.errors)} point(s) failed (first: {result.errors[0][0]}: {result.errors[0][1]}); "
                   "their messages are in the index; rerun the sweep to retry them", err=True)
        sys.exit(1)  # not click's Exit: main() runs click with standalone_mode=False, which returns its code


def report_sweep(sweep_dir: str | Path, fmt: str, plot_dir: str | Path | None) -> None:
    """`tokenstack report DIR` for a sweep folder: the points table on stdout, plots and report.html
    under `plot_dir` (default DIR/report)."""
    from tokenstack_sim.results.sweep_report import points_table, write_report
    from tokenstack_sim.sweep.index import read_index

    doc = read_index(sweep_dir)
    click.echo(points_table(doc["points"], fmt))
    target = Path(plot_dir) if plot_dir else Path(sweep_dir) / "report"
    rep = write_report(doc["points"], target, title=f"sweep {doc.get('sweep', '')}",
                       dims=doc.get("dims", []))
    for p in rep.images:
        click.echo(f"wrote {p}", err=True)
    click.echo(f"wrote {rep.html} (open it in a browser)", err=True)
    if (Path(sweep_dir) / "robustness.json").is_file():  # a `tokenstack robustness` folder
        from tokenstack_sim.cli.robust_cmd import report_robustness

        report_robustness(sweep_dir, fmt, plot_dir)
