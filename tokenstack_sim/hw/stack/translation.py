"""Layered address translation on the base die: KV block -> stack / SID / pseudo-channel / bank / row.

The base die keeps a translation cache (TLB) of `tlb_entries` entries, each covering `tlb_page_bytes`
of a tier; a hit costs `tlb_hit_cycles`, a miss a page-table walk of `tlb_miss_cycles` (a DRAM read
of the table, about tRCD + CL + burst; charged as latency, its command is not simulated). LRU
replacement. Left out: multi-level walks and translation prefetching.
"""

from __future__ import annotations

from collections import OrderedDict


class Translator:
    def __init__(self, entries: int, hit_cycles: int, miss_cycles: int):
        self.entries = entries
        self.hit_cycles = hit_cycles
        self.miss_cycles = miss_cycles
        self._lru: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def of(cls, stack) -> "Translator":
        b = stack.config.basedie
        return cls(b.tlb_entries, b.tlb_hit_cycles, b.tlb_miss_cycles)

    def lookup(self, page_key) -> int:
        """Translate one page; returns the cycles it costs."""
        if page_key in self._lru:
            self._lru.move_to_end(page_key)
            self.hits += 1
            return self.hit_cycles
        self.misses += 1
        self._lru[page_key] = True
        if len(self._lru) > self.entries:
            self._lru.popitem(last=False)
        return self.miss_cycles

    @property
    def cycles(self) -> int:
        return self.hits * self.hit_cycles + self.misses * self.miss_cycles
