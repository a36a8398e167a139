"""Tier address maps: which bank, row and column a line of a tier's address space lands on.

Weights and KV live in separately mapped regions: each tier ('capacity' or 'pim') has its own linear
address space over its (channel, SID) pairs. Consecutive 4-line chunks go to different channels, then
pseudo-channels, then bank groups and banks, before the column and the row advance — the same
interleaving idea as the DRAM presets' mop4clxor map, so a stream spreads over every channel of the
tier. Left out: XOR bank hashing inside a tier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokenstack_sim.errors import InputError

CHUNK_LINES = 4  # lines kept together in one bank before the map moves on (as mop4clxor)


@dataclass(frozen=True)
class TierMap:
    units: tuple[tuple[int, int], ...]  # (channel, SID), in interleave order
    pcs: tuple[int, ...]
    bank_groups: int
    banks_per_group: int
    columns: int
    rows: int
    access_bytes: int

    @classmethod
    def of(cls, stack, tier: str, *, channels=None, pcs=None, sids=None) -> "TierMap":
        units = [(c, s) for c, s in stack.tier_units(tier)
                 if (channels is None or c in channels) and (sids is None or s in sids)]
        if not units:
            raise InputError(f"stack {stack.config.name} has no {tier!r} tier"
                             + (" on the chosen channels" if channels is not None else ""))
        o = stack.dram.org
        rows = int(min(stack.rows_of[c, s] for c, s in units))
        return cls(tuple(units), tuple(range(o.pseudo_channels)) if pcs is None else tuple(pcs), o.bank_groups,
                   o.banks_per_group, o.columns, rows, stack.dram.access_bytes)

    @property
    def lines(self) -> int:
        return len(self.units) * len(self.pcs) * self.bank_groups * self.banks_per_group * self.columns * self.rows

    @property
    def capacity_bytes(self) -> int:
        return self.lines * self.access_bytes

    def decode(self, line: np.ndarray) -> dict[str, np.ndarray]:
        line = np.asarray(line, np.int64)
        if len(line) and (line.min() < 0 or line.max() >= self.lines):
            raise InputError(f"tier address beyond its {self.capacity_bytes:,} bytes")
        col_lo = line % CHUNK_LINES
        x = line // CHUNK_LINES
        U, P = len(self.units), len(self.pcs)
        up = x % (U * P)
        x //= U * P
        g = x % self.bank_groups
        x //= self.bank_groups
        b = x % self.banks_per_group
        x //= self.banks_per_group
        hi_cols = self.columns // CHUNK_LINES
        col_hi = x % hi_cols
        row = x // hi_cols
        units = np.array(self.units, np.int64)
        u = up % U
        return {"ch": units[u, 0], "pc": np.array(self.pcs, np.int64)[up // U], "sid": units[u, 1],
                "bg": g, "ba": b, "row": row, "col": col_hi * CHUNK_LINES + col_lo}
