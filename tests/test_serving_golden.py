"""Golden summaries of short serving runs: the engine's hot paths (scheduler, tiered KV placement and
eviction, compiled step model) give the committed numbers when they are rewritten for speed.

Each case serves 400 requests of azure-conv-like (synthetic, seed 0) on a system whose op tables are
synthetic (tests/test_step_compiled.py `fake_table`, seeded), so nothing is characterized and changes to
characterization do not move the figures; a small `kv_blocks` keeps the PIM tier full (demotions,
prefix-cache drops, spills, promotions). The summaries in tests/golden/serving_short.json were written
by this file's `main()` with the code before the speed work of issue 7 (kv/tiered.py allocation path),
and rewritten when placement and promotion began to count the slots of stale prefix-cache entries as room
(the TokenStack cases: promotions 10 -> 1,586 and 101 -> 8,678, PIM share of attention 0.251 -> 0.269
and 0.392 -> 0.424; AttAcc's unchanged); integers must match exactly, floats to 1e-9 relative (another CPU
may round a last bit differently).

    python tests/test_serving_golden.py   # rewrites the golden file (only when a change is meant)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_step_compiled as tsc  # noqa: E402  (its fake op tables)

from tokenstack_sim.sim.engine import RunSpec, prepare, run_prepared  # noqa: E402
from tokenstack_sim.workload.source import load_workload  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "serving_short.json"
CASES = {  # name: (system, model, kv_blocks, kv policy)
    "tokenstack-70b-tight": ("tokenstack-hbm4", "llama-3.1-70b", 6000, None),
    "tokenstack-8b-lru-rr": ("tokenstack-hbm4", "llama-3.1-8b", 3000, {"eviction": "lru", "placement": "round-robin"}),
    "attacc-70b": ("attacc-hbm4", "llama-3.1-70b", 6000, None),
}


def run_case(name: str) -> dict:
    system, model_name, kv_blocks, kv = CASES[name]
    prep = prepare(system, model_name, kv_blocks=kv_blocks, kv=kv, bind=False)
    sm = prep.step_model
    rng = np.random.default_rng(5)
    tables = {}
    for stack, op in sm.required_ops():
        k = sm.key(stack, op)
        tables[k] = tsc.fake_table(k, 3000.0 if op.kind == "attention" else 2.0**26, rng)
    sm.bind(tables)
    table = load_workload("azure-conv-like", max_requests=400, seed=0)
    r = run_prepared(prep, RunSpec(workload="azure-conv-like", max_requests=400), table=table)
    assert r.status == "ok"
    return {k: v for k, v in r.summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@pytest.mark.golden
@pytest.mark.parametrize("name", sorted(CASES))
def test_short_run_matches_golden_summary(name):
    want = json.loads(GOLDEN.read_text())[name]
    got = run_case(name)
    assert sorted(got) == sorted(want), "summary fields changed"
    assert want["steps"] > 1000  # the runs reach the paths they guard
    assert want["kv_demotions"] > 0 or not CASES[name][0].startswith("tokenstack")
    for k, w in want.items():
        g = got[k]
        if isinstance(w, int):
            assert g == w, k
        elif math.isnan(w):
            assert math.isnan(g), k
        else:
            assert g == pytest.approx(w, rel=1e-9, abs=1e-12), k


def main() -> None:
    out = {name: run_case(name) for name in sorted(CASES)}
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}: " + ", ".join(f"{n}: {v['steps']} steps, {v['kv_demotions']} demotions" for n, v in out.items()))


if __name__ == "__main__":
    main()
