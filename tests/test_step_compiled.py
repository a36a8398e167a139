"""The step model's compiled path (`StepModel._compiled_step`) gives the numpy path's step.

Random batches over random KV placements (sequences wholly in one PIM unit, spread over several units,
partly or wholly in the capacity tier, newest block in either tier; contexts beyond the op table's top
size, so looked-up costs are split into pieces), decode-only and with prefill chunks, timed with
`compiled` on and off: same time, parts, action vector, attended counts and gathers (1e-12 relative).
Systems: TokenStack (PIM + capacity tiers), AttAcc (PIM device), uniform PIM, GPU only; options: packed
and serial PIM batching, roofline streams, sub-batch overlap, interleaved placement, two KV heads per
PIM stack. Op tables are synthetic (monotone times and counts on a grid), so nothing is characterized.
"""

import numpy as np
import pytest

from tokenstack_sim.hw.opcost.table import OpTable
from tokenstack_sim.hw.stack.energy import ACTIONS as STACK_ACTIONS
from tokenstack_sim.sim.engine import prepare, tiered_kv
from tokenstack_sim.sim.step_cost import EngineOptions, StepModel

N_REQ = 300


def fake_table(op_id: str, top: float, rng) -> OpTable:
    sizes = np.concatenate([[0.0], np.unique(np.round(np.geomspace(16, top, 60)))])
    t = np.concatenate([[0.0], 300.0 + np.cumsum(rng.uniform(0.01, 3.0, len(sizes) - 1)) * np.sqrt(sizes[1:])])
    acts = {a: np.concatenate([[0.0], np.cumsum(rng.uniform(0.0, 1e3, len(sizes) - 1))]) for a in STACK_ACTIONS}
    return OpTable(op_id, "tokens" if op_id.startswith(("attention", "pim:")) else "bytes", np.zeros(1),
                   [sizes], [t], sizes.copy(), acts)


def model(system, model_name="llama-3.1-8b", options=EngineOptions(), kv=None, seed=0):
    rng = np.random.default_rng(seed)
    prep = prepare(system, model_name, options=options, kv=kv, bind=False)
    sm = prep.step_model
    tables = {}
    for stack, op in sm.required_ops():
        k = sm.key(stack, op)
        tables[k] = fake_table(k, 3000.0 if op.kind == "attention" else 2.0**26, rng)
    sm.bind(tables)
    sm.kv = tiered_kv(prep, N_REQ)
    return sm


def place(sm, rng):
    """Random block counts per request: one unit, several units, capacity only, or a mix."""
    kv = sm.kv
    kv.pim_cnt[:] = 0
    kv.cap_cnt[:] = 0
    Uk = kv.pim_cnt.shape[1]
    for r in range(N_REQ):
        kind = rng.integers(0, 4) if kv.U else 2
        n = int(rng.integers(2, 400))
        if kind == 0:
            kv.pim_cnt[r, rng.integers(0, Uk)] = n
        elif kind == 1:
            kv.pim_cnt[r] = rng.integers(0, n, Uk) * (rng.random(Uk) < 0.6)
        elif kind == 2:
            kv.cap_cnt[r] = n
        else:
            kv.pim_cnt[r] = rng.integers(0, n, Uk) * (rng.random(Uk) < 0.5)
            kv.cap_cnt[r] = rng.integers(1, n)
        kv.last_loc[r] = rng.integers(-1, kv.U + 1)  # -1: none yet, kv.U: the capacity tier


def batches(rng, n=40):
    for i in range(n):
        B = int(rng.choice([1, 2, 3, 5, 8, 13, 40, 100, 250]))
        ids = rng.choice(N_REQ, B, replace=False).astype(np.int64)
        blocks_ctx = rng.integers(0, 9000, B).astype(np.int64)
        new = np.ones(B, np.int64)
        if i % 4 == 3:  # prefill chunks among the decodes
            new[rng.integers(0, B, 1 + B // 4)] = rng.integers(2, 600, 1 + B // 4)
        emits = rng.random(B) < 0.9
        yield ids, new, blocks_ctx, emits


def run_both(sm, rng, taken):
    n0 = len(taken)
    for ids, new, ctx, emits in batches(rng):
        out = []
        for compiled in (True, False):
            sm.compiled = compiled
            r = sm.step(new, ctx, emits, 1000, request_ids=ids)
            out.append((r, sm.last_gathers))
        sm.compiled = True
        (tf, pf, vf, af, apf), gf = out[0]
        (ts, ps, vs, as_, aps), gs = out[1]
        assert tf == pytest.approx(ts, rel=1e-12, abs=0)
        np.testing.assert_allclose(pf, ps, rtol=1e-12, atol=0)
        np.testing.assert_allclose(vf, vs, rtol=1e-12, atol=0)
        assert af == pytest.approx(as_, rel=1e-12, abs=0) and apf == pytest.approx(aps, rel=1e-12, abs=0)
        assert gf == gs
    assert len(taken) - n0 >= 40 and all(taken)  # the compiled path ran, on every batch


@pytest.mark.parametrize("system, model_name, options, kv", [
    ("tokenstack-hbm4", "llama-3.1-8b", EngineOptions(), None),
    ("tokenstack-hbm4", "llama-3.1-8b", EngineOptions(pim_batching="serial"), None),
    ("tokenstack-hbm4", "llama-3.1-8b", EngineOptions(memory_timing="roofline"), None),
    ("tokenstack-hbm4", "llama-3.1-8b", EngineOptions(overlap="sub_batch"), None),
    ("tokenstack-hbm4", "llama-3.1-8b", EngineOptions(), {"placement": "interleaved"}),
    ("tokenstack-hbm4", "opt-66b", EngineOptions(), None),
    ("attacc-hbm4", "llama-3.1-8b", EngineOptions(), None),
    ("attacc-hbm4", "llama-65b", EngineOptions(overlap="sub_batch"), None),
    ("uniform-pim-hbm4", "llama-3.1-8b", EngineOptions(), None),
    ("gpu-hbm4", "llama-3.1-8b", EngineOptions(), None),
])
def test_compiled_path_equals_numpy_path(system, model_name, options, kv, monkeypatch):
    taken = []
    orig = StepModel._compiled_step

    def counted(self, *a):
        r = orig(self, *a)
        taken.append(r is not None)
        return r

    monkeypatch.setattr(StepModel, "_compiled_step", counted)
    sm = model(system, model_name, options, kv)
    rng = np.random.default_rng(7)
    for _ in range(3):
        place(sm, rng)
        run_both(sm, rng, taken)
