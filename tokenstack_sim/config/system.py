"""A whole serving system: the `kind = "system"` config (GPUs, the stacks on them, PIM devices, links).

A system names presets and counts; it holds no hardware number of its own:
- `gpu` (a `kind = "gpu"` preset) × `gpus`, all in one tensor-parallel group of degree `tp`;
- `gpu_stack` (a `kind = "stack"` preset) × `gpu_stacks_per_gpu` on each GPU's own HBM sites. The GPU's
  memory bandwidth ALWAYS comes from these stacks (stacks × stack peak), never from a GPU field;
- an optional `[pim_device]`: AttAcc-style dedicated PIM stacks (`pim_stacks` per GPU, a stack preset
  and the link that reaches them). With `replaces_gpu_stacks = true` they take GPU stack sites (the
  equal-stack-count view: GPU side = sites − pim_stacks); with false they are extra devices beside a
  fully populated GPU (AttAcc's own configuration, hardware.md §7);
- `gpu_link` (GPU↔GPU, for the tensor-parallel all-reduce) and `host_link` (CPU↔GPU, for offload);
- `memory_utilization`: the share of each memory the KV cache manager may use (vLLM's
  `gpu_memory_utilization`, 0.9 by default, serving.md §2.1).

`stack_set` / `gpu_set` / `gpu_link_set` / `host_link_set` / `pim_device.stack_set` / `pim_device.link_set`
are `--set` overrides applied when the named preset is loaded, so a preset can reuse a stack with another
DRAM device or height without a new stack file. A `--set gpu_stack.<path>=...` (or `gpu.`, `gpu_link.`,
`host_link.`, `pim_device.stack.`, `pim_device.link.`) on a system is appended to these lists by the
loader (config/loader.py OVERRIDE_ROUTES).

Capacity tiers per GPU: `gpu_capacity` (the plain dies of the GPU's stacks), `gpu_pim` (the PIM dies of
the GPU's stacks: TokenStack's PIM SID, every die of uniform PIM) and `pim_device` (AttAcc's PIM stacks,
which hold KV only).

Left out: data-parallel replicas (tp must equal gpus), pipeline parallelism, topology of the GPU↔GPU
fabric (hw/link.py models a ring), the GPU die's own area, and CPU memory as a capacity tier.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tokenstack_sim.config.schema import build, spec, to_dict
from tokenstack_sim.errors import InputError

TIERS = ("gpu_capacity", "gpu_pim", "pim_device")


@dataclass(frozen=True)
class PimDevice:
    """AttAcc's dedicated PIM stacks attached to each GPU (hardware.md §7)."""
    stack: str = spec(doc="stack preset of the PIM stacks")
    pim_stacks: int = spec(min=1, max=64, doc="PIM stacks per GPU (AttAcc: 5 per device; a sweep parameter)")
    link: str = spec(doc="link preset between the GPU and its PIM stacks (AttAcc: NVLink3 600 GB/s)")
    stack_set: tuple[str, ...] = spec((), doc="overrides applied to the PIM stack preset, as --set KEY=VALUE")
    link_set: tuple[str, ...] = spec((), doc="overrides applied to the PIM link preset, as --set KEY=VALUE")
    replaces_gpu_stacks: bool = spec(
        True, doc="the PIM stacks take GPU stack sites (equal stack count); false: extra devices (AttAcc's own)")


@dataclass(frozen=True)
class SystemConfig:
    schema_version: int = spec(min=1, max=1, doc="config schema version (1)")
    kind: str = spec(doc="'system'")
    name: str = spec(doc="preset name")
    gpu: str = spec(doc="GPU preset (compute side; its bandwidth comes from the stacks)")
    gpus: int = spec(min=1, max=1024, doc="GPUs in the system")
    tp: int = spec(min=1, max=1024, doc="tensor-parallel degree (must equal gpus: no data-parallel replicas)")
    gpu_stack: str = spec(doc="stack preset on each of the GPU's own HBM sites")
    gpu_link: str = spec(doc="GPU<->GPU link preset (tensor-parallel all-reduce)")
    host_link: str = spec(doc="host CPU<->GPU link preset (pcie5-x16, nvlink-c2c)")
    gpu_stacks_per_gpu: int = spec(
        -1, min=-1, max=64, doc="stacks on each GPU; -1 = the GPU's hbm_stack_sites (minus PIM stacks that replace them)")
    memory_utilization: float = spec(0.9, min=0.01, max=1.0,
                                     doc="share of each memory the KV manager may use (vLLM default 0.9)")
    stack_set: tuple[str, ...] = spec((), doc="overrides applied to the gpu_stack preset, as --set KEY=VALUE")
    gpu_set: tuple[str, ...] = spec((), doc="overrides applied to the GPU preset, as --set KEY=VALUE")
    gpu_link_set: tuple[str, ...] = spec((), doc="overrides applied to the gpu_link preset, as --set KEY=VALUE")
    host_link_set: tuple[str, ...] = spec((), doc="overrides applied to the host_link preset, as --set KEY=VALUE")
    pim_device: PimDevice | None = spec(None, doc="AttAcc-style dedicated PIM stacks (optional table)")
    description: str = spec("", doc="free text")
    source: str = spec("", doc="where the numbers come from")
    base: str = spec("", doc="preset this file extends")

    def __post_init__(self) -> None:
        if self.kind != "system":
            raise InputError(f"expected 'system', got {self.kind!r}", where="kind")
        if self.gpus % self.tp:
            raise InputError(f"tp = {self.tp} does not divide gpus = {self.gpus}", where="tp")
        if self.tp != self.gpus:
            raise InputError(f"tp = {self.tp} < gpus = {self.gpus} would mean {self.gpus // self.tp} data-parallel "
                             "replicas, which this model leaves out; set tp = gpus (or model one replica)",
                             where="tp")
        if self.gpu_stacks_per_gpu == 0:
            raise InputError("a GPU needs at least one stack of its own (for the weights)", where="gpu_stacks_per_gpu")


@dataclass(frozen=True)
class ResolvedSystem:
    """A system with every preset it names loaded and its resource totals derived."""
    config: SystemConfig
    source: str
    gpu: object  # ResolvedGpu
    gpu_stack: object  # ResolvedStack
    gpu_stacks_per_gpu: int
    gpu_link: object  # ResolvedLink
    host_link: object  # ResolvedLink
    pim_stack: object | None = None  # ResolvedStack of the PIM device
    pim_stacks_per_gpu: int = 0
    pim_link: object | None = None  # ResolvedLink to the PIM device

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def gpus(self) -> int:
        return self.config.gpus

    @property
    def tp(self) -> int:
        return self.config.tp

    # --- counts -------------------------------------------------------------------------------------
    @property
    def stacks_per_gpu(self) -> int:
        return self.gpu_stacks_per_gpu + self.pim_stacks_per_gpu

    @property
    def total_stacks(self) -> int:
        return self.gpus * self.stacks_per_gpu

    @property
    def dies_per_gpu(self) -> int:
        n = self.gpu_stacks_per_gpu * len(self.gpu_stack.dies)
        if self.pim_stack is not None:
            n += self.pim_stacks_per_gpu * len(self.pim_stack.dies)
        return n

    @property
    def total_dies(self) -> int:
        return self.gpus * self.dies_per_gpu

    # --- bandwidth ----------------------------------------------------------------------------------
    @property
    def gpu_bw_GBps(self) -> float:
        """Peak memory bandwidth of one GPU: its own stacks × the stack's peak (never a GPU number)."""
        return self.gpu_stacks_per_gpu * self.gpu_stack.dram.peak_bw_GBps

    def _pim(self, stack, count: int) -> tuple[float, float]:
        if stack is None or not stack.has_pim or count == 0:
            return 0.0, 0.0
        from tokenstack_sim.hw.stack.pim import PimUnits  # config -> hw only for derived figures, as stack.py

        u = PimUnits.of(stack)
        return count * u.internal_bw_GBps, count * u.peak_tflops

    @property
    def pim_internal_bw_GBps(self) -> float:
        """Per GPU: the internal bandwidth of every PIM unit it reaches (its own stacks + its PIM device)."""
        return self._pim(self.gpu_stack, self.gpu_stacks_per_gpu)[0] + self._pim(self.pim_stack,
                                                                                  self.pim_stacks_per_gpu)[0]

    @property
    def pim_tflops(self) -> float:
        """Per GPU: FP16 peak of every PIM unit it reaches."""
        return self._pim(self.gpu_stack, self.gpu_stacks_per_gpu)[1] + self._pim(self.pim_stack,
                                                                                 self.pim_stacks_per_gpu)[1]

    # --- capacity -----------------------------------------------------------------------------------
    def capacity_per_gpu_bytes(self, tier: str) -> int:
        """Raw capacity of one GPU's memory in `tier` (before memory_utilization)."""
        if tier == "gpu_capacity":
            return self.gpu_stacks_per_gpu * self.gpu_stack.tier_capacity_bytes("capacity")
        if tier == "gpu_pim":
            return self.gpu_stacks_per_gpu * self.gpu_stack.tier_capacity_bytes("pim")
        if tier == "pim_device":
            return 0 if self.pim_stack is None else self.pim_stacks_per_gpu * self.pim_stack.capacity_bytes
        raise InputError(f"unknown tier {tier!r}; known: {', '.join(TIERS)}", where="tier")

    @property
    def capacity_bytes_per_gpu(self) -> int:
        return sum(self.capacity_per_gpu_bytes(t) for t in TIERS)

    @property
    def capacity_bytes(self) -> int:
        return self.gpus * self.capacity_bytes_per_gpu

    # --- area ---------------------------------------------------------------------------------------
    @property
    def stack_area_mm2(self) -> float:
        """Silicon of every stack in the system (GPU dies not included)."""
        from tokenstack_sim.hw.stack.area import stack_area

        a = self.gpu_stacks_per_gpu * stack_area(self.gpu_stack)["total_mm2"]
        if self.pim_stack is not None:
            a += self.pim_stacks_per_gpu * stack_area(self.pim_stack)["total_mm2"]
        return self.gpus * a

    # --- output -------------------------------------------------------------------------------------
    @staticmethod
    def _stack_line(stack, count: int, what: str) -> str:
        o = stack.dram.org
        n_pim = sum(d.kind == "pim" for d in stack.dies)
        return (f"  {what}: {count} x {stack.config.name} (DRAM {stack.dram.config.name}, {o.standard}): "
                f"{len(stack.dies)} dies of {o.die_density_gbit:g} Gb ({n_pim} PIM), {o.sids} SIDs, "
                f"{stack.capacity_bytes / 2**30:.1f} GiB, {stack.dram.peak_bw_GBps:,.1f} GB/s each")

    def describe(self) -> str:
        c, gib = self.config, 2 ** 30
        lines = [f"{c.name}  (system, schema {c.schema_version})"]
        if c.description:
            lines.append(f"  {c.description}")
        if c.source:
            lines.append(f"  source: {c.source}")
        lines.append(f"  {c.gpus} x {self.gpu.name} GPUs, tensor parallel {c.tp}; GPU link {self.gpu_link.name}, "
                     f"host link {self.host_link.name}")
        lines.append(self._stack_line(self.gpu_stack, self.gpu_stacks_per_gpu, "GPU stacks per GPU"))
        if self.pim_stack is not None:
            lines.append(self._stack_line(self.pim_stack, self.pim_stacks_per_gpu, "PIM device stacks per GPU")
                         + f", over {self.pim_link.name}"
                         + (" (in place of GPU stacks)" if c.pim_device.replaces_gpu_stacks else " (extra)"))
        lines += [
            f"  per GPU: {self.stacks_per_gpu} stacks, {self.dies_per_gpu} dies; GPU-side bandwidth "
            f"{self.gpu_bw_GBps:,.1f} GB/s; capacity {self.capacity_bytes_per_gpu / gib:.1f} GiB = "
            + " + ".join(f"{t} {self.capacity_per_gpu_bytes(t) / gib:.1f}" for t in TIERS),
            f"  PIM per GPU: {self.pim_internal_bw_GBps:,.0f} GB/s internal, {self.pim_tflops:.2f} TFLOPS FP16 peak",
            f"  system: {self.total_stacks} stacks, {self.total_dies} dies, {self.capacity_bytes / gib:.1f} GiB, "
            f"{self.gpus * self.gpu_bw_GBps / 1e3:,.2f} TB/s GPU-side, {self.stack_area_mm2 / 100:,.1f} cm2 of "
            f"stack silicon; KV manager may use {c.memory_utilization:.0%} of each memory",
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        data = to_dict(self.config)
        data["derived"] = {
            "gpu_stacks_per_gpu": self.gpu_stacks_per_gpu, "pim_stacks_per_gpu": self.pim_stacks_per_gpu,
            "stacks_per_gpu": self.stacks_per_gpu, "total_stacks": self.total_stacks,
            "dies_per_gpu": self.dies_per_gpu, "total_dies": self.total_dies,
            "gpu_bw_GBps": self.gpu_bw_GBps, "total_gpu_bw_GBps": self.gpus * self.gpu_bw_GBps,
            "capacity_per_gpu_bytes": {t: self.capacity_per_gpu_bytes(t) for t in TIERS},
            "capacity_bytes": self.capacity_bytes,
            "pim_internal_bw_GBps_per_gpu": self.pim_internal_bw_GBps, "pim_tflops_per_gpu": self.pim_tflops,
            "stack_area_mm2": self.stack_area_mm2,
        }
        return data


def _load(name: str, overrides, kind: str, where: str, source: str):
    from tokenstack_sim.config.loader import load_config

    try:
        return load_config(name, list(overrides), kind=kind)
    except InputError as exc:
        raise InputError(f"in {kind} preset {name!r}: {exc.message}", source=source,
                         where=where + (f" ({exc.where})" if exc.where else "")) from None


def resolve_system(cfg: SystemConfig, *, source: str) -> ResolvedSystem:
    gpu = _load(cfg.gpu, cfg.gpu_set, "gpu", "gpu", source)
    gpu_stack = _load(cfg.gpu_stack, cfg.stack_set, "stack", "gpu_stack", source)
    gpu_link = _load(cfg.gpu_link, cfg.gpu_link_set, "link", "gpu_link", source)
    host_link = _load(cfg.host_link, cfg.host_link_set, "link", "host_link", source)
    sites = gpu.config.hbm_stack_sites
    pd = cfg.pim_device
    taken = pd.pim_stacks if pd is not None and pd.replaces_gpu_stacks else 0
    if taken >= sites:
        raise InputError(f"{pd.pim_stacks} PIM stacks in place of GPU stacks leave none of the {sites} stack sites "
                         f"of {gpu.name!r} to the GPU; at most {sites - 1} (one GPU stack holds the weights)", source=source, where="pim_device.pim_stacks")
    free = sites - taken
    n_gpu = free if cfg.gpu_stacks_per_gpu < 0 else cfg.gpu_stacks_per_gpu
    if n_gpu > free:
        raise InputError(f"{n_gpu} stacks per GPU but {gpu.name!r} has {sites} HBM stack sites"
                         + (f", {taken} of them taken by PIM stacks" if taken else ""),
                         source=source, where="gpu_stacks_per_gpu")
    pim_stack = pim_link = None
    if pd is not None:
        pim_stack = _load(pd.stack, pd.stack_set, "stack", "pim_device.stack", source)
        if not pim_stack.has_pim:
            raise InputError(f"stack preset {pd.stack!r} has no PIM dies", source=source, where="pim_device.stack")
        pim_link = _load(pd.link, pd.link_set, "link", "pim_device.link", source)
    return ResolvedSystem(cfg, source, gpu, gpu_stack, n_gpu, gpu_link, host_link, pim_stack,
                          pd.pim_stacks if pd is not None else 0, pim_link)


def from_raw(raw: dict, path) -> ResolvedSystem:
    """The `kind = "system"` resolver used by the config loader."""
    raw = dict(raw)
    pd_raw = raw.pop("pim_device", None)  # built on its own so a missing key inside it is named by path
    cfg = build(SystemConfig, raw, source=str(path))
    if pd_raw is not None:
        if not isinstance(pd_raw, dict):
            raise InputError("expected a table", source=str(path), where="pim_device")
        cfg = dataclasses.replace(cfg, pim_device=build(PimDevice, pd_raw, where="pim_device", source=str(path)))
    return resolve_system(cfg, source=str(path))
