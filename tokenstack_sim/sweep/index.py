"""The sweep folder: one results file per point, and an index of them.

Layout of a sweep folder::

    DIR/spec.toml        the spec as last run (a copy, for the record)
    DIR/index.json       the index below, rewritten atomically while the sweep runs
    DIR/points/<id>.h5   one results file per finished point (results/h5.py, one run), written atomically;
                         its meta holds {"sweep": name, "sweep_point": {"id": ..., "params": ..., "code": ...}}

The point files are the truth. A point is finished when its file opens as a results file of one run
whose meta names the same id and parameters, computed by the same code (`point_state`): "code" is
`code_fingerprint()`, a hash of the simulator's sources and its built-in presets, so a sweep resumed
after the model changed runs its points again instead of mixing old figures with new (a point file
without it, from before, counts as other code); `run_sweep(keep_stale=True)` keeps them. A crash
mid-write leaves no file (atomic rename), so a killed sweep loses only the points that were running.
The index is derived from the files and rewritten from them at every start: deleting it loses nothing.

index.json::

    {"format": "tokenstack_sim sweep index", "schema_version": 1, "sweep": name, "spec": "spec.toml",
     "updated_utc": ISO time, "dims": [{"name": ..., "values": [...]} or {"name": ..., "range": {...}}],
     "points": [record, ...]}                               # in the spec's run order

    record = {"id", "params" (sweep/points.py), "status": "pending" | "ok" | "does_not_fit" | "error",
              "file": "points/<id>.h5" or null, "error": message or "", "wall_s": seconds or null,
              "summary": the run's summary (sim/engine.py; {} until it ran),
              "energy_j": {component: J over the run}, "reason": why a point does not fit}

Leaves out: locking against two sweeps writing one folder at once (run one sweep per folder).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
from pathlib import Path

from tokenstack_sim.atomic_io import atomic_write
from tokenstack_sim.errors import InputError

FORMAT = "tokenstack_sim sweep index"
SCHEMA_VERSION = 1
INDEX_NAME = "index.json"
SPEC_NAME = "spec.toml"
POINTS_DIR = "points"
STATUSES = ("pending", "ok", "does_not_fit", "error")


def point_file(out_dir: Path, pid: str) -> Path:
    return Path(out_dir) / POINTS_DIR / f"{pid}.h5"


def _relative(out_dir: Path, path: Path) -> str:
    return path.relative_to(out_dir).as_posix()


# What a point's figures depend on besides its parameters: the package's sources (its command line and
# report-only modules apart, which cannot change a run) and the built-in presets a parameter names.
_CODE_SKIP = ("cli", "results")
_PRESET_DIRS = ("arch_configs", "workloads")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash (16 hex digits) of the files a run's figures depend on, besides its parameters: every
    module of the package but the command line and the reports, and the TOML presets under the project's
    arch_configs/ and workloads/. Computed once per process (a few ms)."""
    from tokenstack_sim.config.loader import arch_configs_dir

    pkg = Path(__file__).resolve().parents[1]
    files = [(f"tokenstack_sim/{f.relative_to(pkg).as_posix()}", f) for f in pkg.rglob("*.py")
             if f.relative_to(pkg).parts[0] not in _CODE_SKIP]
    root = arch_configs_dir().parent
    for d in _PRESET_DIRS:
        files += [(f.relative_to(root).as_posix(), f) for f in (root / d).rglob("*.toml")]
    h = hashlib.sha256()
    for name, f in sorted(files):
        h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def point_state(out_dir: Path, point) -> str:
    """"finished": the point's file is a readable results file of one run, of this point, computed by this
    code; "stale": the same but computed by other code (or before the code was recorded); "missing":
    anything else (no file, unreadable, another point's)."""
    from tokenstack_sim.results.h5 import read_info

    path = point_file(out_dir, point.id)
    if not path.is_file():
        return "missing"
    try:
        info = read_info(path)
    except (InputError, OSError, KeyError, ValueError):
        return "missing"
    mine = info["meta"].get("sweep_point", {})
    if not (info["runs"] == 1 and mine.get("id") == point.id and mine.get("params") == point.params):
        return "missing"
    return "finished" if mine.get("code") == code_fingerprint() else "stale"


def is_finished(out_dir: Path, point, *, keep_stale: bool = False) -> bool:
    """Whether the point's file holds this point's run, computed by this code (`point_state`; with
    `keep_stale`, by any code)."""
    state = point_state(out_dir, point)
    return state == "finished" or (keep_stale and state == "stale")


def energy_j(run) -> dict:
    return {c: sum(acts.values()) * 1e-12 for c, acts in run.energy_pj.items()}


def record(out_dir: Path, point, *, status: str = "pending", run=None, error: str = "",
           wall_s: float | None = None) -> dict:
    """The index record of a point; from its RunResult when it ran."""
    rec = {"id": point.id, "params": point.params, "status": status, "file": None, "error": error,
           "wall_s": wall_s, "summary": {}, "energy_j": {}, "reason": ""}
    if run is not None:
        rec.update(status=run.status, file=_relative(Path(out_dir), point_file(out_dir, point.id)),
                   summary=run.summary, energy_j=energy_j(run), reason=run.reason)
        if wall_s is None:
            rec["wall_s"] = run.provenance.get("wall_s")
    return rec


def write_point(out_dir: Path, point, run, sweep_name: str) -> Path:
    """The point's results file, atomically."""
    from tokenstack_sim.results.h5 import write_runs

    meta = {"sweep": sweep_name, "sweep_point": {"id": point.id, "params": point.params, "code": code_fingerprint()}}
    return write_runs(point_file(out_dir, point.id), [run], meta=meta)


def read_point(out_dir: Path, point):
    """The RunResult in a finished point's file."""
    from tokenstack_sim.results.h5 import read_runs

    return read_runs(point_file(out_dir, point.id))[0]


def dims_json(dims) -> list[dict]:
    out = []
    for d in dims:
        if d.range is not None:
            out.append({"name": d.name, "range": dataclasses.asdict(d.range)})
        else:
            out.append({"name": d.name, "values": list(d.values)})
    return out


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def write_index(out_dir: Path, sweep_name: str, dims, records: list[dict]) -> Path:
    path = Path(out_dir) / INDEX_NAME
    doc = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "sweep": sweep_name, "spec": SPEC_NAME,
           "updated_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "dims": dims_json(dims), "points": records}
    with atomic_write(path, "w", suffix=".json.tmp", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, default=_json_default)
        fh.write("\n")
    return path


def read_index(out_dir: str | Path) -> dict:
    """A sweep folder's index, checked; InputError naming the file when it is not one."""
    path = Path(out_dir) / INDEX_NAME
    expected = f"a sweep folder written by `tokenstack sweep` (with {INDEX_NAME})"
    if not path.is_file():
        raise InputError(f"no {INDEX_NAME} here; expected {expected}", source=out_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not readable as JSON ({exc}); expected {expected}", source=path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"not a sweep index (format); expected {expected}", source=path)
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"schema_version {doc.get('schema_version')!r}, expected {SCHEMA_VERSION}", source=path)
    if not isinstance(doc.get("points"), list):
        raise InputError("expected a list", source=path, where="points")
    for i, rec in enumerate(doc["points"]):
        if not isinstance(rec, dict) or rec.get("status") not in STATUSES or not isinstance(rec.get("params"), dict):
            raise InputError("malformed point record", source=path, where=f"points[{i}]")
    return doc
