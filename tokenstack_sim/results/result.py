"""The in-memory result of one serving run, and of a collection of runs (seeds, load points, systems).

A `RunResult` is what `tokenstack run` produces for one (system, model, workload, load, seed) and what
the HDF5 file stores (`results/h5.py`), the reports read (`results/report.py`) and the timeline draws
(`results/timeline.py`). Everything in it is a plain number, string, dict or numpy structured array, so
the same seed gives equal content apart from `provenance`.

Fields
- `name`: a label unique within a file, e.g. "tokenstack-hbm4/llama-3.1-70b/azure-conv-like/q2.00/s0".
- `status`: "ok", or "does_not_fit" (the weights do not fit the system; `reason` says by how much; the
  arrays are then empty and `summary` holds only what was known).
- `params`: the inputs that define the run (system, model, workload names, qps, duration_s, seed,
  warmup_frac, drain_frac, slo_ttft_s, slo_tpot_s, scheduler parameters, engine options).
- `configs`: name -> resolved config as JSON text (the system with every preset it names, the model,
  the workload), so a file alone says what was simulated.
- `provenance`: package version, git revision, creation time (UTC), host. Excluded from equality.
- `requests`: one row per request (`REQUEST_DTYPE`).
- `steps`: one row per engine step (`STEP_DTYPE`): scheduling counters and the step's time split by
  part of the per-layer chain.
- `actions`: component -> structured array, one row per step, one float64 column per counted action
  (units in the column names), e.g. actions["gpu"]["flops_bf16"], actions["gpu_stacks"]["dram_act"].
- `energy_pj`: component -> action -> total pJ over the run, including "static" (power x time).
- `summary`: flat dict of the headline metrics (throughputs, TTFT/TPOT/E2E stats, SLO attainment,
  energy per output token, PIM attention share, preemptions, KV use); see `sim/engine.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tokenstack_sim.runtime.serve_loop import REQUEST_RESULT_DTYPE
from tokenstack_sim.runtime.serve_loop import STEP_DTYPE as SERVE_STEP_DTYPE

SCHEMA_VERSION = 2  # 2: steps gained kv_migration_s and the KV placement fields
STATUSES = ("ok", "does_not_fit")

# The serve loop's per-request and per-step rows, extended with what the engine adds.
REQUEST_DTYPE = np.dtype(REQUEST_RESULT_DTYPE.descr + [
    ("slo_met", np.bool_),  # TTFT <= slo_ttft_s and TPOT <= slo_tpot_s (TPOT only with >= 2 outputs)
])

# Parts of one step's time, in the order of the per-layer chain; they sum to end_s - start_s.
STEP_PARTS = ("gemm_s", "attention_gpu_s", "attention_pim_s", "pim_link_s", "allreduce_s", "other_s",
              "kv_migration_s")  # the base-die DMA of KV moved between tiers (0 with migration_timing hidden)
# Where KV blocks are and what moved, per step (one GPU shard; sim/step_cost.py KV_FIELDS): sequences'
# partial results merged across PIM units, blocks demoted / promoted / replicated in the step, blocks in
# the PIM units and the capacity tier, replica copies.
KV_FIELDS = ("kv_gathers", "kv_demoted_blocks", "kv_promoted_blocks", "kv_replicated_blocks",
             "kv_pim_blocks", "kv_capacity_blocks", "kv_replica_blocks")

STEP_DTYPE = np.dtype(SERVE_STEP_DTYPE.descr + [
    ("decode_seqs", np.int64),  # sequences with one new token
    ("kv_tokens_attended", np.float64),  # context tokens read by attention, all layers of one shard
    ("kv_tokens_attended_pim", np.float64),  # of which by PIM units
] + [(p, np.float64) for p in STEP_PARTS] + [(k, np.float64) for k in KV_FIELDS])


@dataclass
class RunResult:
    name: str
    status: str
    params: dict
    configs: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    reason: str = ""
    requests: np.ndarray = field(default_factory=lambda: np.zeros(0, REQUEST_DTYPE))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, STEP_DTYPE))
    actions: dict = field(default_factory=dict)  # component -> structured array (one row per step)
    energy_pj: dict = field(default_factory=dict)  # component -> action -> pJ
    summary: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def same_content(self, other: "RunResult") -> bool:
        """Equal apart from provenance (the determinism contract)."""
        if (self.name, self.status, self.reason) != (other.name, other.status, other.reason):
            return False
        if self.params != other.params or self.configs != other.configs:
            return False
        if not _dicts_close(self.summary, other.summary):
            return False
        if self.energy_pj != other.energy_pj:
            return False
        if not (_tables_equal(self.requests, other.requests) and _tables_equal(self.steps, other.steps)):
            return False
        if self.actions.keys() != other.actions.keys():
            return False
        return all(_tables_equal(self.actions[k], other.actions[k]) for k in self.actions)


def _tables_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal structured arrays (same fields, dtypes and rows) where NaN equals NaN.

    ``np.array_equal(..., equal_nan=True)`` cannot be used: ``isnan`` is undefined on structured dtypes.
    """
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.names is None:
        return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    return all(_tables_equal(a[name], b[name]) for name in a.dtype.names)


def _dicts_close(a: dict, b: dict) -> bool:
    """Equal dicts where NaN equals NaN (a summary may hold NaN for empty statistics)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict) and isinstance(y, dict):
            if not _dicts_close(x, y):
                return False
        elif isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y):
            continue
        elif x != y:
            return False
    return True
