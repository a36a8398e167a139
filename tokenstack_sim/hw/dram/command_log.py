"""The DRAM command log: every command a run issued, one row each, in issue order.

Text form (CSV with this header, one command per line):

    cycle,channel,pseudo_channel,sid,bank_group,bank,command,row,column

`cycle` counts tCK from the start of the run. `command` is one of ACT PRE PREA RD WR RDA WRA REFab
REFpb. Fields that do not apply are -1: PREA and REFab carry bank_group = bank = row = -1 and
sid = -1 when they cover the whole pseudo-channel (refresh scope `pseudo_channel`), or the SID when the
scope is `sid`; ACT/PRE/REFpb carry column = -1; PRE carries the row it closes. Rows are ordered by
cycle, then by issue order within a cycle (a row command and a column command may share a cycle on
HBM's split command bus).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.config.dram import COMMANDS
from tokenstack_sim.errors import InputError

LOG_DTYPE = np.dtype([
    ("cycle", np.int64), ("channel", np.int32), ("pseudo_channel", np.int32), ("sid", np.int32),
    ("bank_group", np.int32), ("bank", np.int32), ("command", np.int8), ("row", np.int32),
    ("column", np.int32),
])
HEADER = ",".join(LOG_DTYPE.names)


def write_log(log: np.ndarray, path: str | Path) -> None:
    """Write the log as CSV, atomically (a temporary file renamed into place)."""
    names = np.array(COMMANDS)
    with atomic_write(path, "w") as fh:
        fh.write(HEADER + "\n")
        cols = [log[f].astype(str) for f in LOG_DTYPE.names]
        cols[6] = names[log["command"]]
        fh.writelines(",".join(row) + "\n" for row in zip(*cols))


def read_log(path: str | Path) -> np.ndarray:
    """Read a CSV command log; a malformed line is an InputError naming the file and line."""
    code = {c: i for i, c in enumerate(COMMANDS)}
    rows = []
    with open(path) as fh:
        header = fh.readline().strip()
        if header != HEADER:
            raise InputError(f"expected header {HEADER!r}", source=path, where="line 1")
        for lineno, line in enumerate(fh, start=2):
            parts = line.strip().split(",")
            if len(parts) != 9 or parts[6] not in code:
                raise InputError(f"expected 9 fields with a command in {', '.join(COMMANDS)}",
                                 source=path, where=f"line {lineno}")
            try:
                vals = [int(p) for i, p in enumerate(parts) if i != 6]
            except ValueError:
                raise InputError("expected integers", source=path, where=f"line {lineno}") from None
            vals.insert(6, code[parts[6]])
            rows.append(tuple(vals))
    return np.array(rows, dtype=LOG_DTYPE)
