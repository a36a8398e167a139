"""A GPU's compute side: the `kind = "gpu"` config.

A GPU config describes what the chip itself contributes to a system: dense tensor-core peak per data
type, SM count, L2 size, a per-kernel launch overhead, board power, static (idle) power, energy per FLOP
and per on-chip byte, the efficiency factors of its roofline, and the NUMBER of HBM stack sites on its
package.

Static power (`static_power_w`) is what the GPU draws whatever it computes: leakage, clock trees, the
idle draw of its board and package with a CUDA context open (the serving process keeps one). It leaves
out the HBM stacks' background and refresh power, which the stack configs charge; the serving engine
charges it x the run's span per GPU (sim/engine.py energy_pj). The DVFS rise from idle to busy clocks
is not static: it sits in the per-FLOP and per-byte energies.

It deliberately has NO memory-bandwidth field: a GPU's memory bandwidth comes from the stacks attached
to it (a `kind = "stack"` config times `hbm_stack_sites`, or AttAcc's split), never from a separate
number here. Adding `mem_bw_GBps` to a GPU file is refused as an unknown key.

Left out: clocks and boost behaviour (peaks are the vendor's boost-clock figures), power capping, DVFS
(one static power whatever the clocks), FP4/INT8 (only bf16/fp16/fp8 are modelled), sparsity (every
peak here is DENSE; NVIDIA lists FP8 with 2:4 sparsity, hardware.md §5 table note), and the GPU's own
DRAM energy (charged by the stacks).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenstack_sim.config.schema import build, spec, to_dict
from tokenstack_sim.errors import InputError

DTYPES = ("bf16", "fp16", "fp8")
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1}


@dataclass(frozen=True)
class PeakTflops:
    """Dense (not sparse) tensor-core peak per data type, TFLOPS. 0 = the GPU lacks that type."""
    bf16: float = spec(min=0.0, max=1e6, doc="dense BF16 tensor peak (FP32 accumulate), TFLOPS")
    fp16: float = spec(min=0.0, max=1e6, doc="dense FP16 tensor peak (FP32 accumulate), TFLOPS")
    fp8: float = spec(0.0, min=0.0, max=1e6, doc="dense FP8 tensor peak, TFLOPS (0 = not supported)")


@dataclass(frozen=True)
class Efficiency:
    """Achieved fractions of peak used by the roofline (hw/gpu/roofline.py)."""
    gemm_compute: float = spec(0.8, min=0.01, max=1.0,
                               doc="eta_c: fraction of peak a full-tile GEMM reaches (AttAcc 0.8)")
    attention_compute: float = spec(0.75, min=0.01, max=1.0,
                                    doc="fraction of peak the attention kernel's FLOPs reach")
    memory_bw: float = spec(0.85, min=0.01, max=1.0,
                            doc="eta_bw: fraction of the attached stacks' peak bandwidth a kernel streams at")
    tile_m: int = spec(64, min=1, max=4096, doc="GEMM output tile rows (tile quantization along m)")
    tile_n: int = spec(128, min=1, max=4096, doc="GEMM output tile columns (tile quantization along n)")
    wave_quantization: bool = spec(False, doc="charge partially filled last waves of tiles over the SMs "
                                   "(off: split-K / stream-K kernels fill the SMs)")


@dataclass(frozen=True)
class FlopEnergy:
    """Energy per FLOP by data type, pJ (a MAC is 2 FLOPs)."""
    bf16: float = spec(min=0.0, max=100.0, doc="pJ per BF16 FLOP")
    fp16: float = spec(min=0.0, max=100.0, doc="pJ per FP16 FLOP")
    fp8: float = spec(0.0, min=0.0, max=100.0, doc="pJ per FP8 FLOP")


@dataclass(frozen=True)
class GpuEnergy:
    pj_per_flop: FlopEnergy = spec(doc="compute energy per FLOP, by data type")
    l2_pj_per_byte: float = spec(min=0.0, max=1000.0, doc="one byte through L2 (every DRAM byte passes it)")
    l1_pj_per_byte: float = spec(min=0.0, max=1000.0, doc="one byte through L1 / shared memory")
    reg_pj_per_byte: float = spec(min=0.0, max=1000.0, doc="one register-file byte")


@dataclass(frozen=True)
class GpuConfig:
    """A `kind = "gpu"` config file, as written."""
    schema_version: int = spec(min=1, max=1, doc="config schema version (1)")
    kind: str = spec(doc="'gpu'")
    name: str = spec(doc="preset name")
    peak_tflops: PeakTflops = spec(doc="dense tensor peaks by data type")
    sm_count: int = spec(min=1, max=100000, doc="streaming multiprocessors")
    l2_bytes: int = spec(min=0, max=1 << 40, doc="L2 cache capacity, bytes")
    hbm_stack_sites: int = spec(min=0, max=64, doc="HBM stack sites on the package (0 = no HBM, e.g. GDDR)")
    launch_overhead_us: float = spec(min=0.0, max=1e6, doc="fixed time charged once per kernel, us")
    board_power_w: float = spec(min=1.0, max=1e5, doc="board / module power limit, W")
    static_power_w: float = spec(min=0.0, max=1e5,
                                 doc="idle power of the GPU (chip, board, CUDA context open), W, excluding its "
                                 "HBM stacks' background (charged by the stacks); charged x time")
    energy: GpuEnergy = spec(doc="energy per action")
    efficiency: Efficiency = spec(default_factory=Efficiency)
    description: str = spec("", doc="free text")
    source: str = spec("", doc="where the numbers come from")
    base: str = spec("", doc="preset this file extends")

    def __post_init__(self) -> None:
        if self.kind != "gpu":
            raise InputError(f"expected 'gpu', got {self.kind!r}", where="kind")
        for dt in DTYPES:
            if getattr(self.peak_tflops, dt) > 0 and getattr(self.energy.pj_per_flop, dt) <= 0:
                raise InputError(f"the GPU has a {dt} peak but no energy for it; give "
                                 f"energy.pj_per_flop.{dt}", where=f"energy.pj_per_flop.{dt}")


@dataclass(frozen=True)
class ResolvedGpu:
    """A validated GPU config with derived values. Nothing here changes after resolve."""
    config: GpuConfig
    source: str

    @property
    def name(self) -> str:
        return self.config.name

    def peak_flops(self, dtype: str) -> float:
        """Dense peak in FLOP/s for `dtype`; refuses a type the GPU lacks."""
        if dtype not in DTYPES:
            raise InputError(f"unknown data type {dtype!r}; known: {', '.join(DTYPES)}", where="dtype")
        tf = getattr(self.config.peak_tflops, dtype)
        if tf <= 0:
            have = [d for d in DTYPES if getattr(self.config.peak_tflops, d) > 0]
            raise InputError(f"GPU {self.name!r} has no {dtype} tensor peak; it supports {', '.join(have)}",
                             source=self.source, where=f"peak_tflops.{dtype}")
        return tf * 1e12

    def pj_per_flop(self, dtype: str) -> float:
        self.peak_flops(dtype)  # same refusal for an unsupported type
        return getattr(self.config.energy.pj_per_flop, dtype)

    @property
    def launch_overhead_s(self) -> float:
        return self.config.launch_overhead_us * 1e-6

    @property
    def static_power_w(self) -> float:
        return self.config.static_power_w

    def power_bound_pj_per_flop(self, dtype: str) -> float:
        """Board power / peak: an UPPER bound on energy per FLOP that includes memory and idle power."""
        return self.config.board_power_w / self.peak_flops(dtype) * 1e12

    def describe(self) -> str:
        c = self.config
        e = c.efficiency
        lines = [f"{c.name}  (gpu, schema {c.schema_version})"]
        if c.description:
            lines.append(f"  {c.description}")
        if c.source:
            lines.append(f"  source: {c.source}")
        peaks = ", ".join(f"{dt} {getattr(c.peak_tflops, dt):,.1f}" for dt in DTYPES
                          if getattr(c.peak_tflops, dt) > 0)
        lines += [
            f"  dense tensor peak (TFLOPS): {peaks}",
            f"  {c.sm_count} SMs, L2 {c.l2_bytes / 2**20:.0f} MiB, "
            + (f"{c.hbm_stack_sites} HBM stack sites (memory bandwidth comes from the attached stacks)"
               if c.hbm_stack_sites else "no HBM sites (attach a memory device explicitly)"),
            f"  launch overhead {c.launch_overhead_us:g} us per kernel; board power {c.board_power_w:g} W, "
            f"static {c.static_power_w:g} W (stacks' background not included)",
            f"  roofline: eta_c(GEMM) {e.gemm_compute:g}, eta_c(attention) {e.attention_compute:g}, "
            f"eta_bw {e.memory_bw:g}; GEMM tiles {e.tile_m}x{e.tile_n}, wave quantization "
            f"{'on' if e.wave_quantization else 'off'}",
        ]
        en = c.energy
        for dt in DTYPES:
            if getattr(c.peak_tflops, dt) > 0:
                lines.append(f"  energy {dt}: {getattr(en.pj_per_flop, dt):g} pJ/FLOP "
                             f"(board power / peak bound: {self.power_bound_pj_per_flop(dt):.2f} pJ/FLOP)")
        lines.append(f"  on-chip energy: L2 {en.l2_pj_per_byte:g}, L1 {en.l1_pj_per_byte:g}, "
                     f"registers {en.reg_pj_per_byte:g} pJ/B")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        data = to_dict(self.config)
        data["derived"] = {"peak_flops": {dt: getattr(self.config.peak_tflops, dt) * 1e12 for dt in DTYPES},
                           "power_bound_pj_per_flop": {dt: self.power_bound_pj_per_flop(dt) for dt in DTYPES
                                                       if getattr(self.config.peak_tflops, dt) > 0}}
        return data


def from_raw(raw: dict, path) -> ResolvedGpu:
    """The `kind = "gpu"` resolver used by the config loader."""
    cfg = build(GpuConfig, raw, source=str(path))
    return ResolvedGpu(cfg, str(path))
