"""A Perfetto / Chrome trace of one run's engine steps, per unit (open in ui.perfetto.dev or chrome://tracing).

`chrome_trace(run)` returns the JSON object format: ``{"traceEvents": [...], "displayTimeUnit": "ms",
"otherData": {...}}``, times in microseconds of simulated time. One process (the run) with tracks:

- "steps": one complete ("X") event per engine step, args = its scheduling counters;
- one track per unit that does the step's work, fed by the step's time parts (`result.STEP_PARTS`):
  "GPU compute" (GEMMs, attention over KV in GPU-attached tiers, embedding + step overhead), "PIM units"
  (decode attention on PIM), "PIM link" (AttAcc's GPU <-> PIM-device transfers), "GPU link" (the
  tensor-parallel all-reduce / all-gather) and "DMA" (the base die's KV migration between tiers, part
  `kv_migration_s`, or a part named `migration_s` / `dma_s`). A part whose name is not in `PART_UNITS`
  gets a track of its own named after it, so a part added to the step records shows up without a change
  here;
- counters ("C"): batch size, KV blocks in use, waiting requests, sampled at each step's start.

What the slices mean. A step's parts are totals over all layers; the per-layer chain (qkv -> attention
-> out_proj -> all-reduce -> FFN -> all-reduce) runs its ops one after another within a step, so the
parts sum to the step's duration (checked) and laying them end to end inside the step, one slice per part
in `STEP_PARTS` order, never shows two units busy at once when they were not. The slices are exact in
length and in which unit worked; their placement is a drawing: the ~L-fold interleaving of the layers
(GEMM, attention, all-reduce, GEMM, ... per layer) is collapsed into one slice per part. With
`--overlap sub_batch` the GPU and the PIM units do work at once; the engine then reports the parts scaled
to the overlapped step time (sim/step_cost.py), so the slices are shares of the step, not a schedule
(otherData["overlap"] says which); with `--overlap attacc_pipeline` the hidden time comes off the GEMM
and PIM-link parts.

Size. A million-step run would give a JSON of ~1.3 GB; `chrome_trace` takes a window of simulated time
(`start_s` <= step start < `end_s`) and at most `max_steps` steps of it (the first ones); the CLI caps at
`DEFAULT_MAX_STEPS` unless told otherwise. otherData states the steps in the run, in the window, shown,
and whether the cap cut the window.

Leaves out what `RunResult` does not hold: per-layer ops, per-PIM-unit or per-stack work (one PIM track
for all units), individual DMA transfers, per-request spans, and the DMA that hides under compute (a
`kv_migration_s` of 0 with hidden migration timing draws nothing). A does_not_fit run gives only the
track names and its reason in otherData.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.errors import InputError
from tokenstack_sim.results.result import STEP_PARTS, RunResult

DEFAULT_MAX_STEPS = 10_000  # ~12 MB of JSON (measured on attacc-hbm4, ~1.3 kB a step); the CLI default cap
# Units, in track order
UNITS = ("GPU compute", "PIM units", "PIM link", "GPU link", "DMA")
# Step part -> (unit track, slice name). Parts not listed get a track of their own.
PART_UNITS = {
    "gemm_s": ("GPU compute", "GEMMs (all layers + LM head)"),
    "attention_gpu_s": ("GPU compute", "attention (KV in GPU-attached tiers)"),
    "attention_pim_s": ("PIM units", "decode attention"),
    "pim_link_s": ("PIM link", "q, new K/V, outputs over the PIM link"),
    "allreduce_s": ("GPU link", "all-reduce / all-gather"),
    "other_s": ("GPU compute", "embedding + step overhead"),
    "kv_migration_s": ("DMA", "KV migration (base-die DMA)"),
    "migration_s": ("DMA", "KV migration (base-die DMA)"),
    "dma_s": ("DMA", "DMA"),
}

COUNTERS = (("batch_size", "batch size", "sequences"), ("kv_blocks_in_use", "KV blocks in use", "blocks"),
            ("num_waiting", "waiting requests", "requests"))
STEP_ARGS = ("batch_size", "new_tokens", "output_tokens", "decode_seqs", "kv_blocks_in_use", "num_waiting",
             "preemptions", "prefix_hit_tokens")
PID = 1
STEPS_TID = 1


def unit_of(part: str) -> tuple[str, str]:
    """(track, slice name) of a step part: its unit when known, else a track named after the part."""
    if part in PART_UNITS:
        return PART_UNITS[part]
    name = part.removesuffix("_s")
    return name, name


def tracks_of(parts) -> list[str]:
    """Track names in order: "steps", the known units that some part feeds, then unknown parts' tracks."""
    fed = [unit_of(p)[0] for p in parts]
    return ["steps", *[u for u in UNITS if u in fed], *dict.fromkeys(t for t in fed if t not in UNITS)]


def select_steps(run: RunResult, max_steps: int | None = None, start_s: float | None = None,
                 end_s: float | None = None) -> tuple[int, int, int]:
    """(first index, end index, steps in the window) of the steps drawn: those starting in
    [start_s, end_s), at most the first `max_steps` of them (None or 0: no cap). Bad bounds are refused by
    the option that set them."""
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
                                  or max_steps < 0):
        raise InputError(f"expected a whole number of steps >= 0 (0: no cap), got {max_steps!r}", where="--max-steps")
    for name, v in (("--start", start_s), ("--end", end_s)):
        if v is not None and not math.isfinite(v):
            raise InputError(f"expected a finite time in seconds, got {v!r}", where=name)
    if start_s is not None and end_s is not None and not end_s > start_s:
        raise InputError(f"expected an end after the start ({start_s:g} s), got {end_s:g} s", where="--end")
    t = run.steps["start_s"]
    lo = 0 if start_s is None else int(np.searchsorted(t, start_s, side="left"))
    hi = len(t) if end_s is None else int(np.searchsorted(t, end_s, side="left"))
    hi = max(lo, hi)
    if len(t) and lo == hi and (start_s is not None or end_s is not None):
        raise InputError(f"no step starts in [{start_s if start_s is not None else 0:g}, "
                         f"{end_s if end_s is not None else float('inf'):g}) s; the run's steps start from "
                         f"{t[0]:g} to {t[-1]:g} s", where="--start" if start_s is not None else "--end")
    in_window = hi - lo
    if max_steps:
        hi = min(hi, lo + int(max_steps))
    return lo, hi, in_window


def chrome_trace(run: RunResult, max_steps: int | None = None, *, start_s: float | None = None,
                 end_s: float | None = None, parts: tuple[str, ...] | None = None) -> dict:
    """The trace of the steps starting in [start_s, end_s), at most the first `max_steps` of them (None or
    0: all); see the module docstring. `parts`: the step parts to draw (default: those of `STEP_PARTS`
    the run's steps hold); they must sum to each step's duration.

    Raises ValueError if a step's parts do not sum to its duration (the engine's invariant)."""
    if parts is None:
        names = run.steps.dtype.names or ()
        parts = tuple(p for p in STEP_PARTS if p in names)
    lo, hi, in_window = select_steps(run, max_steps, start_s, end_s)
    steps = run.steps[lo:hi]
    tracks = tracks_of(parts)
    tid = {label: STEPS_TID + i for i, label in enumerate(tracks)}
    events: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": run.name}},
    ]
    for label in tracks:
        events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid[label], "args": {"name": label}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid[label],
                       "args": {"sort_index": tid[label]}})

    start, end = steps["start_s"], steps["end_s"]
    dur = end - start
    p = np.stack([steps[x] for x in parts], axis=1) if len(steps) and parts else np.zeros((len(steps), len(parts)))
    bad = ~np.isclose(p.sum(axis=1), dur, rtol=1e-6, atol=1e-12)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"run {run.name!r} step {lo + i}: parts sum to {p[i].sum()} s, the step lasts {dur[i]} s")
    offsets = np.cumsum(p, axis=1) - p  # each part starts where the previous one ended (chain order)

    ts_us = (start * 1e6).tolist()
    dur_us = (dur * 1e6).tolist()
    part_ts_us = ((start[:, None] + offsets) * 1e6).tolist()
    part_dur_us = (p * 1e6).tolist()
    slice_of = [(tid[unit_of(x)[0]], unit_of(x)[1], x.removesuffix("_s")) for x in parts]
    args_cols = {a: steps[a].tolist() for a in STEP_ARGS if a in steps.dtype.names}
    counter_cols = {f: steps[f].tolist() for f, _, _ in COUNTERS if f in steps.dtype.names}
    for i in range(len(steps)):
        n = lo + i
        events.append({"ph": "X", "name": f"step {n}", "cat": "step", "pid": PID, "tid": STEPS_TID,
                       "ts": ts_us[i], "dur": dur_us[i], "args": {a: c[i] for a, c in args_cols.items()}})
        for k, (t, name, cat) in enumerate(slice_of):
            if part_dur_us[i][k] > 0:
                events.append({"ph": "X", "name": name, "cat": cat, "pid": PID, "tid": t,
                               "ts": part_ts_us[i][k], "dur": part_dur_us[i][k], "args": {"step": n}})
        for f, label, unit in COUNTERS:
            if f in counter_cols:
                events.append({"ph": "C", "name": label, "pid": PID, "ts": ts_us[i], "args": {unit: counter_cols[f][i]}})
    engine = run.params.get("engine") or {}
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"run": run.name, "status": run.status, "reason": run.reason,
                      "steps_total": int(len(run.steps)), "steps_in_window": int(in_window),
                      "steps_shown": int(len(steps)), "first_step": int(lo),
                      "window_s": [start_s, end_s], "max_steps": max_steps or None,
                      "truncated": bool(len(steps) < in_window),
                      "tracks": tracks, "parts": {x: unit_of(x)[0] for x in parts},
                      "overlap": engine.get("overlap", "none"),
                      "slices": "per step, its parts end to end in chain order (module docstring)"},
    }


def write_chrome_trace(run: RunResult, path: str | Path, max_steps: int | None = None, *,
                       start_s: float | None = None, end_s: float | None = None) -> Path:
    """Write `chrome_trace(run, max_steps, start_s=, end_s=)` as JSON to ``path`` atomically and return the
    path."""
    trace = chrome_trace(run, max_steps, start_s=start_s, end_s=end_s)
    path = Path(path)
    with atomic_write(path, mode="w", encoding="utf-8") as handle:
        json.dump(trace, handle, separators=(",", ":"))
    return path
