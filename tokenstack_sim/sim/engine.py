"""A serving run: a workload served by the vLLM-like scheduler on a modeled system, as a `RunResult`.

`prepare(system, model, ...)` builds what one (system, model) pair needs once — whether the weights
fit, the KV blocks per tier, the step model with its characterized costs — and `run_prepared` serves one
request table on it. `run` does both.

KV capacity per tier (serving.md §2.1, hw/system.py): memory_utilization × capacity − the weight shard −
the activation peak, per GPU, divided into blocks of `block_size` tokens × all layers of one shard. The
activation peak is that of vLLM's profiling pass, one step of `max_num_batched_tokens` prompt tokens:
the largest input+output activation of any op of that step (ops run one at a time) plus the LM head's
logits for `max_num_seqs` rows in FP32 (sampling). A `kv_blocks` override replaces the total (to match a
measured deployment's `num_gpu_blocks`), split over the tiers in proportion to their capacity.

Energy = counted actions × the energy tables of each component + static power × the run's span
(first arrival to last step end), each static term its own "static" action of its component: the stacks'
background and refresh power (per stack), the GPUs' idle power (`static_power_w` per GPU, excluding the
stacks), and the links' idle power (`static_power_w` per GPU port: the GPU link when there are ≥ 2 GPUs,
AttAcc's PIM-device link per GPU). The host link carries only agent runtimes' KV offloads and uploads
(runtime/kv_transfer.py): its bytes are charged per bit, its idle power is left out (the host side is
outside the compared systems).
Static power is charged over the whole span, busy or idle; the dynamic rise of a busy chip over idle is
in the per-action tables. `energy_pj` reads only counts and the span, so a sweep over energy technology
reuses a run's timing.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.link import link_energy_pj
from tokenstack_sim.hw.opcost import OpCosts
from tokenstack_sim.hw.stack.energy import energy_table_pj, refresh_power_mw, static_power_mw
from tokenstack_sim.hw.system import kv_capacity_bytes, weights_fit
from tokenstack_sim.model.shapes import weight_bytes_total
from tokenstack_sim.config.schema import build
from tokenstack_sim.kv.policy import KvPolicy
from tokenstack_sim.kv.tiered import TieredKv
from tokenstack_sim.results.result import KV_FIELDS, REQUEST_DTYPE, STEP_DTYPE, STEP_PARTS, RunResult
from tokenstack_sim.runtime.metrics import slo_met, summarize
from tokenstack_sim.runtime.params import SchedulerParams
from tokenstack_sim.runtime.serve_loop import serve
from tokenstack_sim.sim.step_cost import COMPONENTS, OFFSET, EngineOptions, KvTier, StepModel, StepRecords
from tokenstack_sim.workload.source import load_workload

LOGIT_BYTES = 4  # FP32 logits for sampling (vLLM upcasts before sampling)


def serving_grid(op) -> dict:
    """The characterization grid the engine asks for: the default sizes at background load 0 only.

    The ops of one step run one after another (no overlap), so the engine looks costs up at load share
    0; characterizing the loaded levels too would cost ~8-10x more for nothing (1.4 vs 11.1 s CPU for
    hbm4-12h-plain's stream). `tokenstack characterize` keeps the full grid for studies under load."""
    from tokenstack_sim.hw.opcost.characterize import default_grid

    return dict(default_grid(op), shares=[0.0])


@dataclass
class RunSpec:
    """The inputs of one run besides the system and the model."""
    workload: str
    qps: float | None = None
    duration_s: float | None = None
    max_requests: int | None = None
    seed: int = 0
    warmup_frac: float = 0.1
    drain_frac: float = 0.1
    slo_ttft_s: float = 2.0  # [E] issue 7's example SLO (2 s TTFT, 100 ms TPOT)
    slo_tpot_s: float = 0.1
    scheduler: dict = field(default_factory=dict)  # SchedulerParams fields other than num_kv_blocks
    kv_blocks: int | None = None
    kv: dict = field(default_factory=dict)  # KvPolicy fields (kv/policy.py); {} = TokenStack's design
    runtime: str = "vllm"  # agent runtime (runtime/agent_runtime.py): vllm | vllm-offload | tokencake
    runtime_options: dict = field(default_factory=dict)  # AgentRuntimeParams fields
    perturb: list = field(default_factory=list)  # injector tables (robust/injectors.py); [] = the nominal run

    def __post_init__(self) -> None:
        """Refuse bad values before any simulation runs (a long run is never wasted on them)."""
        from tokenstack_sim.runtime.metrics import included

        included(np.zeros(0, REQUEST_DTYPE), self.warmup_frac, self.drain_frac)  # checks both shares
        for name in ("qps", "duration_s"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise InputError(f"expected a number > 0, got {v}", where=name)
        if self.max_requests is not None and self.max_requests < 1:
            raise InputError(f"expected at least 1, got {self.max_requests}", where="max_requests")
        if self.kv_blocks is not None and self.kv_blocks < 1:
            raise InputError(f"expected at least 1 KV block, got {self.kv_blocks}", where="kv_blocks")
        build(KvPolicy, dict(self.kv), where="kv")  # names the bad key
        from tokenstack_sim.runtime.agent_runtime import RUNTIMES, AgentRuntimeParams

        if self.runtime not in RUNTIMES:
            raise InputError(f"unknown runtime {self.runtime!r}; known: {', '.join(sorted(RUNTIMES))}", where="runtime")
        build(AgentRuntimeParams, dict(self.runtime_options), where="runtime_options")
        if self.perturb:
            from tokenstack_sim.robust.injectors import parse_injectors

            parse_injectors(self.perturb)  # names the bad key
        for name in ("slo_ttft_s", "slo_tpot_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise InputError(f"expected a time > 0 s, got {v}", where=name)


@dataclass
class Prepared:
    """One (system, model) pair, ready to serve."""
    system: object
    model: object
    options: EngineOptions
    scheduler: dict
    fits: bool
    reason: str = ""
    tiers: list = field(default_factory=list)
    step_model: StepModel | None = None
    cost_origin: dict = field(default_factory=dict)
    kv_policy: KvPolicy = field(default_factory=KvPolicy)
    kv_blocks: int | None = None  # the override of the pool's block count, if any


def activation_peak_bytes(im, max_num_batched_tokens: int, max_num_seqs: int) -> float:
    """Per GPU: vLLM's profiling pass (module docstring)."""
    t = max_num_batched_tokens
    ops = im.ops(np.array([t]), np.array([0]), emits=1)
    layer_peak = float(ops.layer["act_bytes"].max())
    logits = min(max_num_seqs, t) * im.vocab * LOGIT_BYTES
    return layer_peak + logits


def kv_tiers(system, model_cfg, im, params: SchedulerParams, kv_blocks: int | None) -> tuple[list[KvTier], str]:
    """The KV tiers of a system with their blocks per GPU shard, or ([], why) when the weights do not fit."""
    if kv_blocks is not None and kv_blocks < 1:
        raise InputError(f"expected at least 1 KV block, got {kv_blocks}", where="kv_blocks")
    w = float(weight_bytes_total(model_cfg))
    act = activation_peak_bytes(im, params.max_num_batched_tokens, params.max_num_seqs)
    if not weights_fit(system, w, act):
        usable = system.config.memory_utilization * (system.capacity_per_gpu_bytes("gpu_capacity")
                                                     + system.capacity_per_gpu_bytes("gpu_pim"))
        return [], (f"weights {w / system.tp / 1e9:.1f} GB per GPU (tp {system.tp}) + activations {act / 1e9:.2f} GB "
                    f"exceed the {usable / 1e9:.1f} GB the GPU side of {system.name} may use")
    cap = kv_capacity_bytes(system, w, act, per_gpu=True)
    block_bytes = params.block_size * model_cfg.num_layers * im.kv_tok_layer_bytes
    if system.pim_stack is not None:  # AttAcc: KV lives on the PIM device only
        names = [("pim_device", True)]
    elif system.gpu_stack.has_pim:  # PIM SID first (TokenStack), or the all-PIM dies (uniform PIM)
        names = [("gpu_pim", True), ("gpu_capacity", False)]
    else:
        names = [("gpu_capacity", False)]
    tiers = [KvTier(n, int(cap[n] // block_bytes), pim) for n, pim in names if cap[n] >= block_bytes]
    if kv_blocks is not None:
        total = sum(t.blocks for t in tiers) or 1
        scaled = [int(t.blocks * kv_blocks // total) for t in tiers]
        scaled[0] += kv_blocks - sum(scaled)
        tiers = [KvTier(t.name, b, t.pim) for t, b in zip(tiers, scaled)]
    tiers = [t for t in tiers if t.blocks > 0]
    if not tiers:
        return [], f"no room for a single KV block ({block_bytes / 2**20:.1f} MiB) after weights and activations"
    return tiers, ""


def ensure_tables(pairs, *, workers: int | None = None, progress: Callable[[str], None] | None = None) -> None:
    """Characterize, into the cache, every (stack, op) of `pairs` that is missing, across stacks at once
    on `workers` spawned processes (default: one per CPU, at most one per op); in this process for one."""
    from tokenstack_sim.hw.opcost import cache
    from tokenstack_sim.hw.opcost.characterize import _cpus

    missing, seen = [], set()
    for stack, op in pairs:
        grid, key, path = OpCosts(stack).entry(op, serving_grid(op))
        if key not in seen and cache.read_entry(path) is None:
            missing.append((stack, op, grid, key, path))
            seen.add(key)
    if not missing:
        return
    workers = min(len(missing), workers or _cpus())
    if workers <= 1:
        for stack, op, grid, _, _ in missing:
            OpCosts(stack, on_missing="characterize", progress=progress).table(op, grid)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    from tokenstack_sim.hw.dram.run import warmup
    from tokenstack_sim.hw.opcost.parallel import _work, dumps_stack

    warmup()  # compile (or load) the kernels once here, so the workers find numba's on-disk cache
    if progress:
        progress(f"{len(missing)} ops to characterize on {workers} processes (cached afterwards)")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(_work, dumps_stack(stack), op, grid, key, str(path))
                for stack, op, grid, key, path in missing]
        for fut in cf.as_completed(futs):
            op_id, _ = fut.result()
            if progress:
                progress(f"{op_id} done")


def required_pairs(system, model, *, options: EngineOptions = EngineOptions(), scheduler: dict | None = None,
                   kv_blocks: int | None = None, kv: dict | KvPolicy | None = None) -> list:
    """The (stack, op) pairs a (system, model) pair's step model looks up ([] when it does not fit)."""
    prep = prepare(system, model, options=options, scheduler=scheduler, kv_blocks=kv_blocks, kv=kv, bind=False)
    return prep.step_model.required_ops() if prep.step_model is not None else []


def prepare(system, model, *, options: EngineOptions = EngineOptions(), scheduler: dict | None = None,
            kv_blocks: int | None = None, on_missing: str = "characterize",
            progress: Callable[[str], None] | None = None, bind: bool = True,
            kv: dict | KvPolicy | None = None) -> Prepared:
    """Resolve names, check the fit, build the step model and bind its characterized costs. `kv`: the KV
    management policy (kv/policy.py; a dict of its fields, or one), TokenStack's design by default; a
    system without both a PIM and a capacity tier on its GPU stacks (the rivals) runs its own policy
    (`rival_policy`)."""
    kv_policy = kv if isinstance(kv, KvPolicy) else build(KvPolicy, dict(kv or {}), where="kv")
    if isinstance(system, str):
        system = load_config(system, kind="system")
    if isinstance(model, str):
        model = load_config(model, kind="model")
    model_cfg = model.config
    scheduler = dict(scheduler or {})
    if "num_kv_blocks" in scheduler:
        raise InputError("set the KV pool with kv_blocks (--kv-blocks), not num_kv_blocks", where="scheduler")
    from tokenstack_sim.model.ops import IterationModel

    im = IterationModel(model_cfg, system.tp)
    probe = SchedulerParams(num_kv_blocks=1, **scheduler)
    tiers, reason = kv_tiers(system, model_cfg, im, probe, kv_blocks)
    if tiers and not {"gpu_pim", "gpu_capacity"} <= {t.name for t in tiers}:
        kv_policy = rival_policy(kv_policy, placement_given=isinstance(kv, dict) and "placement" in kv)
    prep = Prepared(system, model, options, scheduler, fits=bool(tiers), reason=reason, tiers=tiers,
                    kv_policy=kv_policy, kv_blocks=kv_blocks)
    if not tiers:
        return prep
    sm = StepModel(system, model_cfg, tiers, block_size=probe.block_size, options=options, kv_policy=kv_policy)
    prep.step_model = sm
    if not bind:
        return prep
    tables = {}
    costs: dict[int, OpCosts] = {}
    for stack, op in sm.required_ops():
        oc = costs.setdefault(id(stack), OpCosts(stack, on_missing=on_missing, progress=progress))
        tables[sm.key(stack, op)] = oc.table(op, serving_grid(op))
        prep.cost_origin[f"{stack.config.name}:{op.op_id}"] = oc.origin.get(op.op_id, "cache")
    sm.bind(tables)
    return prep


def rival_policy(policy: KvPolicy, *, placement_given: bool = False) -> KvPolicy:
    """The rivals' KV management (issue 8, "rivals' policies on their hardware"): uniform PIM keeps hot
    and cold KV in the same PIM layers, AttAcc keeps KV in its PIM stacks only, GPU-only in its HBM; none
    of them migrates, promotes or replicates, and their KV is split evenly over their PIM units
    (`interleaved`, AttAcc's token partitioning with a final reduction) unless a placement is given."""
    return dataclasses.replace(policy, eviction="none", promotion=False, replication_budget=0.0,
                               placement=policy.placement if placement_given else "interleaved")


def tiered_kv(prep: Prepared, n_requests: int) -> TieredKv:
    """The KV placement of one run (kv/tiered.py) from the pair's tiers, per GPU shard: the PIM tier's
    blocks split over the step model's PIM units, the capacity tier's blocks in its storage format
    (quantized blocks take `capacity_ratio` of an FP16 block, so more of them fit; with a `kv_blocks`
    override the pool keeps exactly that many blocks and quantization saves bytes moved, not blocks)."""
    sm = prep.step_model
    pim = sum(t.blocks for t in prep.tiers if t.pim)
    cap = sum(t.blocks for t in prep.tiers if not t.pim)
    units = (1 if prep.kv_policy.placement == "interleaved" else sm.pim_units) if pim else 0
    return TieredKv(pim_units=units, pim_slots=pim if units else 0,
                    capacity_slots=cap if prep.kv_blocks is not None else int(cap / sm.capacity_ratio),
                    policy=prep.kv_policy,
                    n_requests=n_requests, capacity_ratio=sm.capacity_ratio)


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance() -> dict:
    from tokenstack_sim import __version__

    return {"package_version": __version__, "git_revision": _git_revision(), "host": platform.node(),
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run_name(system: str, model: str, workload: str, qps, seed: int) -> str:
    q = "native" if qps is None else f"q{qps:g}"
    return f"{system}/{model}/{Path(workload).stem}/{q}/s{seed}"


def _configs(prep: Prepared, table_meta: dict) -> dict:
    return {"system": json.dumps(prep.system.as_dict(), sort_keys=True, default=str),
            "model": json.dumps(prep.model.as_dict(), sort_keys=True, default=str),
            "workload": json.dumps(table_meta, sort_keys=True, default=str)}


def run_prepared(prep: Prepared, spec: RunSpec, *, progress: Callable[[int, int], None] | None = None,
                 table=None, fast_forward: bool = True) -> RunResult:
    """Serve `spec`'s workload on a prepared pair; a pair that does not fit gives a 'does_not_fit' result.
    `fast_forward`: the serve loop's fast path for runs of pure-decode steps (same result, faster)."""
    name = run_name(prep.system.name, prep.model.config.name, spec.workload, spec.qps, spec.seed)
    if spec.runtime != "vllm":
        name += f"/{spec.runtime}"
    params = {"system": prep.system.name, "model": prep.model.config.name, "workload": spec.workload,
              "qps": spec.qps, "duration_s": spec.duration_s, "max_requests": spec.max_requests,
              "seed": spec.seed, "warmup_frac": spec.warmup_frac, "drain_frac": spec.drain_frac,
              "slo_ttft_s": spec.slo_ttft_s, "slo_tpot_s": spec.slo_tpot_s, "scheduler": prep.scheduler,
              "kv_blocks": spec.kv_blocks, "engine": dataclasses.asdict(prep.options),
              "kv": dataclasses.asdict(prep.kv_policy)}
    if spec.runtime != "vllm" or spec.runtime_options:
        params |= {"runtime": spec.runtime, "runtime_options": dict(spec.runtime_options)}
    injectors = None
    if spec.perturb:  # robust/: uncertainty injectors (none: the nominal path, untouched)
        from tokenstack_sim.robust.injectors import parse_injectors

        injectors = parse_injectors(spec.perturb)
        params["perturb"] = [i.as_dict() for i in injectors]
        name += "/perturbed"
    if not prep.fits:
        return RunResult(name, "does_not_fit", params, provenance=provenance(), reason=prep.reason,
                         summary={"requests": 0})
    if table is None:
        table = load_workload(spec.workload, seed=spec.seed, qps=spec.qps, duration_s=spec.duration_s,
                              max_requests=spec.max_requests)
    pert = None
    if injectors is not None:
        from tokenstack_sim.robust.perturb import Perturbation

        pert = Perturbation(injectors, prep, spec.seed)
        table = pert.perturb_table(table)
        pert.prime()
    sm = prep.step_model
    sm.records = StepRecords()
    kvm = tiered_kv(prep, len(table))
    sm.kv = kvm
    if pert is not None:
        pert.bind(kvm)
    total_blocks = kvm.num_blocks
    sp = SchedulerParams(num_kv_blocks=total_blocks, **prep.scheduler)
    t0 = time.perf_counter()
    agents = getattr(table, "dag", None) is not None  # agent apps: runtime/agent_loop.py
    if spec.runtime != "vllm" and not agents:
        raise InputError(f"runtime {spec.runtime!r} serves agent workloads (codewriter-like, deep-research-like, "
                         f"random-dag or a DAG CSV), not {spec.workload!r}", where="runtime")
    try:
        if agents:
            from tokenstack_sim.runtime.agent_loop import serve_prepared

            res = serve_prepared(prep, table, sp, spec.runtime, spec.runtime_options, kv=kvm, progress=progress,
                                 fast_forward=fast_forward, **({"perturb": pert} if pert is not None else {}))
        else:
            res = serve(table, sp, sm, progress=progress, fast_forward=fast_forward, kv=kvm,
                        **({"perturb": pert} if pert is not None else {}))
    except InputError as exc:
        if exc.where != "num_kv_blocks":
            raise
        raise InputError(f"{exc.message} ({prep.system.name} holds {total_blocks} blocks for "
                         f"{prep.model.config.name}; --kv-blocks overrides)", where="kv_blocks") from None
    finally:
        lost = pert.finish() if pert is not None else {}
    wall_s = time.perf_counter() - t0

    req = np.zeros(len(res.requests), REQUEST_DTYPE)
    for f in res.requests.dtype.names:
        req[f] = res.requests[f]
    req["slo_met"] = slo_met(req, spec.slo_ttft_s, spec.slo_tpot_s)  # NaN TTFT (no token) fails

    steps = np.zeros(len(res.steps), STEP_DTYPE)
    for f in res.steps.dtype.names:
        steps[f] = res.steps[f]
    recs = sm.records
    for i, p in enumerate(STEP_PARTS):
        steps[p] = recs.parts[:, i]
    steps["kv_tokens_attended"] = recs.attended
    steps["kv_tokens_attended_pim"] = recs.attended_pim
    steps["decode_seqs"] = recs.decode_seqs
    for i, k in enumerate(KV_FIELDS):
        steps[k] = recs.kv[:, i]
    actions = {}
    for comp, names in COMPONENTS.items():
        arr = np.zeros(len(recs), np.dtype([(a, np.float64) for a in names]))
        for i, a in enumerate(names):
            arr[a] = recs.actions[:, OFFSET[comp] + i]
        actions[comp] = arr
    span_s = float(steps["end_s"][-1] - req["arrival_s"].min()) if len(steps) else 0.0
    energy = energy_pj(prep.system, actions, span_s)
    summary = _summary(req, steps, energy, res.counters | {f"kv_{k}": v for k, v in kvm.counters.items()},
                       spec, total_blocks)
    a = req["arrival_s"]
    summary["offered_qps"] = len(a) / float(a.max() - a.min()) if len(a) > 1 and a.max() > a.min() else float("nan")
    summary.update(res.counters.get("agent", {}))  # app makespans, effective KV use, offloads (agent runs)
    summary.update(lost)  # perturbed runs: work lost (robust/perturb.py)
    summary["wall_s"] = wall_s  # provenance-like: excluded from determinism checks by its name
    return RunResult(name, "ok", params, configs=_configs(prep, table.meta), provenance=provenance() | {"wall_s": wall_s},
                     requests=req, steps=steps, actions=actions, energy_pj=energy,
                     summary={k: v for k, v in summary.items() if k != "wall_s"})


def run(system, model, spec: RunSpec, *, options: EngineOptions = EngineOptions(), on_missing: str = "characterize",
        progress=None) -> RunResult:
    prep = prepare(system, model, options=options, scheduler=spec.scheduler, kv_blocks=spec.kv_blocks,
                   kv=spec.kv, on_missing=on_missing)
    return run_prepared(prep, spec, progress=progress)


PJ_PER_J = 1e12


def energy_pj(system, actions: dict, span_s: float) -> dict:
    """Component -> action -> pJ over the run: counts x tables, plus static power x span as each
    component's "static" action (stacks: background + refresh per stack; GPU: `static_power_w` per GPU;
    GPU link: `static_power_w` per GPU when gpus > 1; PIM link: per GPU). Needs only counts and the span:
    another energy table on the same counts is another call, not another run."""
    out: dict[str, dict[str, float]] = {}
    gpu = system.gpu
    ga = actions["gpu"]
    out["gpu"] = {a: float(ga[a].sum()) * gpu.pj_per_flop(a.removeprefix("flops_"))
                  for a in ga.dtype.names if a.startswith("flops_") and ga[a].sum() > 0}
    out["gpu"]["l2_bytes"] = float(ga["l2_bytes"].sum()) * gpu.config.energy.l2_pj_per_byte
    out["gpu"]["static"] = gpu.static_power_w * system.gpus * span_s * PJ_PER_J
    span_ns = span_s * 1e9
    for comp, stack, count in (("gpu_stacks", system.gpu_stack, system.gpu_stacks_per_gpu),
                               ("pim", system.pim_stack or system.gpu_stack,
                                system.pim_stacks_per_gpu if system.pim_stack is not None else 0)):
        table = energy_table_pj(stack)
        arr = actions[comp]
        e = {a: float(arr[a].sum()) * table[a] for a in arr.dtype.names if arr[a].sum() > 0}
        if count:
            e["static"] = (static_power_mw(stack) + refresh_power_mw(stack)) * count * system.gpus * span_ns
        out[comp] = e
    out["gpu_link"] = {"link_bytes": float(link_energy_pj(system.gpu_link, actions["gpu_link"]["link_bytes"].sum()))}
    if system.gpus > 1:
        out["gpu_link"]["static"] = system.gpu_link.static_power_w * system.gpus * span_s * PJ_PER_J
    if system.pim_link is not None:
        out["pim_link"] = {"link_bytes": float(link_energy_pj(system.pim_link,
                                                              actions["pim_link"]["link_bytes"].sum())),
                           "static": system.pim_link.static_power_w * system.gpus * span_s * PJ_PER_J}
    host = actions.get("host_link")  # absent in results written before agent offloads were charged
    if host is not None and float(host["link_bytes"].sum()) > 0:
        out["host_link"] = {"link_bytes": float(link_energy_pj(system.host_link, host["link_bytes"].sum()))}
    return out


def _summary(req, steps, energy, counters, spec: RunSpec, total_blocks: int) -> dict:
    m = summarize(req, warmup_frac=spec.warmup_frac, drain_frac=spec.drain_frac, steps=steps,
                  slo_ttft_s=spec.slo_ttft_s, slo_tpot_s=spec.slo_tpot_s)
    out = {"requests": m.requests, "duration_s": m.duration_s,
           "output_tokens_per_s": m.output_tokens_per_s, "total_tokens_per_s": m.total_tokens_per_s}
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        st = getattr(m, name)
        for k in ("mean", "p50", "p90", "p99"):
            out[f"{name}_{k}"] = getattr(st, k)
    out["slo_attainment"] = m.slo_attainment
    j = {c: sum(v.values()) * 1e-12 for c, v in energy.items()}
    out["energy_j_gpu"] = j.get("gpu", 0.0)
    out["energy_j_stacks"] = j.get("gpu_stacks", 0.0)
    out["energy_j_pim"] = j.get("pim", 0.0)
    out["energy_j_links"] = j.get("gpu_link", 0.0) + j.get("pim_link", 0.0) + j.get("host_link", 0.0)
    out["energy_j_total"] = sum(j.values())
    gen = int(req["output_tokens"].sum())
    out["output_tokens"] = gen
    out["energy_per_output_token_j"] = out["energy_j_total"] / gen if gen else float("nan")
    att = float(steps["kv_tokens_attended"].sum())
    out["pim_attention_share"] = float(steps["kv_tokens_attended_pim"].sum()) / att if att else 0.0
    out["preemptions"] = int(counters.get("preemptions", 0))
    out["kv_blocks_total"] = int(total_blocks)
    out["kv_blocks_peak"] = int(counters.get("max_kv_blocks_in_use", 0))
    out["steps"] = int(counters.get("steps", 0))
    q = counters.get("pool_query_tokens", 0)
    out["prefix_hit_rate"] = counters.get("pool_hit_tokens", 0) / q if q else 0.0
    out["makespan_s"] = float(steps["end_s"][-1] - req["arrival_s"].min()) if len(steps) else 0.0
    # KV management (kv/tiered.py): moves between tiers, cross-unit merges, replicas, tier occupancy
    span = out["makespan_s"]
    moved = float(steps["kv_demoted_blocks"].sum() + steps["kv_promoted_blocks"].sum())
    out["kv_migrations_per_s"] = moved / span if span > 0 else 0.0
    busy = float((steps["end_s"] - steps["start_s"]).sum())
    out["kv_migration_time_share"] = float(steps["kv_migration_s"].sum()) / busy if busy > 0 else 0.0
    dec = float(steps["decode_seqs"].sum())
    out["kv_gathers_per_decode"] = float(steps["kv_gathers"].sum()) / dec if dec else 0.0
    shared = counters.get("kv_shared_attaches", 0)
    out["kv_replica_hit_rate"] = counters.get("kv_replica_hits", 0) / shared if shared else 0.0
    for k in ("demotions", "promotions", "dropped_cached", "replicas_made"):
        out[f"kv_{k}"] = int(counters.get(f"kv_{k}", 0))
    out["kv_pim_blocks_peak"] = int(steps["kv_pim_blocks"].max()) if len(steps) else 0
    out["kv_capacity_blocks_peak"] = int(steps["kv_capacity_blocks"].max()) if len(steps) else 0
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in out.items()}


def _run_job(job) -> RunResult:
    system, model, spec, options = job
    if isinstance(system, tuple):  # (name, --set overrides): configs are rebuilt in the worker
        system = load_config(system[0], list(system[1]), kind="system")
    return run(system, model, spec, options=options, on_missing="error")


def run_many(jobs, *, workers: int | None = None, progress: Callable[[str], None] | None = None) -> list[RunResult]:
    """Run (system, model name, RunSpec, EngineOptions) jobs, in spawned processes when `workers` > 1; a
    system is a name or a (name, [--set overrides]) tuple
    (characterize first with `ensure_tables`: a worker never characterizes). Results in job order."""
    from tokenstack_sim.hw.opcost.characterize import _cpus

    jobs = list(jobs)
    workers = min(len(jobs), workers or _cpus())
    if workers <= 1:
        out = []
        for j in jobs:
            out.append(_run_job(j))
            if progress:
                progress(f"{out[-1].name}: done")
        return out
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(_run_job, j): i for i, j in enumerate(jobs)}
        out = [None] * len(jobs)
        for fut in cf.as_completed(futs):
            out[futs[fut]] = fut.result()
            if progress:
                progress(f"{out[futs[fut]].name}: done")
    return out
