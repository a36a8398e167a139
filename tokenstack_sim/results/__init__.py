"""Results: the in-memory run result, its HDF5 file, reports and timelines. Only this layer writes files.

- `result.py`: `RunResult` (one serving run), `REQUEST_DTYPE`, `STEP_DTYPE`, `STEP_PARTS`, `SCHEMA_VERSION`.
- `h5.py`: `write_runs(path, runs, meta=)`, `read_runs(path)`, `read_info(path)`: the HDF5 file, atomic.
- `report.py`: `runs_table(runs, fmt=)`, `seeds_table(runs, fmt=)`; `SUMMARY_KEYS` the engine must fill.
- `plots.py`: PNGs of throughput vs QPS, latency CDFs, energy per output token, KV blocks over time.
- `timeline.py`: `chrome_trace(run)` / `write_chrome_trace(run, path)`: a Perfetto trace of the steps.

Submodules are imported on use (h5py and matplotlib load only where needed).
"""
