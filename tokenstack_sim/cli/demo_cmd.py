"""`tokenstack demo`: the main job on a built-in default, with no arguments to invent."""

import click

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.config.report import describe_dram


@click.command()
def demo() -> None:
    """Resolve and print the built-in HBM4 preset."""
    click.echo(describe_dram(load_config("hbm4-ramulator21")))
