"""Progress of a sweep: one line per finished point with points done/total, elapsed time and an ETA.

The ETA assumes the points left take as long, on average, as the points run so far in this session
(points skipped as already finished count as done but not in the rate). With several workers the rate
is measured, not derived, so it already reflects their parallelism. Leaves out: per-point weighting
(a point at 4x the QPS of another takes longer; the ETA is an average).
"""

from __future__ import annotations

import math
import time
from typing import Callable


def hms(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Counts finished points and formats a line for each (given to `emit`)."""

    def __init__(self, total: int, skipped: int, emit: Callable[[str], None] | None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.skipped, self.emit, self.clock = total, skipped, emit, clock
        self.ran = 0
        self.start_s = clock()

    @property
    def done(self) -> int:
        return self.skipped + self.ran

    def eta_s(self) -> float:
        if self.ran == 0:
            return math.nan
        return (self.clock() - self.start_s) / self.ran * (self.total - self.done)

    def point_done(self, status: str, label: str) -> str:
        self.ran += 1
        elapsed = self.clock() - self.start_s
        left = self.total - self.done
        line = (f"[{self.done}/{self.total}] {status:<12} {label}  elapsed {hms(elapsed)}, "
                f"ETA {hms(self.eta_s()) if left else '0s'}")
        if self.emit:
            self.emit(line)
        return line
