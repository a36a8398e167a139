"""The base die's DMA engine throughput cap, `basedie.dma_GBps` (hw/stack/dma.py):

- a cap well below what the channels serve makes a DMA take ~bytes / cap, both as `tokenstack op --op dma`
  times it (opcost.simulate_op: one channel's share, period = access x channels / cap) and as a whole-stack
  run (one stream over every channel, period = access / cap); jobs of one run share the cap;
- a cap far above the channels leaves the time unchanged; unset (the default) adds nothing to the streams;
- bad values are refused naming the key and the range; the op-cost cache key follows the field;
- it is reachable as a system override (run --set, sweep [params]).
"""

from __future__ import annotations

import pytest

from tokenstack_sim.config.loader import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.opcost import OpSpec, cache
from tokenstack_sim.hw.opcost.simulate import simulate_op
from tokenstack_sim.hw.stack.dma import DMA_READ, DmaJob, build_streams, read_period_cycles, stream_params
from tokenstack_sim.hw.stack.run import run_stack

pytestmark = pytest.mark.unit

TS = "hbm4-12h-tokenstack"
DEMOTE = OpSpec("dma", src="pim", dst="capacity", fmt="int8")  # the `tokenstack op --op dma` default
NBYTES = 1 << 20  # per stack; the slice moves 32 KiB on one of 32 channels


@pytest.fixture(scope="module", autouse=True)
def _warm(dram_warm):
    return dram_warm


def stack(*ov):
    return load_config(TS, list(ov), kind="stack")


def op_ns(*ov, nbytes=NBYTES):
    return simulate_op(stack(*ov), DEMOTE, float(nbytes), 0.0)[0]


@pytest.mark.parametrize("cap", [8.0, 64.0])
def test_a_low_cap_makes_the_dma_take_bytes_over_cap(cap):
    # uncapped this DMA runs at ~780 GB/s (1.35 us); capped at 64: 16.40 us for 16.38 expected
    t = op_ns(f"basedie.dma_GBps={cap:g}")
    assert t == pytest.approx(NBYTES / cap, rel=0.03)


def test_a_cap_far_above_the_channels_changes_nothing():
    free = op_ns()
    assert op_ns("basedie.dma_GBps=100000") == pytest.approx(free, rel=0.01)
    assert NBYTES / free < 2048  # the stack's peak: the cap above really is far above


def test_a_whole_stack_dma_and_jobs_of_one_run_share_the_cap():
    st = stack("basedie.dma_GBps=64")
    one = DmaJob(NBYTES, src="pim", dst="capacity", fmt="int8")
    assert run_stack(st, dma=[one]).dma_time_ns == pytest.approx(NBYTES / 64, rel=0.03)
    assert run_stack(st, dma=[one, one]).dma_time_ns == pytest.approx(2 * NBYTES / 64, rel=0.03)
    # the period per read: a whole DMA access / cap; one of the 32 channels access x 32 / cap
    acc, tck = st.dram.access_bytes, st.dram.tck_ns
    assert read_period_cycles(st, one) == pytest.approx(acc / 64 / tck)
    assert read_period_cycles(st, DmaJob(4096, src="pim", dst="capacity", channels=(0,))) == \
        pytest.approx(acc * 32 / 64 / tck)


def test_the_default_is_no_cap_and_adds_nothing():
    st = stack()
    assert st.config.basedie.dma_GBps is None
    job = DmaJob(NBYTES, src="pim", dst="capacity", fmt="int8")
    assert read_period_cycles(st, job) == 0.0
    s = build_streams(st, None, [job])
    assert not s.arrive[s.kind == DMA_READ].any()  # no not-before times on the reads
    assert not stream_params(st, [job])[DMA_READ, 2]  # and no entry spacing


@pytest.mark.parametrize("value", ["0", "-64", "4", "2e6", "nan", "inf"])
def test_bad_values_name_the_key_and_the_range(value):
    with pytest.raises(InputError) as info:
        stack(f"basedie.dma_GBps={value}")
    assert info.value.where == "basedie.dma_GBps"
    assert "from 8 to 1,000,000" in info.value.message and "unset for no cap" in info.value.message
    with pytest.raises(InputError, match="expected a number"):
        stack('basedie.dma_GBps="fast"')


def test_the_op_cost_cache_key_follows_the_cap():
    grid = {"sizes": [4096.0, 8192.0], "shares": [0.0]}

    def key(*ov):
        return cache.op_key(stack(*ov), DEMOTE, grid, sources_hash="S")

    assert key() != key("basedie.dma_GBps=64") != key("basedie.dma_GBps=128")
    assert key("basedie.dma_GBps=64") == key("basedie.dma_GBps=64")


def test_reachable_from_a_system_and_a_sweep_parameter():
    from tokenstack_sim.sweep.overrides import system_overrides

    s = load_config("tokenstack-hbm4", ["gpu_stack.basedie.dma_GBps=256"], kind="system")
    assert s.gpu_stack.config.basedie.dma_GBps == 256.0
    sets = system_overrides("tokenstack-hbm4", {"gpu_stack.basedie.dma_GBps": 64})
    s = load_config("tokenstack-hbm4", sets, kind="system")
    assert s.gpu_stack.config.basedie.dma_GBps == 64.0
    with pytest.raises(InputError) as info:
        load_config("tokenstack-hbm4", ["gpu_stack.basedie.dma_GBps=0"], kind="system")
    assert "dma_GBps" in str(info.value) and "from 8 to 1,000,000" in str(info.value)


def test_one_channel_slice_gets_its_channels_quantizers():
    """The quantizers sit per channel: the op-cost slice (one channel) is spaced by that channel's, not the
    stack's (it was 32x too fast there, so the quantizer knobs barely moved op costs: 1.37 vs 17.5 us)."""
    few = ("basedie.quant_units_per_channel=1", "basedie.quant_lanes=1")
    slice_ns = op_ns(*few)
    whole_ns = run_stack(stack(*few), dma=[DmaJob(NBYTES, src="pim", dst="capacity", fmt="int8")]).dma_time_ns
    assert slice_ns == pytest.approx(whole_ns, rel=0.1)
    assert slice_ns > 5 * op_ns()  # quantizer-bound with one lane per channel
