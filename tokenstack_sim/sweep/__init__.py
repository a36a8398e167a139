"""Design-space sweeps: many serving runs from one spec, on local processes or a Dask cluster.

- `spec.py`: the sweep spec (TOML) read and checked: `load_sweep_spec(path) -> SweepSpec`.
- `sampling.py`: design points by grid, random or Latin-hypercube sampling.
- `overrides.py`: a point's architecture parameters as the config loader's `--set` strings.
- `points.py`: `expand(spec) -> [Point]` (each named by a hash of its parameters), `job(spec, point)`.
- `index.py`: the sweep folder (one HDF5 file per point, `index.json`), finished-point checks.
- `executor.py`: `execute(job)`; `LocalExecutor(workers)`, `DaskExecutor(address= | local_workers=)`.
- `progress.py`: points done/total, elapsed and ETA lines.
- `runner.py`: `run_sweep(spec, out_dir, executor=...)`: resume, characterize first, run, index.

Layer: after `results/` (it writes results files through it), before `cli/`. Plots of a sweep folder
are `results/sweep_report.py`, which reads the index's records as plain data.
"""
