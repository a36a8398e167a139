"""AttAcc-style pipelining (EngineOptions(overlap="attacc_pipeline"), StepModel._pipelined).

Roofline memory timing and the synthetic op tables of tests/test_step_compiled.py, so the split GEMMs'
costs can be computed by hand: h = query heads per GPU pieces of each layer's QKV and out_proj GEMMs, each
a kernel launch; QKV's input read by every piece; out_proj's partial sums read and written by every piece
after the first; the weights sliced by head (read once). GPT-3 175B on 8 GPUs: h = 96 / 8 = 12.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_step_compiled as tsc  # noqa: E402  (its fake op tables and model builder)

from tokenstack_sim.errors import InputError  # noqa: E402
from tokenstack_sim.sim.step_cost import _GPU_RD, OFFSET, EngineOptions, action_slot  # noqa: E402

B = 64


def decode_step(system, overlap, ctx, new=None, model="gpt-3-175b"):
    sm = tsc.model(system, model, EngineOptions(overlap=overlap, memory_timing="roofline"))
    kv = sm.kv
    ids = np.arange(B, dtype=np.int64)
    kv.pim_cnt[:] = 0
    kv.cap_cnt[:] = 0
    if kv.U:
        for i in range(B):
            kv.pim_cnt[i, i % kv.pim_cnt.shape[1]] = ctx // 16
        kv.last_loc[:B] = 0
    else:
        kv.cap_cnt[:B] = ctx // 16
    new = np.ones(B, np.int64) if new is None else new
    t, parts, vec, _, _ = sm.step(new, np.full(B, ctx, np.int64), np.ones(B, bool), 1000, request_ids=ids)
    return sm, t, parts, vec


def split_cost_by_hand(sm, tokens):
    """Extra seconds and bytes of the h-piece split of QKV and out_proj, all layers, roofline."""
    cfg, gpu = sm.cfg, sm.gpu
    L, h, tp = cfg.num_layers, sm.im.hq, sm.system.tp
    d, ab = cfg.hidden_size, sm.im.ab
    extra_bytes = 3 * (h - 1) * tokens * d * ab * L  # QKV input re-read; out_proj partial sums read + written
    bw = sm.system.gpu_bw_GBps * 1e9 * sm._eta_bw
    return 2 * (h - 1) * L * gpu.launch_overhead_s + extra_bytes / bw, extra_bytes, h, tp


@pytest.mark.parametrize("system", ["attacc-hbm4", "tokenstack-hbm4"])
def test_pipelining_hides_the_shorter_side_and_charges_the_split(system):
    # context where the PIM attention matches the split GEMMs (GPU and PIM balanced)
    sm0, t0, p0, v0 = decode_step(system, "none", 2048)
    f_whole, f_split, _ = sm0._pipe_part(B, B)
    extra_s, extra_bytes, h, _ = split_cost_by_hand(sm0, B)
    assert f_split - f_whole == pytest.approx(extra_s, rel=1e-9)  # memory-bound pieces: launches + bytes
    ctx = int(2048 * f_split / p0[2])  # attention time grows with the context: A ~ F_split
    sm0, t0, p0, v0 = decode_step(system, "none", ctx)
    sm1, t1, p1, v1 = decode_step(system, "attacc_pipeline", ctx)
    a, x, r = p0[2], p0[3], 1.0 / h
    assert 0.7 < a / f_split < 1.4
    # AttAcc's simulator (src/system.py _pipeline, level=True): the longer side plus 1/h of the shorter
    if a > f_split:
        chain = a + r * f_split + (r * x if a > x else x - a * (1 - r))
    else:
        chain = f_split - (1 - r) * a + a + (r * x if f_split > x else x - a * (1 - r))
    want = t0 - (f_whole + a + x) + chain
    assert t1 == pytest.approx(want, rel=1e-9) and t1 < t0
    assert p1[2] == p0[2] and p1[1] == p0[1] and p1[4] == p0[4]  # attention, all-reduce untouched
    # charged: exactly the extra activation bytes; the weights are not read twice
    o = OFFSET["gpu_stacks"]
    n = len(_GPU_RD)
    g = sm0.system.gpus
    np.testing.assert_allclose(v1[o:o + n] - v0[o:o + n], extra_bytes * 8 * g * _GPU_RD, rtol=1e-9, atol=1e-3)
    l2 = action_slot("gpu", "l2_bytes")
    assert v1[l2] - v0[l2] == pytest.approx(extra_bytes * g, rel=1e-9)
    flops = [i for i in range(len(v0)) if i not in (l2,) and not (o <= i < o + n)]
    np.testing.assert_array_equal(v1[flops], v0[flops])


def test_pipelining_never_slows_a_step_and_is_inert_without_pim_attention():
    # short contexts: the split's launches cost more than the little attention they would hide
    _, t0, p0, v0 = decode_step("tokenstack-hbm4", "none", 64)
    _, t1, p1, v1 = decode_step("tokenstack-hbm4", "attacc_pipeline", 64)
    assert t1 == t0 and p1 == p0 and np.array_equal(v1, v0)
    # GPU only: no PIM attention to overlap with
    _, t0, p0, v0 = decode_step("gpu-hbm4", "none", 4096)
    _, t1, p1, v1 = decode_step("gpu-hbm4", "attacc_pipeline", 4096)
    assert t1 == t0 and p1 == p0 and np.array_equal(v1, v0)


def test_unknown_overlap_lists_the_pipeline():
    with pytest.raises(InputError) as e:
        EngineOptions(overlap="pipeline")
    assert e.value.where == "overlap" and "attacc_pipeline" in str(e.value)
