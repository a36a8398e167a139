"""A characterized op: per background-load level, time as a piecewise-linear function of size, plus
action counts at load 0 and the checks made at held-out sizes; looked up vectorized, never
extrapolated.

Each segment between two sizes is affine (a fixed cost plus a rate: what a stream, a DMA or a
row-by-row PIM sweep is). The size grid starts geometric and is refined where the kernel's curve bends
(a tier map wrapping to the next row, queues filling, a DMA's write drains): a segment whose
midpoint the line misses by more than the tolerance is split, so each level has its own sizes
(characterize.py). Where the time has structure at the scale of one access per channel (a DMA's
write-drain sawtooth at load 0), a level holds, up to `dense_max[level]`, both ends of every run of
sizes that the slice serves as the same requests (simulate.size_breaks), so that the same linear
look-up is exact there (the engine's step model interpolates the level-0 arrays itself).

A load between two levels is interpolated in share between the two levels' times at that size, along a
bent line through the interval's middle share: `share_shape[j]` says, at a few probe sizes, where the
kernel's time at the middle lies between the two levels' times (g: 0 at the lower, 1 at the upper, 0.5
linear), and g is interpolated in log size between them. Why: near the load where the background and
the op together saturate the channel, time bends in share, and so does the refresh overhead (a
refresh's backlog drains slowest there): a 124 MB capacity stream takes 2.80 / 3.60 / 3.72 x its time
alone under 0.15 / 0.175 / 0.2, so the straight line between 0.15 and 0.2 missed by 10% (characterize.py).
Interpolating between levels is sound because an op's cost under load is its expected time over the
background's draws (simulate.py): it rises with the load (a 1.79 MB stream of the capacity tier:
1016 ns alone, rising with every 0.05 of load up to 0.2). Under the earlier sequential-sweep
background it was not monotonic (1264 / 1583 / 3832 / 2768 ns under 0.1 / 0.175 / 0.2 / 0.3: two
sweeps of one channel fall into step), and under one realization of random lines the realization's
noise was structure no table followed (DMAs 14-49% off between levels). `max_rel_error_between_levels`
says how far the interpolation misses at held-out loads (figures: characterize.py). A size above the
grid, or a load above the top level, is refused.
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
# Background load as a share of the channel's peak bandwidth, of random lines (simulate.py). The grid's
# levels: dense where time bends most in share (an INT8 demotion of 44 KB: 1.37 / 1.77 x its time alone
# under 0.025 / 0.05; capacity-bound ops between 0.15 and 0.2), with a share shape in each interval
# (characterize._refine_shares). Measured against five levels 0.05 apart on hbm4-12h-tokenstack: the same
# max error for ops of >= 2 us at and between levels within 0.4 points (the capacity stream 4.9% between
# levels instead of 2.1%), ~12 s less CPU (57 s instead of 69 s a config). A grid with fewer levels gets
# levels added where linear interpolation in share misses (down to 0.025 apart). The top is 0.2: under
# 0.25-0.3 of random lines (which miss the row almost every time, so a channel serves far less of them than
# its peak) the queue the background builds decides the op's time, which then jumps 2-3x between
# neighbouring loads (300-token attention: 1006 / 3172 / 1760 / 4706 ns under 0.225 / 0.25 / 0.275 / 0.3;
# one realization of the previous "random" background): no longer a cost of the op.
LOAD_SHARES = [0.0, 0.05, 0.15, 0.2]


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
    # per interval between levels j and j+1 (or None: linear in share): {"sizes": probe sizes, "g": where
    # the time at the interval's middle share lies between the two levels' times, 0 .. 1}
    share_shape: list = field(default_factory=list)

    @property
    def max_size(self) -> float:
        return float(min(s[-1] for s in self.sizes))

    @property
    def max_rel_error(self) -> float:
        """Largest |table - kernel| / kernel at the held-out sizes, at the load levels themselves."""
        return max((abs(v[4]) for v in self.validation), default=0.0)

    @property
    def max_rel_error_between_levels(self) -> float:
        """The same at held-out loads between levels (half-way, and one random share per interval)."""
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
        """Index of the lower of the two load levels that bracket `share` (the last level but one for a
        share at the top level; 0 when there is one level)."""
        lo = np.searchsorted(self.shares, np.asarray(share, np.float64) + 1e-12, side="right") - 1
        return np.clip(lo, 0, max(len(self.shares) - 2, 0))

    def time(self, size, share=0.0) -> np.ndarray:
        """Stack time in ns, vectorized over `size` and `share` (broadcast): at each of the two levels
        that bracket the share, linear in size; between them, linear in share on either side of the
        interval's middle, where the share shape (if any) puts the time."""
        size, share = np.broadcast_arrays(np.asarray(size, np.float64), np.asarray(share, np.float64))
        self._check(size, share)
        if len(self.shares) == 1:
            return np.interp(size, self.sizes[0], self.time_ns[0])
        lv = self.level(share)
        out = np.empty(size.shape)
        for j in np.unique(lv):
            m = lv == j
            lo = np.interp(size[m], self.sizes[j], self.time_ns[j])
            hi = np.interp(size[m], self.sizes[j + 1], self.time_ns[j + 1])
            w = np.clip((share[m] - self.shares[j]) / (self.shares[j + 1] - self.shares[j]), 0.0, 1.0)
            shape = self.share_shape[j] if j < len(self.share_shape) else None
            if shape:
                g = np.interp(np.log(np.maximum(size[m], 1e-9)), np.log(shape["sizes"]), shape["g"])
                w = np.where(w <= 0.5, 2 * w * g, g + (1 - g) * (2 * w - 1))
            out[m] = lo + (hi - lo) * w
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
                "meta": self.meta, "dense_max": list(self.dense_max), "share_shape": list(self.share_shape)}

    @classmethod
    def from_json(cls, d: dict) -> "OpTable":
        f = np.float64
        return cls(d["op_id"], d["size_unit"], np.array(d["shares"], f), [np.array(x, f) for x in d["sizes"]],
                   [np.array(x, f) for x in d["time_ns"]], np.array(d["action_sizes"], f),
                   {k: np.array(v, f) for k, v in d["actions"].items()}, [tuple(v) for v in d["validation"]],
                   d.get("meta", {}), [float(x) for x in d.get("dense_max", [])],
                   list(d.get("share_shape", [])))
