"""`tokenstack characterize CONFIG` and `tokenstack op CONFIG --op ...`: characterized op costs."""

from __future__ import annotations

import json
import time

import click

from tokenstack_sim.cli.config_cmd import set_option
from tokenstack_sim.config.loader import load_config
from tokenstack_sim.errors import InputError


def default_ops(stack, shapes=((8, 8, 128, 2),)):
    """The ops a serving run on this stack asks for: streams of each tier, KV demotion and promotion
    through the base die (INT8), PIM attention for the given (heads, gqa, head_dim, kv_bytes) shapes."""
    from tokenstack_sim.hw.opcost import OpSpec

    ops = [OpSpec("stream", tier=t) for t in ("capacity", "pim") if stack.tier_units(t)]
    if stack.has_pim and stack.tier_units("capacity"):
        ops += [OpSpec("dma", src="pim", dst="capacity", fmt="int8"),
                OpSpec("dma", src="capacity", dst="pim", fmt="int8", dequantize=True)]
    if stack.has_pim:
        ops += [OpSpec("attention", heads=h, gqa=g, head_dim=d, kv_bytes=b) for h, g, d, b in shapes]
    return ops


def _stack(config, overrides):
    return load_config(config, overrides, kind="stack")


@click.command()
@click.argument("config")
@set_option
@click.option("--heads", type=click.IntRange(min=1), default=8, show_default=True,
              help="Attention: KV heads stored in one stack.")
@click.option("--gqa", type=click.IntRange(min=1), default=8, show_default=True, help="Query heads per KV head.")
@click.option("--head-dim", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--kv-bytes", type=click.IntRange(min=1, max=4), default=2, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes, one op each [default: min(ops missing, CPUs)]; 1 runs in this process.")
def characterize(config, overrides, heads, gqa, head_dim, kv_bytes, workers):
    """Characterize CONFIG's ops on the cycle kernel and cache them (skips ops already cached)."""
    from tokenstack_sim.hw.opcost import OpCosts
    from tokenstack_sim.hw.opcost.cache import cache_dir
    from tokenstack_sim.hw.opcost.characterize import stderr_progress

    st = _stack(config, overrides)
    costs = OpCosts(st, on_missing="characterize", progress=stderr_progress)
    t0 = time.perf_counter()
    ops = default_ops(st, ((heads, gqa, head_dim, kv_bytes),))
    tables = costs.ensure(ops, workers=workers)
    rows = []
    for op, tab in zip(ops, tables):
        origin = costs.origin[op.op_id]
        sec = tab.meta.get("characterize_s", 0.0) if origin == "kernel" else 0.0
        rows.append((op.op_id, origin, len(tab.sizes[0]), len(tab.shares), tab.max_rel_error, sec,
                     tab.meta.get("starves_at_share")))
    click.echo(f"{st.config.name}: {len(rows)} ops in {time.perf_counter() - t0:.1f} s (cache {cache_dir()})")
    click.echo(f"  {'op':<38} {'from':<6} {'sizes x loads':>13} {'held-out err':>12} {'s':>6}  note")
    for op_id, origin, ns, nsh, err, sec, starve in rows:
        note = f"starves under load share {starve:g}" if starve is not None else ""
        click.echo(f"  {op_id:<38} {origin:<6} {ns:>8} x {nsh:<2} {100 * err:>11.2f}% {sec:>6.1f}  {note}")


@click.command()
@click.argument("config")
@click.option("--op", "kind", type=click.Choice(["stream", "attention", "dma"]), required=True)
@click.option("--bytes", "nbytes", type=float, help="stream / dma: bytes per stack.")
@click.option("--tokens", type=click.IntRange(min=0), help="attention: tokens of KV of one request.")
@click.option("--tier", type=click.Choice(["capacity", "pim"]), default="capacity", show_default=True)
@click.option("--src", type=click.Choice(["capacity", "pim"]), default="pim", show_default=True)
@click.option("--dst", type=click.Choice(["capacity", "pim"]), default="capacity", show_default=True)
@click.option("--fmt", type=click.Choice(["fp16", "fp8", "int8", "int4"]), default="int8", show_default=True)
@click.option("--dequantize", is_flag=True, help="dma: read the quantized form and write FP16 (promotion).")
@click.option("--heads", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--gqa", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--head-dim", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--kv-bytes", type=click.IntRange(min=1, max=4), default=2, show_default=True)
@click.option("--load", type=click.FloatRange(min=0, max=1), default=0.0, show_default=True,
              help="Background load share of each channel's peak bandwidth.")
@click.option("--cycle", "cycle_level", is_flag=True, help="Also run the op on the cycle kernel and compare.")
@set_option
@click.option("--json", "as_json", is_flag=True)
def op(config, kind, nbytes, tokens, tier, src, dst, fmt, dequantize, heads, gqa, head_dim, kv_bytes, load,
       cycle_level, overrides, as_json):
    """Cost of one op on CONFIG: time, energy by action, the units that worked, and where it came from."""
    from tokenstack_sim.hw.opcost import OpCosts, OpSpec
    from tokenstack_sim.hw.opcost.characterize import stderr_progress
    from tokenstack_sim.hw.opcost.simulate import simulate_op
    from tokenstack_sim.hw.stack.energy import energy_pj
    from tokenstack_sim.hw.stack.pim import PimUnits

    st = _stack(config, overrides)
    if kind == "attention":
        if tokens is None:
            raise InputError("--op attention needs --tokens")
        spec, size = OpSpec("attention", heads=heads, gqa=gqa, head_dim=head_dim, kv_bytes=kv_bytes), tokens
    else:
        if nbytes is None:
            raise InputError(f"--op {kind} needs --bytes")
        size = nbytes
        spec = (OpSpec("stream", tier=tier) if kind == "stream"
                else OpSpec("dma", src=src, dst=dst, fmt=fmt, dequantize=dequantize))
    costs = OpCosts(st, on_missing="characterize", progress=stderr_progress)
    tab = costs.table(spec)
    t_ns = float(tab.time(size, load))
    acts = {k: float(v) for k, v in tab.action_counts(size).items()}
    energy = energy_pj(st, acts, t_ns)
    out = {"config": st.config.name, "op": spec.op_id, "size": size, "unit": spec.size_unit, "load_share": load,
           "time_ns": t_ns, "energy_pj": energy, "actions": acts, "source": costs.origin[spec.op_id],
           "held_out_max_error": tab.max_rel_error}
    if kind == "attention":
        u = PimUnits.of(st)
        out["units"] = {"placement": u.placement, "scopes": u.n_scopes, "units_per_scope": u.units_per_scope,
                        "internal_GBps": u.internal_bw_GBps, "peak_tflops": u.peak_tflops}
    else:
        out["units"] = {"channels": len({c for c, _ in st.tier_units(spec.tier if kind == "stream" else src)}),
                        "tier": spec.tier if kind == "stream" else f"{src}->{dst}"}
    if cycle_level:
        k_ns, _, _ = simulate_op(st, spec, float(size), load)
        out["cycle_time_ns"] = k_ns
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{spec.op_id} on {st.config.name}: {size:,.0f} {spec.size_unit}, background load {load:g}")
    click.echo(f"  time       {t_ns:,.1f} ns (from the {out['source']}; held-out error of the table "
               f"{100 * tab.max_rel_error:.2f}%)")
    if cycle_level:
        click.echo(f"  kernel     {out['cycle_time_ns']:,.1f} ns ({100 * (t_ns / out['cycle_time_ns'] - 1):+.2f}%)"
                   if out["cycle_time_ns"] else "  kernel     0 ns")
    click.echo("  units      " + ", ".join(f"{k}={v if not isinstance(v, float) else round(v, 2)}"
                                         for k, v in out["units"].items()))
    total = sum(energy.values())
    click.echo(f"  energy     {total / 1e6:,.3f} uJ: " + ", ".join(f"{k} {v / 1e6:,.3f}" for k, v in energy.items()
                                                                 if v))
