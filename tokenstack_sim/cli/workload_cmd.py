"""`tokenstack workload ...`: inspect, synthesize, convert, fit and fetch request traces."""

import click


@click.group()
def workload() -> None:
    """Production traces and synthetic request tables."""
