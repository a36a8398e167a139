"""Physical address → (channel, pseudo-channel, SID, bank group, bank, row, column).

A map is a field order from the least significant end of the access index (address ÷ access size),
as mixed-radix digits: `ch,col:2,pc,sid,bg,ba,col,row` takes the channel first (cache-line interleave
across channels), then 2 bits (4 values) of column, then pseudo-channel, SID, bank group, bank, the
remaining column values and finally the row. A field named again continues where it left off. A
trailing `xor` folds the row's low digits into the bank-group and bank numbers, so that consecutive
rows of one bank spread over bank groups (permutation-based interleaving).

Named maps:
- `mop4clxor`: the peer simulator's map (dram_reference_points.md): 4 consecutive lines of a channel
  stay in one row, then pseudo-channel, SID, bank group and bank change, XOR-folded with row bits.
- `row_major`: a channel's lines fill a whole row before the bank changes (row:bank:column).
- `bank_first`: every consecutive line of a channel goes to another bank, pseudo-channel first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokenstack_sim.config.dram import Organization
from tokenstack_sim.errors import InputError

NAMED_MAPS = {
    "mop4clxor": "ch,col:2,pc,sid,bg,ba,col,row,xor",
    "row_major": "ch,col,pc,sid,bg,ba,row",
    "bank_first": "ch,pc,sid,bg,ba,col,row",
}
FIELDS = ("ch", "pc", "sid", "bg", "ba", "col", "row")


@dataclass(frozen=True)
class AddressMap:
    spec: str
    digits: tuple[tuple[str, int], ...]  # (field, radix) from least significant
    xor: bool

    def decode(self, access_index: np.ndarray) -> dict[str, np.ndarray]:
        """Split access indices (address // access bytes) into coordinates, vectorized."""
        x = access_index.astype(np.int64, copy=True)
        out = {f: np.zeros(x.shape, np.int64) for f in FIELDS}
        scale = {f: 1 for f in FIELDS}
        for field, radix in self.digits:
            out[field] += (x % radix) * scale[field]
            scale[field] *= radix
            x //= radix
        if self.xor:
            n_bg, n_ba = _count(self.digits, "bg"), _count(self.digits, "ba")
            out["bg"] = (out["bg"] + out["row"]) % n_bg if n_bg & (n_bg - 1) else out["bg"] ^ (out["row"] % n_bg)
            folded = out["row"] // n_bg
            out["ba"] = (out["ba"] + folded) % n_ba if n_ba & (n_ba - 1) else out["ba"] ^ (folded % n_ba)
        return out

    def encode(self, coords: dict[str, np.ndarray]) -> np.ndarray:
        """The access indices of the given coordinates: the inverse of `decode`."""
        c = {f: np.asarray(coords.get(f, 0), np.int64).copy() for f in FIELDS}
        if self.xor:  # undo the fold: it depends on the row only, which is stored unfolded
            n_bg, n_ba = _count(self.digits, "bg"), _count(self.digits, "ba")
            c["bg"] = (c["bg"] - c["row"]) % n_bg if n_bg & (n_bg - 1) else c["bg"] ^ (c["row"] % n_bg)
            folded = c["row"] // n_bg
            c["ba"] = (c["ba"] - folded) % n_ba if n_ba & (n_ba - 1) else c["ba"] ^ (folded % n_ba)
        index = np.zeros(np.broadcast(*c.values()).shape, np.int64)
        scale = 1
        for field, radix in self.digits:
            index += (c[field] % radix) * scale
            c[field] //= radix
            scale *= radix
        return index


def _count(digits, field) -> int:
    total = 1
    for f, r in digits:
        if f == field:
            total *= r
    return total


def parse_map(spec: str, org: Organization, *, source: str | None = None) -> AddressMap:
    """Build a map for this organization from a name or a field-order string."""
    text = NAMED_MAPS.get(spec, spec)
    where = "controller.address_map"
    sizes = {"ch": org.channels, "pc": org.pseudo_channels, "sid": org.sids, "bg": org.bank_groups,
             "ba": org.banks_per_group, "col": org.columns, "row": org.rows}
    left = dict(sizes)
    digits = []
    xor = False
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    for tok in tokens:
        if tok == "xor":
            xor = True
            continue
        name, _, bits = tok.partition(":")
        if name not in sizes:
            raise InputError(f"unknown field {name!r} in map {text!r}; fields: {', '.join(FIELDS)}, xor; "
                             f"named maps: {', '.join(NAMED_MAPS)}", source=source, where=where)
        if bits:
            if not bits.isdigit():
                raise InputError(f"expected field:bits, got {tok!r}", source=source, where=where)
            radix = 1 << int(bits)
            if left[name] % radix:
                raise InputError(f"{tok!r} takes {radix} values but only {left[name]} are left", source=source,
                                 where=where)
        else:
            radix = left[name]
        left[name] //= radix
        if radix > 1:
            digits.append((name, radix))
    unused = [f for f, v in left.items() if v != 1]
    if unused:
        raise InputError(f"map {text!r} leaves fields unmapped: {', '.join(unused)}", source=source, where=where)
    return AddressMap(spec=text, digits=tuple(digits), xor=xor)
