"""`tokenstack check CONFIG` and `tokenstack list presets`."""

from __future__ import annotations

import json

import click

from tokenstack_sim.config.loader import arch_configs_dir, list_presets, load_config, read_toml
from tokenstack_sim.config.report import describe_dram
from tokenstack_sim.config.schema import to_dict

set_option = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                          help="Override one config value (repeatable), e.g. --set controller.read_queue=64")


@click.command()
@click.argument("config")
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the resolved config as JSON.")
def check(config: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Validate CONFIG (a preset name or a TOML file) and print it resolved."""
    r = load_config(config, overrides)
    from tokenstack_sim.hw.dram.address_map import parse_map

    parse_map(r.config.controller.address_map, r.org, source=r.source)  # a bad map fails here, not mid-run
    if as_json:
        data = to_dict(r.config)
        data["derived"] = {"timing_cycles": dict(r.n), "capacity_bytes": r.capacity_bytes,
                           "peak_bw_GBps": r.peak_bw_GBps, "waived_relations": list(r.waived)}
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(describe_dram(r))
        click.echo("ok")


@click.group("list")
def list_group() -> None:
    """List built-in things."""


@list_group.command("presets")
def presets() -> None:
    """List the built-in config presets."""
    root = arch_configs_dir()
    rows = []
    for name, path in list_presets().items():
        raw = read_toml(path)
        rows.append((name, raw.get("kind", "?"), str(path.relative_to(root)), raw.get("description", "")))
    width = max(len(r[0]) for r in rows)
    click.echo(f"{'preset':<{width}}  kind  file")
    for name, kind, rel, desc in rows:
        click.echo(f"{name:<{width}}  {kind:<4}  {rel}  {desc}")
