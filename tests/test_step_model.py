"""Unit checks of the step model's pieces that need no characterized costs."""

import numpy as np
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.sim.step_cost import EngineOptions, pim_packed_load


def test_packed_load_splits_few_items_minimax():
    load, rounds = pim_packed_load(np.array([100.0, 50.0]), 4)  # 2 + 1 slices of 50 fit 4 scopes; 40 needs 5
    assert load == pytest.approx(50.0, rel=1e-9) and rounds == 1
    load, _ = pim_packed_load(np.array([64.0] * 4), 4)  # one item a scope
    assert load == pytest.approx(64.0, rel=1e-9)


def test_packed_load_deals_many_items_in_snake_order():
    load, rounds = pim_packed_load(np.array([5.0, 4, 3, 2, 1, 0.5]), 3)  # [5,4,3] + [0.5,1,2] -> 5.5
    assert load == 5.5 and rounds == 2
    load, rounds = pim_packed_load(np.full(8, 10.0), 4)
    assert load == 20.0 and rounds == 2
    assert pim_packed_load(np.zeros(0), 4) == (0.0, 0)


@pytest.mark.parametrize("field, value", [("memory_timing", "exact"), ("pim_batching", "greedy"),
                                          ("allreduce", "tree"), ("step_overhead_s", -1.0)])
def test_engine_options_refuse_bad_values(field, value):
    with pytest.raises(InputError) as e:
        EngineOptions(**{field: value})
    assert e.value.where == field


def test_packed_load_of_few_items_is_the_least_feasible_load():
    """Against a plain bisection on 'sum ceil(t_i / L) <= n' (the definition)."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(2, 70))
        items = rng.uniform(1, 3000, int(rng.integers(1, n)))
        lo, hi = items.sum() / n, items.max()
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if np.ceil(items / mid).sum() <= n else (mid, hi)
        assert pim_packed_load(items, n)[0] == pytest.approx(hi, rel=1e-9)
