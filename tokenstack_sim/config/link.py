"""A point-to-point interconnect: the `kind = "link"` config (host links, GPU-GPU, GPU-PIM device links).

A link is its bandwidth PER DIRECTION (vendors often quote the bidirectional total: NVLink4's "900 GB/s"
is 450 GB/s each way), a per-transfer latency, an energy per bit moved, a static power, and an
achievable fraction of the bandwidth.

Static power (`static_power_w`) is what one instance of the link (both ends, both directions; one GPU's
port) draws whether or not it moves data: SerDes stay powered and send idle symbols between transfers.
The serving engine charges it x the run's span per instance (sim/engine.py energy_pj); the per-bit
energy is charged on top, so at full use the two together overstate a link whose per-bit figure was
measured at full rate by the static share (set static_power_w = 0 for the per-bit account alone).
Left out: topology (switches, hops, contention between flows), protocol packet overheads beyond what
the achievable fraction absorbs, and low-power link states (L1/L0p) that would cut idle power.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenstack_sim.config.schema import build, spec, to_dict
from tokenstack_sim.errors import InputError


@dataclass(frozen=True)
class LinkConfig:
    schema_version: int = spec(min=1, max=1, doc="config schema version (1)")
    kind: str = spec(doc="'link'")
    name: str = spec(doc="preset name")
    bw_per_direction_GBps: float = spec(min=0.001, max=1e6, doc="peak bandwidth each way, GB/s (decimal)")
    latency_us: float = spec(min=0.0, max=1e6, doc="fixed time per transfer / per collective step, us")
    energy_pj_per_bit: float = spec(min=0.0, max=1000.0, doc="energy per bit moved over the link")
    static_power_w: float = spec(min=0.0, max=1e4, doc="power one link instance (one GPU's port, both ends and "
                                 "directions) draws whatever the traffic, W; charged x time")
    bw_efficiency: float = spec(1.0, min=0.01, max=1.0, doc="achievable fraction of the peak bandwidth")
    description: str = spec("", doc="free text")
    source: str = spec("", doc="where the numbers come from")
    base: str = spec("", doc="preset this file extends")

    def __post_init__(self) -> None:
        if self.kind != "link":
            raise InputError(f"expected 'link', got {self.kind!r}", where="kind")


@dataclass(frozen=True)
class ResolvedLink:
    config: LinkConfig
    source: str

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def effective_bw_Bps(self) -> float:
        """Bytes per second each way actually moved: peak x achievable fraction."""
        return self.config.bw_per_direction_GBps * 1e9 * self.config.bw_efficiency

    @property
    def static_power_w(self) -> float:
        return self.config.static_power_w

    @property
    def latency_s(self) -> float:
        return self.config.latency_us * 1e-6

    def describe(self) -> str:
        c = self.config
        lines = [f"{c.name}  (link, schema {c.schema_version})"]
        if c.description:
            lines.append(f"  {c.description}")
        if c.source:
            lines.append(f"  source: {c.source}")
        lines += [f"  {c.bw_per_direction_GBps:g} GB/s per direction ({2 * c.bw_per_direction_GBps:g} GB/s both "
                  f"ways), {c.bw_efficiency:.0%} achievable; latency {c.latency_us:g} us",
                  f"  energy {c.energy_pj_per_bit:g} pJ/bit ({c.energy_pj_per_bit * 8:g} pJ/B), "
                  f"static {c.static_power_w:g} W"]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        data = to_dict(self.config)
        data["derived"] = {"effective_bw_GBps": self.effective_bw_Bps / 1e9,
                           "bidirectional_GBps": 2 * self.config.bw_per_direction_GBps}
        return data


def from_raw(raw: dict, path) -> ResolvedLink:
    """The `kind = "link"` resolver used by the config loader."""
    return ResolvedLink(build(LinkConfig, raw, source=str(path)), str(path))
