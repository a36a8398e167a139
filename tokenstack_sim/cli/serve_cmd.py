"""`tokenstack run | capacity | report | timeline`: serve workloads on modeled systems and read the results.

A thin layer over `sim/engine.py` (runs), `sim/capacity.py` (SLO capacity search) and `results/`
(HDF5, tables, plots, traces). Long work shows a progress bar on stderr; tables go to stdout.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from tokenstack_sim.errors import InputError

_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|ms|us)?\s*$")
_TIME_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6, None: 1.0}


def parse_time_s(text: str, where: str) -> float:
    """'2s', '100ms', '250us' or a bare number of seconds."""
    m = _TIME.match(str(text))
    if not m:
        raise InputError(f"expected a time such as 2s, 100ms or 0.5, got {text!r}", where=where)
    return float(m.group(1)) * _TIME_SCALE[m.group(2)]


def _scheduler_overrides(items) -> dict:
    from tokenstack_sim.config.loader import parse_override
    from tokenstack_sim.runtime.params import SchedulerParams
    import dataclasses

    known = {f.name for f in dataclasses.fields(SchedulerParams)} - {"num_kv_blocks"}
    out = {}
    for item in items:
        path, value = parse_override(item)
        key = ".".join(path)
        if key not in known:
            raise InputError(f"unknown scheduler parameter {key!r}; known: {', '.join(sorted(known))}",
                             where="--sched")
        out[key] = value
    return out


def _checked_overrides(items, cls, option: str) -> dict:
    """`KEY=VALUE` items as fields of dataclass `cls`, checked by name and value; errors blamed on `option`."""
    from tokenstack_sim.config.loader import parse_override
    from tokenstack_sim.config.schema import build

    out = {}
    for item in items:
        path, value = parse_override(item)
        out[".".join(path)] = value
    try:
        build(cls, out)
    except InputError as exc:
        raise InputError(f"{exc.message} (at {exc.where})", where=option) from None
    return out


def _kv_overrides(items) -> dict:
    """`--kv KEY=VALUE` items as KvPolicy fields (kv/policy.py)."""
    from tokenstack_sim.kv.policy import KvPolicy

    return _checked_overrides(items, KvPolicy, "--kv")


def _runtime_overrides(items) -> dict:
    """`--runtime-opt KEY=VALUE` items as AgentRuntimeParams fields (runtime/agent_runtime.py)."""
    from tokenstack_sim.runtime.agent_runtime import AgentRuntimeParams

    return _checked_overrides(items, AgentRuntimeParams, "--runtime-opt")


def _common(command):
    options = [
        click.option("--set", "system_sets", multiple=True, metavar="KEY.PATH=VALUE",
                     help="Override one system config value (repeatable), applied to EVERY system CONFIG of the "
                          "command, as `tokenstack check SYSTEM --set` and a sweep's [params] take it, e.g. "
                          "gpu_stack.layout.pim_dies=2, gpu_stack.dram.clock.data_rate_gbps=10, gpu.sm_count=132, "
                          "gpu_link.latency_us=2. Each run is named SYSTEM[KEY=VALUE,...] unless --set name=... ."),
        click.option("--model", "-m", "model", default="llama-3.1-70b", show_default=True, help="Model preset or TOML."),
        click.option("--workload", "-w", default="azure-conv-like", show_default=True,
                     help="Built-in workload spec name, a spec TOML, or a trace file."),
        click.option("--duration", "duration", default=None, help="Simulated seconds of arrivals (e.g. 300, 5min not accepted: seconds)."),
        click.option("--requests", "max_requests", type=int, default=None, help="Keep at most this many requests."),
        click.option("--seed", type=int, default=0, show_default=True, help="First seed."),
        click.option("--sched", multiple=True, metavar="KEY=VALUE",
                     help="Scheduler parameter (max_num_batched_tokens, max_num_seqs, block_size, ...)."),
        click.option("--kv-blocks", type=int, default=None, help="Override the KV pool (vLLM's num_gpu_blocks)."),
        click.option("--kv", "kv", multiple=True, metavar="KEY=VALUE",
                     help="KV management (placement=topology-aware|round-robin|capacity-first|interleaved, "
                          "eviction=workload-aware|lru|lfu|none, demote_format=int8|int4|fp8|fp16, "
                          "replication_budget=0.05, promotion=false, ...; docs in kv/policy.py)."),
        click.option("--memory-timing", type=click.Choice(["characterized", "roofline"]), default="characterized",
                     show_default=True, help="Stack streams from characterized costs or the analytical roofline."),
        click.option("--overlap", type=click.Choice(["none", "sub_batch", "attacc_pipeline"]), default="none",
                     show_default=True, help="Overlap within a step, for every system alike (sub_batch: NeuPIMs "
                     "interleaving; attacc_pipeline: AttAcc's per-head QKV/attention/out_proj pipeline)."),
        click.option("--pim-batching", type=click.Choice(["packed", "serial"]), default="packed", show_default=True,
                     help="How a batch's decode attention shares the PIM units."),
        click.option("--allreduce", type=click.Choice(["auto", "ring", "one_shot", "two_shot"]), default="auto",
                     show_default=True, help="Tensor-parallel all-reduce algorithm."),
        click.option("--slo-ttft", default="2s", show_default=True, help="TTFT SLO (e.g. 2s, 500ms)."),
        click.option("--slo-tpot", default="100ms", show_default=True, help="TPOT SLO (e.g. 100ms)."),
        click.option("--warmup", "warmup_frac", type=float, default=0.1, show_default=True,
                     help="Share of requests (first by arrival) left out of the statistics."),
        click.option("--drain", "drain_frac", type=float, default=0.1, show_default=True,
                     help="Share of requests (last by arrival) left out of the statistics."),
        click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Write the runs to an HDF5 file."),
        click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown",
                     show_default=True, help="Tables as markdown, csv or one JSON document (several tables: an "
                                             "object of them by name)."),
        click.option("--workers", type=int, default=None, help="Processes for characterizing missing op costs."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# RunSpec fields -> the options that set them, so a refused value is named as the user typed it
_OPTION_OF = {"qps": "--qps", "duration_s": "--duration", "max_requests": "--requests", "kv_blocks": "--kv-blocks",
              "warmup_frac": "--warmup", "drain_frac": "--drain", "slo_ttft_s": "--slo-ttft",
              "slo_tpot_s": "--slo-tpot"}


def _spec(workload, qps, duration, max_requests, seed, sched, kv_blocks, slo_ttft, slo_tpot, warmup_frac, drain_frac,
          kv=()):
    from tokenstack_sim.sim.engine import RunSpec

    try:
        return RunSpec(workload=workload, qps=qps,
                       duration_s=None if duration is None else parse_time_s(duration, "--duration"),
                       max_requests=max_requests, seed=seed, warmup_frac=warmup_frac, drain_frac=drain_frac,
                       slo_ttft_s=parse_time_s(slo_ttft, "--slo-ttft"), slo_tpot_s=parse_time_s(slo_tpot, "--slo-tpot"),
                       scheduler=_scheduler_overrides(sched), kv_blocks=kv_blocks, kv=_kv_overrides(kv))
    except InputError as exc:
        if exc.where in _OPTION_OF:
            raise InputError(exc.message.replace(exc.where, _OPTION_OF[exc.where]),
                             where=_OPTION_OF[exc.where]) from None
        raise


def _progress_bar(label: str):
    """A progress callback (finished, total) drawing a click bar on stderr."""
    state = {"bar": None, "done": 0}

    def update(finished: int, total: int) -> None:
        if state["bar"] is None:
            state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            state["bar"].__enter__()
        state["bar"].update(finished - state["done"])
        state["done"] = finished
        if finished >= total:
            state["bar"].__exit__(None, None, None)

    return update


def _note(msg: str) -> None:
    click.echo(f"  {msg}", err=True)


def _systems(configs, system_sets) -> list:
    """CONFIGS as given (names, resolved later), or with `--set` each loaded with every override. A system
    with overrides is renamed `NAME[KEY=VALUE,...]` (unless one sets `name`), so its runs and table rows
    never pass for the preset's own."""
    if not system_sets:
        return list(configs)
    import dataclasses

    from tokenstack_sim.config.loader import load_config, parse_override

    names_it = any(parse_override(s)[0] == ["name"] for s in system_sets)
    out = []
    for c in configs:
        system = load_config(c, list(system_sets), kind="system")
        if not names_it:
            label = f"{system.name}[{','.join(s.strip() for s in system_sets)}]"
            system = dataclasses.replace(system, config=dataclasses.replace(system.config, name=label))
        out.append(system)
    return out


def _prepare_all(configs, model, spec, options, workers, system_sets=()):
    """Prepare every system (characterizing missing costs across them in parallel first)."""
    from tokenstack_sim.sim.engine import ensure_tables, prepare, required_pairs

    configs = _systems(configs, system_sets)
    pairs = []
    for c in configs:
        pairs += required_pairs(c, model, options=options, scheduler=spec.scheduler, kv_blocks=spec.kv_blocks,
                                kv=spec.kv)
    ensure_tables(pairs, workers=workers, progress=_note)
    return [prepare(c, model, options=options, scheduler=spec.scheduler, kv_blocks=spec.kv_blocks, kv=spec.kv,
                    on_missing="error") for c in configs]


def _print_tables(runs, fmt: str) -> None:
    """The runs table, the per-seed-group table when a group has several seeds, and for agent runs the app
    table (results/agent_report.py). JSON is one document: the runs table's list alone, or an object
    {"runs": [...], "seeds": [...], "agent_apps": [...]} of the tables printed."""
    import json

    from tokenstack_sim.results.agent_report import agent_table, is_agent_run
    from tokenstack_sim.results.report import runs_table, seed_groups, seeds_table

    tables = [("runs", runs_table(runs, fmt))]
    if any(len(g) > 1 for g in seed_groups(runs)):
        tables.append(("seeds", seeds_table(runs, fmt)))
    if any(is_agent_run(r) for r in runs):  # agent apps: makespans, KV use, offloads
        tables.append(("agent_apps", agent_table(runs, fmt)))
    from tokenstack_sim.results.allgather_report import allgather_table, is_allgather_run

    if any(is_allgather_run(r) for r in runs):  # All-Gather rounds: prefill per round, KV per agent
        tables.append(("allgather_rounds", allgather_table(runs, fmt)))
    if fmt == "json" and len(tables) > 1:
        click.echo(json.dumps({k: json.loads(t) for k, t in tables}, indent=2))
        return
    click.echo("\n".join(t for _, t in tables))


@click.command()
@click.argument("configs", nargs=-1, required=True)
@_common
@click.option("--qps", type=float, default=None, help="Mean request rate (default: the workload's own).")
@click.option("--seeds", type=int, default=1, show_default=True, help="Runs with seeds seed .. seed+N-1.")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME",
              help="Agent runtime, for agent workloads (codewriter-like, deep-research-like, random-dag): vllm "
                   "(default) | vllm-offload | tokencake; for All-Gather rounds (generative-agents-like, "
                   "agentsociety-like; --requests = agents) also pic | tokendance; repeat to compare.")
@click.option("--runtime-opt", "runtime_opts", multiple=True, metavar="KEY=VALUE",
              help="Agent runtime parameter (offload_target=auto|host|capacity, store_gib=100, reserve_share=0.2, "
                   "temporal=false, spatial=false, ...; docs in runtime/agent_runtime.py).")
def run(configs, system_sets, model, workload, duration, max_requests, seed, sched, kv_blocks, kv, memory_timing,
        overlap, pim_batching, allreduce, slo_ttft, slo_tpot, warmup_frac, drain_frac, out, fmt, workers, qps, seeds,
        runtimes=(), runtime_opts=()) -> None:
    """Serve a workload on one or more system CONFIGS and print the comparison.

    \b
    tokenstack run tokenstack-hbm4 attacc-hbm4 gpu-hbm4 --model llama-3.1-70b --workload azure-conv-like \\
        --qps 4 --duration 300 --seeds 3 --out runs.h5
    tokenstack run tokenstack-hbm4 --set gpu_stack.layout.pim_dies=2 --model llama-3.1-70b --qps 4 --duration 60
    """
    import dataclasses

    from tokenstack_sim.results.h5 import write_runs
    from tokenstack_sim.sim.engine import run_prepared
    from tokenstack_sim.sim.step_cost import EngineOptions

    if seeds < 1:
        raise InputError(f"expected at least 1, got {seeds}", where="--seeds")
    spec = _spec(workload, qps, duration, max_requests, seed, sched, kv_blocks, slo_ttft, slo_tpot, warmup_frac,
                 drain_frac, kv)
    rt_opts = _runtime_overrides(runtime_opts)
    rt_specs = []
    for name in runtimes or ("vllm",):
        try:
            rt_specs.append(dataclasses.replace(spec, runtime=name, runtime_options=rt_opts))
        except InputError as exc:
            raise InputError(exc.message, where="--runtime" if exc.where == "runtime" else "--runtime-opt") from None
    options = EngineOptions(memory_timing=memory_timing, overlap=overlap, pim_batching=pim_batching,
                            allreduce=allreduce)
    preps = _prepare_all(configs, model, spec, options, workers, system_sets)
    runs = []
    for prep in preps:
        for rspec in rt_specs:
            for s in range(seed, seed + seeds):
                sp = dataclasses.replace(rspec, seed=s)
                label = f"{prep.system.name} {rspec.runtime} seed {s}" if runtimes else f"{prep.system.name} seed {s}"
                try:
                    runs.append(run_prepared(prep, sp, progress=_progress_bar(label) if prep.fits else None))
                except InputError as exc:
                    if exc.where == "runtime":
                        raise InputError(exc.message, where="--runtime") from None
                    raise
    if out:
        write_runs(out, runs)
        click.echo(f"wrote {len(runs)} run(s) to {out}", err=True)
    _print_tables(runs, fmt)


@click.command()
@click.argument("configs", nargs=-1, required=True)
@_common
@click.option("--qps-start", type=float, default=None,
              help="First rate tried (default 1; All-Gather rounds: the first agent count, default 8).")
@click.option("--tolerance", type=float, default=0.05, show_default=True, help="Relative width of the final bracket.")
@click.option("--target", type=float, default=0.9, show_default=True, help="Share of requests that must meet the SLO.")
@click.option("--seeds", type=int, default=1, show_default=True,
              help="Runs per probed rate (seeds seed .. seed+N-1); a rate meets the SLO when the mean over them does.")
@click.option("--runtime", "runtime", default=None, metavar="NAME",
              help="Agent runtime for agent workloads (vllm | vllm-offload | tokencake): rates are apps/s; for "
                   "All-Gather rounds (generative-agents-like, agentsociety-like: vllm | pic | tokendance) the "
                   "search is over the number of concurrent agents.")
@click.option("--max-agents", type=int, default=None,
              help="All-Gather rounds: probe no more agents than this (a search that gets there reports >=).")
@click.option("--runtime-opt", "runtime_opts", multiple=True, metavar="KEY=VALUE",
              help="Agent runtime parameter, as for `run`.")
@click.option("--slo-makespan", default=None,
              help="Agent apps: an app meets the SLO when its makespan is within this (e.g. 300s); without it, "
                   "the LLM calls' TTFT/TPOT SLO is used.")
def capacity(configs, system_sets, model, workload, duration, max_requests, seed, sched, kv_blocks, kv,
             memory_timing, overlap, pim_batching, allreduce, slo_ttft, slo_tpot, warmup_frac, drain_frac, out, fmt,
             workers, qps_start, tolerance, target, seeds, runtime=None, max_agents=None, runtime_opts=(), slo_makespan=None) -> None:
    """Highest request rate at which >= 90% of requests meet the SLO, per system CONFIG.

    With --seeds N every probed rate is served N times; the rate meets the SLO when the MEAN SLO
    attainment over the N seeds is >= --target. Each probed rate is listed with that mean and its 95%
    Student-t confidence interval over the seeds; the capacity is given with its bracket.

    Agent workloads (codewriter-like, ...): rates are apps/s and --requests the apps per run; with
    --slo-makespan the attainment is the share of apps whose makespan meets it, else the share of LLM
    calls meeting --slo-ttft / --slo-tpot.

    All-Gather rounds (generative-agents-like, agentsociety-like): the largest number of concurrent
    agents whose calls meet the SLO (whole counts from --qps-start, bracket within --tolerance or one
    agent); --runtime vllm | pic | tokendance.

    \b
    tokenstack capacity tokenstack-hbm4 gpu-hbm4 --model llama-3.1-70b --workload azure-conv-like \\
        --duration 300 --slo-ttft 2s --slo-tpot 100ms --seeds 3 --out capacity.h5
    tokenstack capacity h100-tokencake --model qwen2.5-14b --workload codewriter-like --requests 12 \\
        --runtime tokencake --slo-makespan 300s --qps-start 0.25 --memory-timing roofline
    tokenstack capacity h100-tokencake --model qwen2.5-14b --workload generative-agents-like \
        --runtime tokendance --slo-ttft 1.5s --slo-tpot 3600s --warmup 0.2 --drain 0 --memory-timing roofline
    """
    import dataclasses

    from tokenstack_sim.workload.agent_workloads import is_agent_workload
    from tokenstack_sim.workload.allgather import is_allgather_workload

    from tokenstack_sim.results.h5 import write_runs
    from tokenstack_sim.sim.capacity import capacity_search, capacity_table, probes_table, rule_line
    from tokenstack_sim.sim.step_cost import EngineOptions

    if seeds < 1:
        raise InputError(f"expected at least 1, got {seeds}", where="--seeds")
    spec = _spec(workload, None, duration, max_requests, seed, sched, kv_blocks, slo_ttft, slo_tpot, warmup_frac,
                 drain_frac, kv)
    rounds = is_allgather_workload(workload)
    if rounds and (duration is not None or max_requests is not None):
        where = "--duration" if duration is not None else "--requests"
        raise InputError(f"{workload} is searched over its number of agents: leave out {where} (first count: "
                         "--qps-start, ceiling: --max-agents)", where=where)
    if rounds and slo_makespan is not None:
        raise InputError(f"{workload}: the SLO is on its calls (--slo-ttft / --slo-tpot), not on a makespan",
                         where="--slo-makespan")
    if max_agents is not None and not rounds:
        raise InputError(f"--max-agents is for All-Gather rounds (generative-agents-like, agentsociety-like), "
                         f"not {workload!r}", where="--max-agents")
    if not rounds and spec.duration_s is None and spec.max_requests is None:
        raise InputError("a capacity search needs --duration (or --requests) so every rate serves a like window",
                         where="--duration")
    metric = "slo_attainment"
    if runtime is not None or runtime_opts or slo_makespan is not None:
        if not is_agent_workload(workload):
            where = "--runtime" if runtime is not None else ("--slo-makespan" if slo_makespan else "--runtime-opt")
            raise InputError(f"{where} is for agent workloads (codewriter-like, deep-research-like, random-dag or a "
                             f"DAG CSV), not {workload!r}", where=where)
        rt_opts = _runtime_overrides(runtime_opts)
        if slo_makespan is not None:
            rt_opts["slo_makespan_s"] = parse_time_s(slo_makespan, "--slo-makespan")
            metric = "app_slo_attainment"
        try:
            spec = dataclasses.replace(spec, runtime=runtime or "vllm", runtime_options=rt_opts)
        except InputError as exc:
            raise InputError(exc.message, where="--runtime" if exc.where == "runtime" else "--runtime-opt") from None
    options = EngineOptions(memory_timing=memory_timing, overlap=overlap, pim_batching=pim_batching,
                            allreduce=allreduce)
    preps = _prepare_all(configs, model, spec, options, workers, system_sets)
    results, runs = [], []
    for prep in preps:
        if rounds:  # the agent count is the "rate" (results/allgather_report.agents_capacity)
            from tokenstack_sim.results.allgather_report import agents_capacity

            res = agents_capacity(prep, spec, start=8 if qps_start is None else qps_start, tolerance=tolerance,
                                  target=target, seeds=seeds, max_agents=max_agents, progress=_note)
        else:
            res = capacity_search(prep, spec, qps_start=1.0 if qps_start is None else qps_start,
                                  tolerance=tolerance, target=target, seeds=seeds, progress=_note, metric=metric,
                                  unit="apps/s" if is_agent_workload(workload) else "req/s")
        results.append(res)
        runs += res.runs
    if out:
        write_runs(out, runs)
        click.echo(f"wrote {len(runs)} run(s) to {out}", err=True)
    click.echo(capacity_table(results, fmt))  # JSON: one list, each row with its probes and the rule
    if fmt != "json":
        click.echo("")
        click.echo(probes_table(results, fmt))
        click.echo("")
        click.echo(rule_line(results) if fmt == "markdown" else f"# {rule_line(results)}")


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown", show_default=True)
@click.option("--plots", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Also write PNG plots (throughput vs QPS, latency CDFs, energy breakdown, KV use) here; "
                   "for a sweep folder, where its plots and report.html go (default DIR/report).")
def report(files, fmt, plot_dir) -> None:
    """Tables (and plots) of the runs in one or more result FILES, or of a sweep folder DIR.

    A sweep folder (written by `tokenstack sweep`) gives its points table, the sweep plots
    (throughput-latency, SLO attainment and capacity, energy per token, Pareto front, sensitivity to each
    swept parameter) and a self-contained report.html."""
    from tokenstack_sim.results import plots
    from tokenstack_sim.results.h5 import read_runs

    if len(files) == 1 and Path(files[0]).is_dir():
        from tokenstack_sim.cli.sweep_cmd import report_sweep

        report_sweep(files[0], fmt, plot_dir)
        return

    runs = [r for f in files for r in read_runs(f)]
    _print_tables(runs, fmt)
    if plot_dir:
        d = Path(plot_dir)
        made = [plots.throughput_vs_qps(runs, d / "throughput_vs_qps.png"),
                plots.latency_cdfs(runs, d / "latency_cdfs.png"),
                plots.energy_breakdown(runs, d / "energy_breakdown.png"),
                plots.kv_blocks_over_time(runs, d / "kv_blocks.png")]
        if any(r.status == "ok" and "kv_pim_blocks" in (r.steps.dtype.names or ()) for r in runs):
            made.append(plots.kv_tiers_over_time(runs, d / "kv_tiers.png"))
        for p in made:
            click.echo(f"wrote {p}", err=True)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Chrome/Perfetto trace JSON.")
@click.option("--run", "run_name", default=None, help="Run name in the file (default: the first that ran).")
@click.option("--max-steps", type=int, default=None,
              help="Draw at most N steps, the first of the window (default 10,000, ~12 MB; 0: all, which for a "
                   "million-step run is ~1.3 GB of JSON).")
@click.option("--start", "start", default=None, help="Draw steps starting at or after this simulated time (e.g. 120, 2s).")
@click.option("--end", "end", default=None, help="Draw steps starting before this simulated time (e.g. 130, 500ms).")
def timeline(file, out, run_name, max_steps, start, end) -> None:
    """A Perfetto / chrome://tracing view of one run: its steps, and per unit (GPU compute, PIM units,
    PIM link, GPU link, DMA) the parts of each step laid end to end in chain order."""
    from tokenstack_sim.results.h5 import read_runs
    from tokenstack_sim.results.timeline import DEFAULT_MAX_STEPS, select_steps, write_chrome_trace

    cap = DEFAULT_MAX_STEPS if max_steps is None else max_steps
    start_s = None if start is None else parse_time_s(start, "--start")
    end_s = None if end is None else parse_time_s(end, "--end")
    runs = read_runs(file)
    if run_name is None:
        chosen = next((r for r in runs if r.status == "ok"), runs[0])
    else:
        by_name = {r.name: r for r in runs}
        if run_name not in by_name:
            raise InputError(f"no run {run_name!r}; the file has: {', '.join(by_name)}", source=file, where="--run")
        chosen = by_name[run_name]
    if chosen.status != "ok":
        raise InputError(f"run {chosen.name!r} is {chosen.status}: {chosen.reason}", source=file)
    lo, hi, in_window = select_steps(chosen, cap, start_s, end_s)
    write_chrome_trace(chosen, out, cap, start_s=start_s, end_s=end_s)
    shown = f"steps {lo}..{hi - 1} of {len(chosen.steps)}" if hi > lo else "no steps"
    cut = (f"; the cap --max-steps {cap} left out {in_window - (hi - lo)} more of the window "
           "(--start/--end pick a window, --max-steps 0 draws all)") if hi - lo < in_window else ""
    click.echo(f"wrote {out} ({chosen.name}): {shown}{cut}; open it in ui.perfetto.dev", err=True)
