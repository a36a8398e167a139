"""Cycle-level DRAM: controllers, bank state machines and JEDEC timing, in a numba kernel."""
