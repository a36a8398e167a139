"""KV layer: the paged block pool with prefix caching, and the prefix-block hashes requests key on.

May import the layers to its left (units, config, hw, model, workload), numpy and numba.
"""

from tokenstack_sim.kv.block_pool import BlockPool
from tokenstack_sim.kv.request_hashes import RequestHashes

__all__ = ["BlockPool", "RequestHashes"]
