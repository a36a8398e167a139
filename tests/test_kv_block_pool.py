"""Block pool (LRU free queue, prefix hits, duplicates) and per-request block hashes."""

import numpy as np
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.kv.block_pool import BlockPool
from tokenstack_sim.kv.request_hashes import RequestHashes
from tokenstack_sim.workload.hashing import reblock
from tokenstack_sim.workload.table import RequestTable, empty_rows

pytestmark = pytest.mark.unit


def _fill(pool, hashes):
    """Allocate one block per hash, cache them as a request's full blocks, return the block ids."""
    blocks = pool.allocate(len(hashes))
    pool.cache(blocks, np.array(hashes, dtype=np.uint64))
    return blocks


def test_initial_queue_is_block_order_and_counts():
    pool = BlockPool(5, block_size=4)
    assert pool.free_order() == [0, 1, 2, 3, 4]
    assert pool.num_free == 5 and pool.num_in_use == 0
    got = pool.allocate(2)
    assert got.tolist() == [0, 1]
    assert pool.num_free == 3 and pool.num_in_use == 2
    assert pool.ref_cnt.tolist() == [1, 1, 0, 0, 0]


def test_hit_reuses_blocks_and_is_capped_below_num_tokens():
    pool = BlockPool(8, block_size=4)
    blocks = _fill(pool, [10, 11, 12])
    pool.free(blocks)
    # 12 tokens = 3 full blocks, but at least one token must be computed: (12 - 1) // 4 = 2 blocks.
    assert pool.lookup([10, 11, 12], 12) == blocks[:2].tolist()
    assert pool.lookup([10, 11, 12], 13) == blocks.tolist()
    assert pool.query_tokens == 25 and pool.hit_tokens == 8 + 12
    # The walk stops at the first miss even if later hashes are cached.
    assert pool.lookup([10, 99, 12], 100) == blocks[:1].tolist()


def test_touch_takes_a_reference_and_unlinks_free_blocks():
    pool = BlockPool(4, block_size=4)
    blocks = _fill(pool, [1, 2])
    pool.free(blocks)
    assert pool.num_free == 4
    hit = np.array(pool.lookup([1, 2], 9), dtype=np.int32)
    assert pool.num_evictable(hit) == 2
    pool.touch(hit)
    assert pool.num_free == 2 and pool.ref_cnt[hit].tolist() == [1, 1]
    assert set(pool.free_order()).isdisjoint(hit.tolist())
    pool.touch(hit[:1])  # a second request sharing block 0
    pool.free(hit[:1])
    assert pool.num_free == 2  # still referenced once
    pool.free(hit)
    assert pool.num_free == 4


def test_lru_eviction_takes_the_last_block_of_the_earliest_freed_request_first():
    pool = BlockPool(4, block_size=4)
    a = _fill(pool, [100, 101])  # blocks 0, 1
    b = _fill(pool, [200, 201])  # blocks 2, 3
    pool.free(a)
    pool.free(b)
    # Reverse order per request, requests in the order they were freed.
    assert pool.free_order() == [a[1], a[0], b[1], b[0]]
    got = pool.allocate(1)
    assert got.tolist() == [a[1]] and pool.evictions == 1
    assert pool.lookup([100, 101], 100) == [a[0]]  # only the first block of A survives
    assert pool.lookup([200, 201], 100) == b.tolist()
    pool.allocate(1)
    assert pool.lookup([100, 101], 100) == [] and pool.evictions == 2


def test_uncached_free_blocks_are_reused_without_eviction():
    pool = BlockPool(3, block_size=4)
    blocks = pool.allocate(3)  # never full, never hashed
    pool.free(blocks)
    pool.allocate(3)
    assert pool.evictions == 0 and pool.num_cached == 0


def test_duplicate_hashes_survive_each_others_eviction():
    pool = BlockPool(3, block_size=4)
    first = _fill(pool, [7])
    second = _fill(pool, [7])  # another request computed the same block before either was cached
    assert pool.num_cached == 2
    pool.free(first)
    pool.free(second)
    assert pool.free_order() == [2, first[0], second[0]]
    pool.allocate(2)  # block 2, then `first`, which held the map's entry for hash 7
    assert pool.evictions == 1
    assert pool.lookup([7], 100) == [second[0]]
    # Evict everything; the hash must then miss.
    pool.allocate(pool.num_free)
    assert pool.lookup([7], 100) == [] and pool.num_cached == 0


def test_bad_sizes_are_input_errors():
    with pytest.raises(InputError, match="num_kv_blocks"):
        BlockPool(0)
    with pytest.raises(InputError, match="block_size"):
        BlockPool(4, block_size=0)


def _table(inputs, trace_hashes=None, hash_block_tokens=0):
    rows = empty_rows(len(inputs))
    rows["input_tokens"] = inputs
    rows["output_tokens"] = 1
    if trace_hashes is None:
        return RequestTable(rows)
    offsets = np.zeros(len(inputs) + 1, dtype=np.int64)
    np.cumsum([len(h) for h in trace_hashes], out=offsets[1:])
    flat = np.array([x for h in trace_hashes for x in h], dtype=np.uint64)
    return RequestTable(rows, offsets, flat, hash_block_tokens)


def test_trace_hashes_expand_to_32_chained_sub_blocks_and_tails_are_private():
    # Two requests share their first 512-token trace block and differ in the second.
    table = _table([600, 600, 600], [[5, 6], [5, 7], [5, 6]], hash_block_tokens=512)
    rh = RequestHashes(table, 16)
    a, b, c = (np.array(rh.first(r, 40), dtype=np.uint64) for r in range(3))
    assert np.array_equal(a[:32], b[:32])  # 512 / 16 = 32 shared sub-blocks
    assert not np.any(a[32:] == b[32:])
    # Identical prompts: the 600 // 16 = 37 full prompt blocks are shared, nothing after them.
    assert np.array_equal(a[:37], c[:37])
    assert not np.any(a[37:] == c[37:])
    assert len(set(a.tolist())) == 40  # a chain: every block hash differs
    # Prompt blocks are exactly the workload layer's re-blocked hashes.
    re = reblock(table, 16)
    assert np.array_equal(a[:37], re.hashes_of(0)[:37]) and np.array_equal(b[:37], re.hashes_of(1)[:37])


def test_table_without_hashes_shares_nothing():
    rh = RequestHashes(_table([64, 64]), 16)
    assert set(rh.first(0, 4)).isdisjoint(rh.first(1, 4))


def test_block_size_must_divide_the_trace_block():
    with pytest.raises(InputError, match="must divide"):
        RequestHashes(_table([600], [[1, 2]], hash_block_tokens=512), 48)
