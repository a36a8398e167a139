"""A Perfetto / Chrome trace of one run's engine steps (open in ui.perfetto.dev or chrome://tracing).

`chrome_trace(run)` returns the JSON object format: ``{"traceEvents": [...], "displayTimeUnit": "ms",
"otherData": {...}}``, times in microseconds of simulated time. One process (the run) with tracks:

- "steps": one complete ("X") event per engine step, args = its scheduling counters;
- "GPU GEMM", "GPU attention", "PIM attention", "PIM link", "all-reduce", "other": the step's time
  split by `STEP_PARTS`. Those are per-step totals over all layers, so each is drawn as one slice,
  the slices laid end to end inside the step in the chain order of `STEP_PARTS` (a drawing of the
  shares, not of when each layer's op ran); zero-length parts are left out;
- counters ("C"): batch size, KV blocks in use, waiting requests, sampled at each step's start.

Leaves out what `RunResult` does not hold: per-layer and per-unit ops, individual DMA transfers,
per-request spans. A does_not_fit run gives only the track names and its reason in otherData.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.results.result import STEP_PARTS, RunResult

PART_TRACKS = {
    "gemm_s": "GPU GEMM",
    "attention_gpu_s": "GPU attention",
    "attention_pim_s": "PIM attention",
    "pim_link_s": "PIM link",
    "allreduce_s": "all-reduce",
    "other_s": "other",
}
assert tuple(PART_TRACKS) == STEP_PARTS, "PART_TRACKS must follow result.STEP_PARTS"

COUNTERS = (("batch_size", "batch size", "sequences"), ("kv_blocks_in_use", "KV blocks in use", "blocks"),
            ("num_waiting", "waiting requests", "requests"))
STEP_ARGS = ("batch_size", "new_tokens", "output_tokens", "decode_seqs", "kv_blocks_in_use", "num_waiting",
             "preemptions", "prefix_hit_tokens")
PID = 1
STEPS_TID = 1


def chrome_trace(run: RunResult, max_steps: int | None = None) -> dict:
    """The trace of the first ``max_steps`` steps (all when None); see the module docstring.

    Raises ValueError if a step's parts do not sum to its duration (the engine's invariant).
    """
    steps = run.steps if max_steps is None else run.steps[:max_steps]
    events: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": run.name}},
    ]
    tracks = ["steps", *PART_TRACKS.values()]
    for i, label in enumerate(tracks):
        tid = STEPS_TID + i
        events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": label}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid, "args": {"sort_index": i}})

    start, end = steps["start_s"], steps["end_s"]
    dur = end - start
    parts = np.stack([steps[p] for p in STEP_PARTS], axis=1) if len(steps) else np.zeros((0, len(STEP_PARTS)))
    bad = ~np.isclose(parts.sum(axis=1), dur, rtol=1e-6, atol=1e-12)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"run {run.name!r} step {i}: parts sum to {parts[i].sum()} s, the step lasts {dur[i]} s")
    offsets = np.cumsum(parts, axis=1) - parts  # each part starts where the previous one ended

    ts_us = (start * 1e6).tolist()
    dur_us = (dur * 1e6).tolist()
    part_ts_us = ((start[:, None] + offsets) * 1e6).tolist()
    part_dur_us = (parts * 1e6).tolist()
    args_cols = {a: steps[a].tolist() for a in STEP_ARGS}
    counter_cols = {field: steps[field].tolist() for field, _, _ in COUNTERS}
    for i in range(len(steps)):
        events.append({"ph": "X", "name": f"step {i}", "cat": "step", "pid": PID, "tid": STEPS_TID,
                       "ts": ts_us[i], "dur": dur_us[i], "args": {a: args_cols[a][i] for a in STEP_ARGS}})
        for k, label in enumerate(PART_TRACKS.values()):
            if part_dur_us[i][k] > 0:
                events.append({"ph": "X", "name": label, "cat": "part", "pid": PID, "tid": STEPS_TID + 1 + k,
                               "ts": part_ts_us[i][k], "dur": part_dur_us[i][k], "args": {"step": i}})
        for field, label, unit in COUNTERS:
            events.append({"ph": "C", "name": label, "pid": PID, "ts": ts_us[i],
                           "args": {unit: counter_cols[field][i]}})
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"run": run.name, "status": run.status, "reason": run.reason,
                      "steps_shown": int(len(steps)), "steps_total": int(len(run.steps))},
    }


def write_chrome_trace(run: RunResult, path: str | Path, max_steps: int | None = None) -> Path:
    """Write `chrome_trace(run, max_steps)` as JSON to ``path`` atomically and return the path."""
    trace = chrome_trace(run, max_steps)
    path = Path(path)
    with atomic_write(path, mode="w", encoding="utf-8") as handle:
        json.dump(trace, handle, separators=(",", ":"))
    return path
