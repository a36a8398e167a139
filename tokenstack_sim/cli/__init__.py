"""The `tokenstack` command line: a thin layer over the public API in `tokenstack_sim.api`.

Bad input (an `InputError`) is printed on one line to stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from tokenstack_sim import __version__
from tokenstack_sim.errors import InputError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tokenstack")
def cli() -> None:
    """tokenstack_sim: LLM serving on heterogeneous HBM4-PIM memory, from DRAM commands up."""


def _register() -> None:
    # Each sub-command lives in its own module; registering here keeps the import direction one-way.
    from tokenstack_sim.cli import (config_cmd, demo_cmd, dram_cmd, opcost_cmd, robust_cmd, serve_cmd, sweep_cmd,
                                    workload_cmd)

    cli.add_command(config_cmd.check)
    cli.add_command(config_cmd.list_group)
    cli.add_command(dram_cmd.dram)
    cli.add_command(demo_cmd.demo)
    cli.add_command(workload_cmd.workload)
    cli.add_command(opcost_cmd.characterize)
    cli.add_command(opcost_cmd.op)
    cli.add_command(serve_cmd.run)
    cli.add_command(serve_cmd.capacity)
    cli.add_command(serve_cmd.report)
    cli.add_command(serve_cmd.timeline)
    cli.add_command(sweep_cmd.sweep)
    cli.add_command(robust_cmd.robustness)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="tokenstack", standalone_mode=False)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
