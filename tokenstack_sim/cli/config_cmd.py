"""`tokenstack check CONFIG` and `tokenstack list presets`."""

from __future__ import annotations

import json

import click

from tokenstack_sim.config.loader import arch_configs_dir, list_presets, load_config, read_toml

set_option = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                          help="Override one config value (repeatable), e.g. --set controller.read_queue=64; on a "
                               "system, paths into the presets it names, as `run --set` and sweep [params] take "
                               "them: gpu_stack.layout.pim_dies=2, gpu_stack.dram.controller.read_queue=64, "
                               "gpu.<key>, gpu_link.<key>, host_link.<key>, pim_device.stack.<key>")


@click.command()
@click.argument("config")
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the resolved config as JSON.")
def check(config: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Validate CONFIG (a preset name or a TOML file) and print it resolved."""
    r = load_config(config, overrides)
    if hasattr(r, "validate_runtime"):
        r.validate_runtime()  # e.g. a bad address map fails here, not mid-run
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=2))
    else:
        click.echo(r.describe())
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
    kw = max(4, *(len(r[1]) for r in rows))
    click.echo(f"{'preset':<{width}}  {'kind':<{kw}}  file")
    for name, kind, rel, desc in rows:
        click.echo(f"{name:<{width}}  {kind:<{kw}}  {rel}  {desc}")
