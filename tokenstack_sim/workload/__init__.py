"""Workload layer: real-trace readers and synthetic generators, all producing one `RequestTable`.

May import only `tokenstack_sim.errors`, `tokenstack_sim.units`, numpy and the standard library.
"""

from tokenstack_sim.workload.table import FLAG_FAILED, NO_ID, REQUEST_DTYPE, RequestTable, validate

__all__ = ["FLAG_FAILED", "NO_ID", "REQUEST_DTYPE", "RequestTable", "validate"]
