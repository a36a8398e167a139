"""A characterized op: per background-load level, time as a piecewise-linear function of size, plus
action counts at load 0 and the checks made at held-out sizes; looked up vectorized, never
extrapolated.

Each segment between two sizes is affine (a fixed cost plus a rate: what a stream, a DMA or a
row-by-row PIM sweep is). The size grid starts geometric and is refined where the kernel's curve bends
(a refresh landing inside the op, a tier map wrapping to the next row, queues filling): a segment whose
midpoint the line misses by more than the tolerance is split, so each level has its own sizes
(characterize.py). Under load, where the time has structure at the scale of one access per channel
(a DMA's write-drain sawtooth), a level holds, up to `dense_max[level]`, both ends of every run of
sizes that the slice serves as the same requests (simulate.size_breaks), so that the same linear
look-up is exact there (the engine's step model interpolates the level-0 arrays itself). A load is looked up at the level at or above it. Time is not monotonic in load
(a stream of the capacity tier is 2.6x slower under 0.2 than under 0.15 and faster again under 0.3:
two sequential sweeps of one channel fall into step), so that look-up neither bounds nor closely
approximates the time at a load between levels; `max_rel_error_between_levels` says by how much it
misses at the held-out points. A size above the grid, or a load above the top level, is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tokenstack_sim.errors import InputError

# Default grids (per stack). Sizes start at 0 (no work, no time) and grow by sqrt(2).
def _geometric(first: int, last: int, quantum: int) -> list[int]:
    out, x = [0], float(first)
    while x <= last * 1.0001:
        v = int(round(x / quantum)) * quantum
        if v > out[-1]:
            out.append(v)
        x *= 2 ** 0.5
    return out


STREAM_SIZES = _geometric(4096, 256 << 20, 4096)  # 0, 4 KiB .. 256 MiB
DMA_SIZES = _geometric(4096, 64 << 20, 4096)  # 0, 4 KiB .. 64 MiB
ATTENTION_TOKENS = _geometric(16, 131072, 1)  # 0, 16 .. 131072 tokens
# Background load as a share of the channel's peak bandwidth. Above ~0.4 a sequential background plus
# the op ask for more than a channel serves, and the op's time then depends on how long the background
# lasts rather than on its rate: no longer a cost of the op.
LOAD_SHARES = [0.0, 0.1, 0.2, 0.3]


@dataclass
class OpTable:
    op_id: str
    size_unit: str
    shares: np.ndarray  # load levels, ascending, shares[0] == 0
    sizes: list[np.ndarray]  # per level: ascending sizes, [0] == 0
    time_ns: list[np.ndarray]  # per level: stack time at those sizes
    action_sizes: np.ndarray = field(default_factory=lambda: np.zeros(1))
    actions: dict[str, np.ndarray] = field(default_factory=dict)  # per action: counts at action_sizes
    validation: list = field(default_factory=list)  # (size, share, kernel ns, table ns, rel error)
    meta: dict = field(default_factory=dict)
    dense_max: list = field(default_factory=list)  # per level: tabulated run by run up to here (0: none)

    @property
    def max_size(self) -> float:
        return float(min(s[-1] for s in self.sizes))

    @property
    def max_rel_error(self) -> float:
        """Largest |table - kernel| / kernel at the held-out sizes, at the load levels themselves."""
        return max((abs(v[4]) for v in self.validation), default=0.0)

    @property
    def max_rel_error_between_levels(self) -> float:
        """The same at loads half-way between levels (which a look-up rounds up to the level above)."""
        return max((abs(v[4]) for v in self.meta.get("validation_between_levels", ())), default=0.0)

    def _check(self, size: np.ndarray, share: np.ndarray) -> None:
        top = self.max_size
        if np.any(size < 0) or np.any(size > top):
            bad = float(size[(size < 0) | (size > top)][0])
            raise InputError(f"{self.op_id}: {bad:,.0f} {self.size_unit} is outside the characterized grid "
                             f"(0 .. {top:,.0f}); costs are never extrapolated — characterize with a larger grid")
        if np.any(share < 0) or np.any(share > self.shares[-1] + 1e-12):
            bad = float(share[(share < 0) | (share > self.shares[-1] + 1e-12)][0])
            why = (f" (it starves under {self.meta['starves_at_share']:g})"
                   if self.meta.get("starves_at_share") is not None else "")
            raise InputError(f"{self.op_id}: load share {bad:g} is outside the characterized "
                             f"0 .. {self.shares[-1]:g}{why}")

    def level(self, share) -> np.ndarray:
        """Index of the load level used for `share`: the lowest level at or above it."""
        return np.searchsorted(self.shares, np.asarray(share, np.float64) - 1e-12, side="left")

    def time(self, size, share=0.0) -> np.ndarray:
        """Stack time in ns, vectorized over `size` and `share` (broadcast)."""
        size, share = np.broadcast_arrays(np.asarray(size, np.float64), np.asarray(share, np.float64))
        self._check(size, share)
        lv = self.level(share)
        out = np.empty(size.shape)
        for j in np.unique(lv):
            m = lv == j
            out[m] = np.interp(size[m], self.sizes[j], self.time_ns[j])
        return out

    def action_counts(self, size) -> dict[str, np.ndarray]:
        size = np.asarray(size, np.float64)
        self._check(size, np.zeros_like(size))
        return {a: np.interp(size, self.action_sizes, v) for a, v in self.actions.items()}

    def to_json(self) -> dict:
        return {"op_id": self.op_id, "size_unit": self.size_unit, "shares": self.shares.tolist(),
                "sizes": [x.tolist() for x in self.sizes], "time_ns": [x.tolist() for x in self.time_ns],
                "action_sizes": self.action_sizes.tolist(),
                "actions": {k: v.tolist() for k, v in self.actions.items()}, "validation": self.validation,
                "meta": self.meta, "dense_max": list(self.dense_max)}

    @classmethod
    def from_json(cls, d: dict) -> "OpTable":
        f = np.float64
        return cls(d["op_id"], d["size_unit"], np.array(d["shares"], f), [np.array(x, f) for x in d["sizes"]],
                   [np.array(x, f) for x in d["time_ns"]], np.array(d["action_sizes"], f),
                   {k: np.array(v, f) for k, v in d["actions"].items()}, [tuple(v) for v in d["validation"]],
                   d.get("meta", {}), [float(x) for x in d.get("dense_max", [])])
