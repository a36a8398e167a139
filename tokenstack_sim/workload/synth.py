"""Synthetic request tables from a `WorkloadSpec`: seeded, vectorized, reproducible.

Independent streams of one ``SeedSequence(seed)`` drive arrivals, input lengths, output lengths and the
prefix model, so changing one section of a spec leaves the draws of the others unchanged.
"""

from __future__ import annotations

import numpy as np

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.arrivals import sample_arrivals_s
from tokenstack_sim.workload.prefix_model import add_prefix_structure
from tokenstack_sim.workload.spec import WorkloadSpec
from tokenstack_sim.workload.table import RequestTable, empty_rows, validate


def synthesize(spec: WorkloadSpec, requests: int, seed: int) -> RequestTable:
    if requests < 1:
        raise InputError(f"requests must be >= 1, got {requests}", where="requests")
    arrival_seq, input_seq, output_seq, prefix_seq = np.random.SeedSequence(seed).spawn(4)
    rows = empty_rows(requests)
    arrivals = spec.arrivals
    rows["arrival_s"] = sample_arrivals_s(
        np.random.default_rng(arrival_seq), requests, arrivals.family, arrivals.rate_qps, arrivals.cv
    )
    rows["input_tokens"] = spec.input_tokens.sample(np.random.default_rng(input_seq), requests)
    rows["output_tokens"] = spec.output_tokens.sample(np.random.default_rng(output_seq), requests)
    meta = {"format": "synthetic", "spec": spec.name, "spec_source": spec.source, "seed": seed}
    table = RequestTable(rows, meta=meta)
    if spec.prefix is not None:
        prefix_seed = int(np.random.default_rng(prefix_seq).integers(2**63))
        table = add_prefix_structure(table, spec.prefix, prefix_seed)
    validate(table)
    return table
