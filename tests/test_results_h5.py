"""results/h5.py: round trip, atomic writing, refused files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from test_results_synth import make_does_not_fit, make_run
from tokenstack_sim.errors import InputError
from tokenstack_sim.results import h5
from tokenstack_sim.results.result import SCHEMA_VERSION

pytestmark = pytest.mark.unit


def test_round_trip_same_content(tmp_path):
    runs = [make_run(seed=0), make_run(seed=1, qps=4.0), make_does_not_fit()]
    runs[0].summary["ttft_s_p90"] = float("nan")  # NaN survives JSON
    path = h5.write_runs(tmp_path / "out.h5", runs, meta={"command": "tokenstack run x"})
    back = h5.read_runs(path)
    assert len(back) == 3
    for a, b in zip(runs, back):
        assert a.same_content(b), a.name
        assert b.provenance == a.provenance
        assert b.requests.dtype == a.requests.dtype and b.steps.dtype == a.steps.dtype
    assert back[2].status == "does_not_fit" and "short by" in back[2].reason
    info = h5.read_info(path)
    assert info["schema_version"] == SCHEMA_VERSION and info["runs"] == 3
    assert info["meta"] == {"command": "tokenstack run x"}


def test_layout(tmp_path):
    path = h5.write_runs(tmp_path / "out.h5", [make_run()])
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        g = f["runs/0"]
        assert g.attrs["status"] == "ok"
        assert g["requests"].compression == "gzip" and g["steps"].compression == "gzip"
        assert set(g["actions"]) == {"gpu", "gpu_stacks"}
        assert "energy_pj" in g.attrs and "summary" in g.attrs


def test_many_runs_keep_their_order(tmp_path):
    runs = [make_run(seed=s, n_requests=8, n_steps=3) for s in range(12)]  # "10" sorts before "2"
    back = h5.read_runs(h5.write_runs(tmp_path / "o.h5", runs))
    assert [r.name for r in back] == [r.name for r in runs]


def test_numpy_scalars_in_json_fields(tmp_path):
    run = make_run()
    run.summary["requests"] = np.int64(run.summary["requests"])
    run.params["qps"] = np.float64(2.0)
    back = h5.read_runs(h5.write_runs(tmp_path / "o.h5", [run]))[0]
    assert back.same_content(run)
    assert type(back.summary["requests"]) is int


def test_crash_while_writing_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "out.h5"
    real = h5._write_run
    calls = []

    def boom(g, run):
        calls.append(run.name)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        real(g, run)

    monkeypatch.setattr(h5, "_write_run", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        h5.write_runs(path, [make_run(seed=0), make_run(seed=1)])
    assert list(tmp_path.iterdir()) == []


def test_crash_keeps_the_previous_file(tmp_path, monkeypatch):
    path = h5.write_runs(tmp_path / "out.h5", [make_run(seed=0)])
    monkeypatch.setattr(h5, "_write_run", lambda g, run: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        h5.write_runs(path, [make_run(seed=1)])
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]
    assert h5.read_runs(path)[0].same_content(make_run(seed=0))


def test_bad_inputs_to_write(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        h5.write_runs(tmp_path / "o.h5", [make_run(), make_run()])
    run = make_run()
    run.params["engine"] = object()
    with pytest.raises(ValueError, match="params"):
        h5.write_runs(tmp_path / "o.h5", [run])
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file.*HDF5") as e:
        h5.read_runs(tmp_path / "nope.h5")
    assert "nope.h5" in str(e.value)


def test_not_hdf5(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("hello")
    with pytest.raises(InputError, match="not an HDF5 file") as e:
        h5.read_runs(p)
    assert "x.h5" in str(e.value)


def test_hdf5_but_not_results(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not a results file"):
        h5.read_runs(p)


def test_other_schema_version(tmp_path):
    p = h5.write_runs(tmp_path / "old.h5", [make_run()])
    with h5py.File(p, "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(InputError, match=f"schema_version {SCHEMA_VERSION + 1}, expected {SCHEMA_VERSION}") as e:
        h5.read_runs(p)
    assert "old.h5" in str(e.value)


def test_wrong_fields_named(tmp_path):
    p = h5.write_runs(tmp_path / "o.h5", [make_run()])
    with h5py.File(p, "a") as f:
        del f["runs/0/steps"]
        f["runs/0/steps"] = np.zeros(3, [("start_s", float)])
    with pytest.raises(InputError, match="runs/0/steps"):
        h5.read_runs(p)
