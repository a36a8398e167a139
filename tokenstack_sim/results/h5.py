"""The HDF5 results file: a list of `RunResult`s, written atomically and read back with the same content.

Layout (``SCHEMA_VERSION`` of `results/result.py`)::

    /                     attrs: format, schema_version, created (UTC, ISO 8601), package_version,
                                 meta (JSON: whatever the caller passed, e.g. the command line)
    /runs/<index>         one group per run, index 0, 1, ... in the order given
                          attrs: name, status, reason, and as JSON text: params, configs, provenance,
                                 summary, energy_pj (component -> action -> pJ)
    /runs/<index>/requests    compound dataset, REQUEST_DTYPE, gzip
    /runs/<index>/steps       compound dataset, STEP_DTYPE, gzip
    /runs/<index>/actions/<component>   compound dataset, one row per step, gzip

The file is written through `atomic_io.atomic_write` (h5py writes into the open temporary file, which
is then renamed), so a crash while writing never leaves a file, partial or not, under the final name.
The bytes are not deterministic (HDF5 stores times, ``created`` differs); the content is:
``read_runs(write_runs(runs))[i].same_content(runs[i])``.

JSON limits: dict keys come back as strings and tuples as lists, so `params`, `configs`, `summary` and
`energy_pj` should hold JSON-native values (numpy scalars are converted; NaN is kept).
Leaves out: appending to or resuming a file, partial reads of one run (read all, then pick).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.errors import InputError
from tokenstack_sim.results.result import REQUEST_DTYPE, SCHEMA_VERSION, STEP_DTYPE, RunResult

FORMAT = "tokenstack_sim results"
_JSON_ATTRS = ("params", "configs", "provenance", "summary", "energy_pj")
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def _json_default(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _to_json(value, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: cannot store as JSON ({exc})") from None


def write_runs(path: str | Path, runs: list[RunResult], *, meta: dict | None = None) -> Path:
    """Write ``runs`` to ``path`` (replacing it atomically) and return the path."""
    import h5py

    path = Path(path)
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"run names must be unique within a file, repeated: {dupes}")
    for run in runs:
        bad = [c for c in run.actions if not c or "/" in c or c == "."]
        if bad:
            raise ValueError(f"run {run.name!r}: action component names must be plain names, got {bad}")
    from tokenstack_sim import __version__

    meta_json = _to_json(meta or {}, "meta")
    with atomic_write(path, mode="w+b", suffix=".h5.tmp") as handle:
        with h5py.File(handle, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            f.attrs["package_version"] = __version__
            f.attrs["meta"] = meta_json
            group = f.create_group("runs")
            for index, run in enumerate(runs):
                _write_run(group.create_group(str(index)), run)
    return path


def _write_run(g, run: RunResult) -> None:
    g.attrs["name"] = run.name
    g.attrs["status"] = run.status
    g.attrs["reason"] = run.reason
    for attr in _JSON_ATTRS:
        g.attrs[attr] = _to_json(getattr(run, attr), f"run {run.name!r} {attr}")
    g.create_dataset("requests", data=np.asarray(run.requests), **_COMPRESSION)
    g.create_dataset("steps", data=np.asarray(run.steps), **_COMPRESSION)
    actions = g.create_group("actions")
    for component, table in run.actions.items():
        actions.create_dataset(component, data=np.asarray(table), **_COMPRESSION)


def _open(path: str | Path):
    """Open a results file for reading, or raise InputError naming it and what was expected."""
    import h5py

    path = Path(path)
    expected = f"a tokenstack results file (HDF5, schema_version {SCHEMA_VERSION})"
    if not path.is_file():
        raise InputError(f"no such file; expected {expected}", source=path)
    if not h5py.is_hdf5(path):
        raise InputError(f"not an HDF5 file; expected {expected}", source=path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"cannot open ({exc}); expected {expected}", source=path) from None
    found = f.attrs.get("schema_version")
    if f.attrs.get("format") != FORMAT or found is None:
        f.close()
        raise InputError(f"HDF5 but not a results file (no format/schema_version); expected {expected}",
                         source=path)
    if int(found) != SCHEMA_VERSION:
        written_by = f.attrs.get("package_version", "?")
        f.close()
        raise InputError(f"schema_version {int(found)}, expected {SCHEMA_VERSION} (written by package "
                         f"{written_by}); rerun the simulation", source=path)
    return f


def read_info(path: str | Path) -> dict:
    """The file-level attributes: schema_version, created, package_version, meta (dict), runs (count)."""
    with _open(path) as f:
        return {"schema_version": int(f.attrs["schema_version"]), "created": str(f.attrs["created"]),
                "package_version": str(f.attrs["package_version"]), "meta": json.loads(f.attrs["meta"]),
                "runs": len(f["runs"]) if "runs" in f else 0}


def read_runs(path: str | Path) -> list[RunResult]:
    """All runs of a results file, in the order they were written."""
    with _open(path) as f:
        if "runs" not in f:
            raise InputError("no /runs group; expected a results file", source=path)
        group = f["runs"]
        try:
            keys = sorted(group.keys(), key=int)
        except ValueError:
            raise InputError(f"/runs holds non-numeric members {sorted(group.keys())}", source=path) from None
        return [_read_run(group[k], path, f"runs/{k}") for k in keys]


def _read_run(g, path, where: str) -> RunResult:
    try:
        fields = {a: str(g.attrs[a]) for a in ("name", "status", "reason")}
        fields.update({a: json.loads(g.attrs[a]) for a in _JSON_ATTRS})
        requests = np.asarray(g["requests"][()])
        steps = np.asarray(g["steps"][()])
        actions = {c: np.asarray(ds[()]) for c, ds in g["actions"].items()}
    except (KeyError, json.JSONDecodeError) as exc:
        raise InputError(f"malformed run group ({exc})", source=path, where=where) from None
    for name, table, dtype in (("requests", requests, REQUEST_DTYPE), ("steps", steps, STEP_DTYPE)):
        if table.dtype != dtype:
            raise InputError(f"fields {table.dtype.names}, expected {dtype.names}",
                             source=path, where=f"{where}/{name}")
    try:
        return RunResult(requests=requests, steps=steps, actions=actions, **fields)
    except ValueError as exc:
        raise InputError(str(exc), source=path, where=where) from None
