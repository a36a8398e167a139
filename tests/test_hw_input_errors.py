"""Bad user input to the link and GPU roofline models is an InputError naming the argument."""

import numpy as np
import pytest

from tokenstack_sim.config import load_config
from tokenstack_sim.errors import InputError
from tokenstack_sim.hw.gpu import attention_pairs, attention_time_s, gemm_counts, gemm_time_s
from tokenstack_sim.hw.link import (allreduce_link_bytes, allreduce_time_s, link_energy_pj, transfer_link_bytes,
                                    transfer_time_s)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def link():
    return load_config("nvlink4")


@pytest.fixture(scope="module")
def h100():
    return load_config("h100-sxm")


@pytest.mark.parametrize("call", [
    lambda l: transfer_time_s(l, -1.0),
    lambda l: transfer_time_s(l, np.array([1e6, -5.0])),
    lambda l: transfer_link_bytes(-1.0),
    lambda l: allreduce_time_s(l, -8e6, 8),
    lambda l: allreduce_link_bytes(np.array([-1.0]), 2),
    lambda l: link_energy_pj(l, -1.0),
    lambda l: transfer_time_s(l, float("nan")),
])
def test_link_refuses_negative_bytes(link, call):
    with pytest.raises(InputError, match=">= 0") as exc:
        call(link)
    assert exc.value.where in ("nbytes", "link_bytes")


@pytest.mark.parametrize("tp", [0, -2, 2.5])
def test_link_refuses_a_bad_tensor_parallel_degree(link, tp):
    for fn in (lambda: allreduce_time_s(link, 1e6, tp), lambda: allreduce_link_bytes(1e6, tp)):
        with pytest.raises(InputError, match="integer >= 1") as exc:
            fn()
        assert exc.value.where == "tp"


def test_zero_bytes_still_cost_nothing(link):
    assert transfer_time_s(link, 0.0) == 0.0
    assert allreduce_time_s(link, 0.0, 8) == 0.0


@pytest.mark.parametrize("m, n, k, where", [(0, 1, 1, "m"), (1, 0.5, 1, "n"), (1, 1, -3, "k")])
def test_gemm_refuses_dimensions_below_one(h100, m, n, k, where):
    with pytest.raises(InputError, match=">= 1") as exc:
        gemm_counts(m, n, k, "bf16")
    assert exc.value.where == where
    with pytest.raises(InputError):
        gemm_time_s(h100, m, n, k, "bf16", 3352)


def test_attention_refuses_bad_token_counts(h100):
    with pytest.raises(InputError) as exc:
        attention_pairs(0, 10)
    assert exc.value.where == "q_tokens"
    with pytest.raises(InputError) as exc:
        attention_pairs(np.array([4, 8]), np.array([4, 7]))
    assert exc.value.where == "context_tokens"
    with pytest.raises(InputError, match="no sequence") as exc:
        attention_time_s(h100, np.ones(2), np.full(2, 64), n_heads_q=8, n_heads_kv=8, head_dim=128, dtype="bf16",
                         mem_bw_GBps=3352, kernel_of=np.array([0, 2]))
    assert exc.value.where == "kernel_of"
