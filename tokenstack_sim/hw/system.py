"""What a resolved system offers a serving run: memory bandwidth, whether weights fit, KV capacity by
tier, and the equal-resources table that puts the compared systems side by side.

Capacity follows vLLM's budget (serving.md §2.1): the KV manager may use `memory_utilization` of each
memory; from that the weights (sharded evenly over the tensor-parallel group) are taken first from the
GPU-side capacity tier, then from the GPU-side PIM tier; activations likewise after them. AttAcc's PIM
device never holds weights (it holds KV only, hardware.md §7). What is left per tier is the KV capacity.

Left out: the decode-step time (the model package composes it from these figures and hw/gpu), CUDA
context and non-torch memory (inside the 1 − memory_utilization headroom), CPU memory as a tier, and
uneven weight shards (embedding/lm_head splits are taken as even).
"""

from __future__ import annotations

from tokenstack_sim.config.system import TIERS
from tokenstack_sim.errors import InputError

_WEIGHT_TIERS = ("gpu_capacity", "gpu_pim")  # where weights and activations may live, in order


def memory_bandwidth_GBps(system) -> dict:
    """Peak memory bandwidth: the GPU-side stacks (per GPU and in total) and the PIM units' internal
    bandwidth (per GPU and in total; 0 without PIM). GB/s, decimal."""
    g, p = system.gpu_bw_GBps, system.pim_internal_bw_GBps
    return {"per_gpu": g, "total": g * system.gpus, "pim_internal_per_gpu": p, "pim_internal_total": p * system.gpus}


def _usable_per_gpu(system) -> dict[str, float]:
    u = system.config.memory_utilization
    return {t: u * system.capacity_per_gpu_bytes(t) for t in TIERS}


def _place(system, weight_bytes: float, activation_bytes: float) -> dict[str, float] | None:
    """Per-GPU usable bytes left in each tier after the weight shard and the activations, or None when
    they do not fit on the GPU side."""
    if weight_bytes < 0 or activation_bytes < 0:
        raise InputError(f"byte counts must be >= 0, got weights {weight_bytes}, activations {activation_bytes}",
                         where="weight_bytes" if weight_bytes < 0 else "activation_bytes")
    left = _usable_per_gpu(system)
    need = weight_bytes / system.tp + activation_bytes
    for t in _WEIGHT_TIERS:
        take = min(need, left[t])
        left[t] -= take
        need -= take
    return None if need > 0 else left


def weights_fit(system, weight_bytes: float, activation_bytes: float = 0) -> bool:
    """Do the model's weights (`weight_bytes` for the whole model, sharded over tp) plus
    `activation_bytes` per GPU fit in the GPU-side memory the KV manager may use?"""
    return _place(system, weight_bytes, activation_bytes) is not None


def kv_capacity_bytes(system, weight_bytes: float, activation_bytes: float = 0, *, per_gpu: bool = False) -> dict:
    """KV bytes available per tier ('gpu_capacity', 'gpu_pim', 'pim_device'), summed over the GPUs
    (per_gpu=True: one GPU's). `weight_bytes` is the whole model (sharded over tp); `activation_bytes` is
    each GPU's activation workspace. Refuses weights that do not fit (check weights_fit first)."""
    left = _place(system, weight_bytes, activation_bytes)
    if left is None:
        usable = sum(_usable_per_gpu(system)[t] for t in _WEIGHT_TIERS)
        raise InputError(f"weights {weight_bytes / system.tp / 1e9:.2f} GB per GPU (tp {system.tp}) + activations "
                         f"{activation_bytes / 1e9:.2f} GB exceed the {usable / 1e9:.2f} GB the GPU side of "
                         f"{system.name!r} may use ({system.config.memory_utilization:.0%} of its stacks)",
                         where="weight_bytes")
    n = 1 if per_gpu else system.gpus
    return {t: int(left[t]) * n for t in TIERS}


def equal_resources_report(systems) -> str:
    """A text table of the resources of each system: GPUs, stacks, dies, capacity, bandwidth, PIM, area."""
    cols = [("system", "", lambda s: s.name),
            ("GPUs", "", lambda s: f"{s.gpus} x {s.gpu.name}"),
            ("stacks", "GPU+PIM", lambda s: f"{s.total_stacks} ({s.gpus * s.gpu_stacks_per_gpu}+"
                                            f"{s.gpus * s.pim_stacks_per_gpu})"),
            ("dies", "", lambda s: f"{s.total_dies}"),
            ("capacity", "GiB", lambda s: f"{s.capacity_bytes / 2**30:,.0f}"),
            ("GPU-side BW", "TB/s", lambda s: f"{s.gpus * s.gpu_bw_GBps / 1e3:,.1f}"),
            ("PIM int. BW", "TB/s", lambda s: f"{s.gpus * s.pim_internal_bw_GBps / 1e3:,.1f}"),
            ("PIM", "TFLOPS", lambda s: f"{s.gpus * s.pim_tflops:,.0f}"),
            ("stack area", "cm2", lambda s: f"{s.stack_area_mm2 / 100:,.0f}")]
    rows = [[f(s) for _, _, f in cols] for s in systems]
    heads = [h for h, _, _ in cols]
    units = [u for _, u, _ in cols]
    widths = [max(len(x) for x in [h, u, *(r[i] for r in rows)]) for i, (h, u) in enumerate(zip(heads, units))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(heads), line(units), *(line(r) for r in rows)])
