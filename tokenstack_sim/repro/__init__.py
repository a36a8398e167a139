"""Reproductions of published results, built on the sweep machinery (sweep/) and the step model.

- `pool.py`: one pool of workers (local processes or Dask) shared by several sweeps run at once, and
  `run_sweeps` (each sweep in its own folder, resumable, all through that pool).
- `sweep_io.py`: writing a sweep spec (TOML) from Python values, reading a sweep folder's records.
- `stats.py`: geometric means, per-seed ratios with Student-t intervals, AttAcc's best split.
- `sweep_capacity.py`: `capacity_search` (sim/capacity.py) whose probes are sweep points.
- `tokenstack_plan.py`, `tokenstack_run.py`, `tokenstack_report.py`: scripts/reproduce_tokenstack.py
  (TokenStack vs AttAcc and the rivals at equal resources; its modes and ablations).
- `static_batch.py`: AttAcc's own protocol, a fixed batch of identical requests driven through the step
  model; `attacc_repro.py`: scripts/reproduce_attacc.py.

Layer: after `sweep/` and `sim/`; scripts call it; nothing in the package imports it.
"""
