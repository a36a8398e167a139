"""Numba kernels of the workload layer (DESIGN.md: `@njit` lives in `kernels.py` files only)."""

import numpy as np
from numba import njit


@njit(cache=True)
def assign_block_ids(parent, shared, offsets, system_blocks, system_id, common_blocks, system_prompt_blocks,
                     reserved, hashes):
    """Fill `hashes` (flat, request r's blocks at offsets[r]:offsets[r+1]) with Mooncake-style block ids.

    Block `pos` of request `r` is, in order of precedence:
    - a common-prefix block (pos < common_blocks): id `pos`;
    - a system-prompt block (pos < system_blocks[r]): the id range of system prompt `system_id[r]`;
    - an inherited block (pos < shared[r]): the id of the first ancestor whose own shared part no longer
      covers `pos`, found by walking up the parent chain — the block that first held it;
    - otherwise a new block: `reserved` + its own flat position.
    """
    for r in range(parent.shape[0]):
        base = offsets[r]
        sys_r = system_blocks[r]
        app_base = common_blocks + system_id[r] * system_prompt_blocks - common_blocks
        for pos in range(offsets[r + 1] - base):
            if pos < sys_r:
                if pos < common_blocks:
                    hashes[base + pos] = np.uint64(pos)
                else:
                    hashes[base + pos] = np.uint64(app_base + pos)
            elif pos < shared[r]:
                cur = parent[r]
                while pos < shared[cur]:
                    cur = parent[cur]
                hashes[base + pos] = np.uint64(reserved + offsets[cur] + pos)
            else:
                hashes[base + pos] = np.uint64(reserved + base + pos)
