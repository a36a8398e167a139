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
@click.option("--validation", "show_validation", is_flag=True,
              help="Print every held-out check: size, load, kernel ns, table ns, relative error.")
def characterize(config, overrides, heads, gqa, head_dim, kv_bytes, workers, show_validation):
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
        rows.append((op.op_id, origin, len(tab.sizes[0]), len(tab.shares), tab.max_rel_error,
                     tab.max_rel_error_between_levels, sec, tab.meta.get("starves_at_share")))
    click.echo(f"{st.config.name}: {len(rows)} ops in {time.perf_counter() - t0:.1f} s (cache {cache_dir()})")
    click.echo(f"  {'op':<38} {'from':<6} {'sizes x loads':>13} {'held-out err':>12} {'between loads':>13} "
               f"{'s':>6}  note")
    for op_id, origin, ns, nsh, err, err_b, sec, starve in rows:
        note = f"starves under load share {starve:g}" if starve is not None else ""
        click.echo(f"  {op_id:<38} {origin:<6} {ns:>8} x {nsh:<2} {100 * err:>11.2f}% {100 * err_b:>12.2f}% "
                   f"{sec:>6.1f}  {note}")
    click.echo("  (held-out err: largest |table - kernel| / kernel at held-out sizes on the load levels; between "
               "loads: at loads half-way between levels, which a look-up rounds up)")
    if show_validation:
        for op, tab in zip(ops, tables):
            click.echo(f"{op.op_id}: size, load, kernel ns, table ns, error")
            checks = [(v, "") for v in tab.validation]
            checks += [(v, "  (between levels)") for v in tab.meta.get("validation_between_levels", ())]
            for (size, share, k_ns, t_ns, err), what in checks:
                flag = "  > 5%" if abs(err) > 0.05 else ""
                click.echo(f"  {size:>14,.0f} {share:>5.3g} {k_ns:>12,.1f} {t_ns:>12,.1f} {100 * err:>+7.2f}%"
                           f"{what}{flag}")


def _gemm(system, m, n, k, dtype) -> dict:
    """One GEMM C[m,n] = A[m,k] @ W[k,n] on one GPU of `system`, timed by the roofline with the memory
    bandwidth of that GPU's stacks; energy = the GPU's compute + L2 (GpuStats.energy_pj) + the DRAM
    energy of its bytes on the GPU stacks (reads of A and W, the write of C)."""
    from tokenstack_sim.config.gpu import DTYPE_BYTES
    from tokenstack_sim.hw.gpu import roofline
    from tokenstack_sim.hw.gpu.component import Gpu
    from tokenstack_sim.hw.stack.energy import path_pj_per_bit

    gpu, bw = system.gpu, system.gpu_bw_GBps
    g = Gpu(gpu, bw)
    t_s = float(g.gemm(m, n, k, dtype))
    flops, nbytes = roofline.gemm_counts(m, n, k, dtype)
    eta_c = float(roofline.gemm_compute_efficiency(gpu, m, n))
    eff = gpu.config.efficiency
    t_compute = flops / (eta_c * gpu.peak_flops(dtype))
    t_memory = nbytes / (eff.memory_bw * bw * 1e9)
    b = DTYPE_BYTES[dtype]
    read_bytes, write_bytes = (m * k + k * n) * b, m * n * b
    assert read_bytes + write_bytes == nbytes
    energy = dict(g.stats.energy_pj(gpu))
    energy["dram_read_pj"] = read_bytes * 8 * path_pj_per_bit(system.gpu_stack, "gpu_read")
    energy["dram_write_pj"] = write_bytes * 8 * path_pj_per_bit(system.gpu_stack, "gpu_write")
    return {"config": system.name, "op": f"gemm-{dtype}", "m": m, "n": n, "k": k, "dtype": dtype,
            "time_ns": t_s * 1e9, "bound": "compute" if t_compute >= t_memory else "memory",
            "compute_time_ns": t_compute * 1e9, "memory_time_ns": t_memory * 1e9,
            "launch_ns": gpu.launch_overhead_s * 1e9, "eta_compute": eta_c, "eta_memory_bw": eff.memory_bw,
            "flops": flops, "bytes": nbytes, "read_bytes": read_bytes, "write_bytes": write_bytes,
            "energy_pj": energy, "source": "roofline (closed form)",
            "units": {"gpu": gpu.name, "sms": gpu.config.sm_count, "gpu_stacks": system.gpu_stacks_per_gpu,
                      "gpu_stack": system.gpu_stack.config.name, "dram": system.gpu_stack.dram.config.name,
                      "mem_bw_GBps": bw}}


def _print_gemm(out: dict) -> None:
    u = out["units"]
    click.echo(f"gemm {out['m']:,} x {out['n']:,} x {out['k']:,} {out['dtype']} on one GPU of {out['config']} "
               f"(C[m,n] = A[m,k] @ W[k,n])")
    click.echo(f"  time       {out['time_ns']:,.1f} ns, {out['bound']}-bound (compute {out['compute_time_ns']:,.1f} ns "
               f"at eta {out['eta_compute']:.3f}, memory {out['memory_time_ns']:,.1f} ns at eta "
               f"{out['eta_memory_bw']:.2f}, + launch {out['launch_ns']:,.0f} ns)")
    click.echo(f"  work       {out['flops']:,.0f} FLOPs, {out['bytes']:,.0f} bytes "
               f"({out['read_bytes']:,.0f} read, {out['write_bytes']:,.0f} written)")
    click.echo(f"  units      {u['gpu']} ({u['sms']} SMs), memory {u['gpu_stacks']} x {u['gpu_stack']} "
               f"(DRAM {u['dram']}) = {u['mem_bw_GBps']:,.1f} GB/s")
    e = out["energy_pj"]
    parts = ", ".join(f"{k.removesuffix('_pj')} {v / 1e6:,.3f}" for k, v in e.items())
    click.echo(f"  energy     {sum(e.values()) / 1e6:,.3f} uJ: {parts} (static power left out)")
    click.echo(f"  from: {out['source']}")


@click.command()
@click.argument("config")
@click.option("--op", "kind", type=click.Choice(["stream", "attention", "dma", "gemm"]), required=True)
@click.option("--bytes", "nbytes", type=float, help="stream / dma: bytes per stack.")
@click.option("--tokens", type=click.IntRange(min=0), help="attention: tokens of KV of one request.")
@click.option("--m", type=click.IntRange(min=1), help="gemm: rows of A and C (tokens).")
@click.option("--n", type=click.IntRange(min=1), help="gemm: columns of W and C.")
@click.option("--k", type=click.IntRange(min=1), help="gemm: the reduced dimension.")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp8"]), default="bf16", show_default=True,
              help="gemm: data type of A, W and C.")
@click.option("--on-stack", type=click.Choice(["gpu", "pim-device"]), default="gpu", show_default=True,
              help="stream / attention / dma with a system CONFIG: its GPU stack or its PIM device's stack.")
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
@click.option("--cycle", "cycle_level", is_flag=True,
              help="Also run the op on the cycle kernel's one-channel slice, which the table is made of, and compare.")
@click.option("--whole-stack", is_flag=True,
              help="Also run the op on the cycle kernel over every channel of the stack at once. Under load each "
                   "channel meets its own background and the op ends with its slowest channel, which the table "
                   "(one channel's expected time) leaves out; costs about the channel count x a slice run.")
@set_option
@click.option("--json", "as_json", is_flag=True)
def op(config, kind, nbytes, tokens, m, n, k, dtype, on_stack, tier, src, dst, fmt, dequantize, heads, gqa,
       head_dim, kv_bytes, load, cycle_level, whole_stack, overrides, as_json):
    """Cost of one op on CONFIG (a stack, or a system): time, energy by action, the units that worked, and
    where it came from. gemm needs a system (its GPU, with the bandwidth of the GPU's stacks); stream,
    attention and dma run on a stack (of a system: its GPU stack, or --on-stack pim-device)."""
    from tokenstack_sim.config.stack import ResolvedStack
    from tokenstack_sim.config.system import ResolvedSystem
    from tokenstack_sim.hw.opcost import OpCosts, OpSpec
    from tokenstack_sim.hw.opcost.characterize import stderr_progress
    from tokenstack_sim.hw.opcost.simulate import simulate_op
    from tokenstack_sim.hw.stack.energy import energy_pj
    from tokenstack_sim.hw.stack.pim import PimUnits

    cfg = load_config(config, overrides)
    if not isinstance(cfg, ResolvedStack | ResolvedSystem):
        raise InputError(f"{config!r} is a {type(cfg).__name__}; --op needs a stack or a system config")
    if kind == "gemm":
        if not isinstance(cfg, ResolvedSystem):
            raise InputError(f"--op gemm needs a system config (a GPU and its stacks); {config!r} is a stack")
        missing = [f"--{name}" for name, v in (("m", m), ("n", n), ("k", k)) if v is None]
        if missing:
            raise InputError(f"--op gemm needs {', '.join(missing)}")
        if cycle_level or whole_stack:
            flag = "--cycle" if cycle_level else "--whole-stack"
            raise InputError(f"{flag}: a GEMM is timed in closed form (roofline); it has no cycle-level model")
        out = _gemm(cfg, m, n, k, dtype)
        if as_json:
            click.echo(json.dumps(out, indent=2))
        else:
            _print_gemm(out)
        return
    via = ""
    if isinstance(cfg, ResolvedSystem):
        if on_stack == "pim-device":
            if cfg.pim_stack is None:
                raise InputError(f"system {cfg.name!r} has no PIM device; use --on-stack gpu")
            st, role, count = cfg.pim_stack, "PIM device stack", cfg.pim_stacks_per_gpu
        else:
            st, role, count = cfg.gpu_stack, "GPU stack", cfg.gpu_stacks_per_gpu
        via = (f"the {role} of system {cfg.name}: {st.config.name} (DRAM {st.dram.config.name}), "
               f"{count} per GPU")
    else:
        st = cfg
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
    out = {"config": cfg.config.name, "stack": st.config.name, "op": spec.op_id, "size": size,
           "unit": spec.size_unit, "load_share": load, "time_ns": t_ns, "energy_pj": energy, "actions": acts,
           "source": costs.origin[spec.op_id], "held_out_max_error": tab.max_rel_error}
    if via:
        out["stack_of_system"] = via
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
    if whole_stack:
        # the same expectation as the slice's (refresh, the draws' stopping rule), each draw every channel
        w_ns, _, det = simulate_op(st, spec, float(size), load, whole=True)
        out["whole_stack_time_ns"] = w_ns
        out["whole_stack_draws"] = det.get("draws", 1)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{spec.op_id} on {st.config.name}: {size:,.0f} {spec.size_unit}, background load {load:g}")
    if via:
        click.echo(f"  stack      {via}; size and time are per stack")
    click.echo(f"  time       {t_ns:,.1f} ns (from the {out['source']}; held-out error of the table "
               f"{100 * tab.max_rel_error:.2f}%)")
    if cycle_level:
        click.echo(f"  kernel     {out['cycle_time_ns']:,.1f} ns on the one-channel slice (the table "
                   f"{100 * (t_ns / out['cycle_time_ns'] - 1):+.2f}%)"
                   if out["cycle_time_ns"] else "  kernel     0 ns")
    if whole_stack:
        w_ns, n = out["whole_stack_time_ns"], out["whole_stack_draws"]
        draws = f", mean of {n} backgrounds" if load > 0 else ""
        click.echo(f"  whole      {w_ns:,.1f} ns on every channel at once{draws} (the table "
                   f"{100 * (t_ns / w_ns - 1):+.2f}%)" if w_ns else "  whole      0 ns")
    if load > 0:
        # hw/opcost/simulate.py, channel symmetry: the stack's op ends with its slowest channel
        click.echo("  caveat     under load: one channel's expected time; the whole stack's op ends with its slowest "
                   "channel, which for short ops can take tens of percent longer (--whole-stack runs it; "
                   "python scripts/bench_symmetry.py)")
    click.echo("  units      " + ", ".join(f"{k}={v if not isinstance(v, float) else round(v, 2)}"
                                         for k, v in out["units"].items()))
    total = sum(energy.values())
    click.echo(f"  energy     {total / 1e6:,.3f} uJ: " + ", ".join(f"{k} {v / 1e6:,.3f}" for k, v in energy.items()
                                                                 if v))
