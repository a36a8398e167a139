"""`tokenstack sweep` and the sweep views of `tokenstack report DIR` (tokenstack_sim/sweep/,
results/sweep_report.py).

- A 4-point sweep (tokenstack-hbm4 and gpu-hbm4 x 2 rates, Llama-3.1-8B, 5 simulated seconds, roofline
  stream timing: only tokenstack's small PIM attention table is characterized, into the session's
  `opcost_cache`) run twice does nothing the second time.
- Killed after 2 points (a progress hook raises) and resumed, it equals an uninterrupted run point by
  point (HDF5 content apart from provenance); a corrupt point file is run again; a lost index is rebuilt
  from the files.
- Local processes (-j 2), a local Dask cluster (--dask-local 2) and a real `dask scheduler` + `dask worker`
  started as subprocesses on localhost, reached by --dask ADDRESS (both skipped where dask.distributed is
  not installed), give the same files as this process; without dask the Dask options fail in one line.
- The report's PNGs decode, each plot shows the expected series, and report.html is well-formed with
  every image inline.
- Spec errors name the file and the key, through the CLI with exit status 2 and no traceback.
- Sampling (grid, random, LHS strata), parameter routing into --set overrides, stable point ids, ETA text.
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.results.h5 import read_runs
from tokenstack_sim.sweep import index as idx
from tokenstack_sim.sweep.executor import LocalExecutor
from tokenstack_sim.sweep.points import expand, point_id
from tokenstack_sim.sweep.runner import run_sweep
from tokenstack_sim.sweep.spec import Dim, Range, load_sweep_spec
from _cli import tokenstack  # tests/_cli.py

pytestmark = pytest.mark.unit

SPEC = """\
schema_version = 1
name = "t4"
systems = ["tokenstack-hbm4", "gpu-hbm4"]
models = ["llama-3.1-8b"]
workloads = ["azure-conv-like"]
qps = [2.0, 6.0]
seeds = [0]
duration_s = 5.0

[engine]
memory_timing = "roofline"
"""


def write_spec(tmp_path: Path, text: str = SPEC, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def point_files(out: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted((out / idx.POINTS_DIR).glob("*.h5"))}


def assert_same_points(a: Path, b: Path) -> None:
    fa, fb = point_files(a), point_files(b)
    assert fa.keys() == fb.keys() and len(fa) == 4
    for pid in fa:
        ra, rb = read_runs(fa[pid])[0], read_runs(fb[pid])[0]
        assert ra.status == "ok" and ra.same_content(rb), pid


@pytest.fixture(scope="module")
def reference(opcost_cache, tmp_path_factory) -> Path:
    """The 4-point sweep run uninterrupted in this process."""
    tmp = tmp_path_factory.mktemp("sweep_ref")
    out = tmp / "ref"
    result = run_sweep(load_sweep_spec(write_spec(tmp)), out)
    assert result.total == 4 and result.counts == {"ok": 4} and not result.errors
    return out


# ------------------------------------------------------------------------------------- resume

def test_second_run_does_nothing(reference, capsys, tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "again"
    code, _, err = tokenstack(capsys, "sweep", spec, "--out", out, "-j", "1")
    assert code == 0, err
    assert "[4/4]" in err and "ETA" in err and "elapsed" in err
    before = {pid: (p.stat().st_mtime_ns, p.stat().st_ino) for pid, p in point_files(out).items()}
    code, _, err = tokenstack(capsys, "sweep", spec, "--out", out, "-j", "1")
    assert code == 0, err
    assert "4 of 4 points already finished" in err and "0 run" in err and "[1/4]" not in err
    after = {pid: (p.stat().st_mtime_ns, p.stat().st_ino) for pid, p in point_files(out).items()}
    assert before == after
    doc = idx.read_index(out)
    assert [r["status"] for r in doc["points"]] == ["ok"] * 4
    assert_same_points(reference, out)
    # --no-resume runs every point again (new files, same content)
    code, _, err = tokenstack(capsys, "sweep", spec, "--out", out, "-j", "1", "--no-resume")
    assert code == 0 and "4 run (4 ok)" in err
    assert all(before[pid] != (p.stat().st_mtime_ns, p.stat().st_ino) for pid, p in point_files(out).items())


def test_points_finished_by_other_code_run_again(reference, capsys, tmp_path, monkeypatch):
    """A point file records the code that computed it (sweep/index.py code_fingerprint); resumed after the
    simulator's sources or presets changed, the sweep runs such points again and says so, unless
    --keep-stale. The fingerprint covers a kernel module and a preset, not the command line."""
    spec = write_spec(tmp_path)
    out = tmp_path / "stale"
    code, _, err = tokenstack(capsys, "sweep", spec, "--out", out, "-j", "1")
    assert code == 0, err
    before = {pid: p.stat().st_mtime_ns for pid, p in point_files(out).items()}
    assert {read_runs(p)[0].status for p in point_files(out).values()} == {"ok"}
    idx.code_fingerprint.cache_clear()
    monkeypatch.setattr(idx, "code_fingerprint", lambda: "0123456789abcdef")  # as if the model had changed
    p0 = expand(load_sweep_spec(spec))[0]
    assert idx.point_state(out, p0) == "stale" and not idx.is_finished(out, p0)
    assert idx.is_finished(out, p0, keep_stale=True)
    code, _, err = tokenstack(capsys, "sweep", spec, "--out", out, "-j", "1", "--keep-stale")
    assert code == 0 and "4 of 4 points already finished" in err and "0 run" in err
    assert before == {pid: p.stat().st_mtime_ns for pid, p in point_files(out).items()}
    code, _, err = tokenstack(capsys, "sweep", spec, "--out", out, "-j", "1")
    assert code == 0 and "4 of 4 points in" in err and "finished by other code" in err and "4 run (4 ok)" in err
    assert all(before[pid] != p.stat().st_mtime_ns for pid, p in point_files(out).items())
    assert idx.point_state(out, p0) == "finished"  # the rerun recorded the code it ran with
    assert_same_points(reference, out)
    code, _, err = tokenstack(capsys, "sweep", spec, "--out", out, "-j", "1")
    assert code == 0 and "0 run" in err and "other code" not in err


def test_code_fingerprint_follows_the_model_sources_and_presets(monkeypatch, tmp_path):
    import shutil

    import tokenstack_sim
    from tokenstack_sim.config import loader

    pkg = Path(tokenstack_sim.__file__).resolve().parent
    proj = tmp_path / "proj"
    shutil.copytree(pkg, proj / "tokenstack_sim", ignore=shutil.ignore_patterns("__pycache__"))
    for d in ("arch_configs", "workloads"):
        shutil.copytree(loader.arch_configs_dir().parent / d, proj / d)
    monkeypatch.setattr(idx, "__file__", str(proj / "tokenstack_sim" / "sweep" / "index.py"))
    monkeypatch.setattr(loader, "arch_configs_dir", lambda: proj / "arch_configs")

    def fp():
        idx.code_fingerprint.cache_clear()
        return idx.code_fingerprint()

    base = fp()
    assert len(base) == 16 and base == fp()
    for rel, changes in (("tokenstack_sim/cli/demo_cmd.py", False), ("tokenstack_sim/kv/tiered.py", True),
                         ("arch_configs/systems/tokenstack-hbm4.toml", True)):
        f = proj / rel
        old = f.read_bytes()
        f.write_bytes(old + b"\n# edited\n")
        assert (fp() != base) == changes, rel
        f.write_bytes(old)
    assert fp() == base
    idx.code_fingerprint.cache_clear()


class Killed(Exception):
    pass


def test_killed_midway_and_resumed_equals_an_uninterrupted_run(reference, tmp_path):
    spec = load_sweep_spec(write_spec(tmp_path))
    out = tmp_path / "killed"
    seen = []

    def kill_after_two(line: str) -> None:
        seen.append(line)
        if len(seen) == 2:
            raise Killed

    with pytest.raises(Killed):
        run_sweep(spec, out, progress=kill_after_two)
    assert len(point_files(out)) == 2
    statuses = [r["status"] for r in idx.read_index(out)["points"]]
    assert sorted(statuses) == ["ok", "ok", "pending", "pending"]  # the index was written on the way out

    result = run_sweep(spec, out)
    assert result.skipped == 2 and result.counts == {"ok": 2}
    assert_same_points(reference, out)

    # a point file cut short (not a results file) is not finished: run again; a lost index is rebuilt
    victim = sorted(point_files(out).values())[0]
    victim.write_bytes(b"not hdf5")
    (out / idx.INDEX_NAME).unlink()
    result = run_sweep(spec, out)
    assert result.skipped == 3 and result.counts == {"ok": 1}
    assert_same_points(reference, out)
    doc = idx.read_index(out)
    assert [r["status"] for r in doc["points"]] == ["ok"] * 4
    assert all(r["summary"]["output_tokens_per_s"] > 0 for r in doc["points"])


def test_failed_points_are_recorded_and_retried(opcost_cache, capsys, tmp_path):
    spec = write_spec(tmp_path, SPEC.replace("duration_s = 5.0\n", "duration_s = 5.0\nkv_blocks = 1\n"))
    out = tmp_path / "fails"
    for _ in range(2):  # a failed point is not finished: the second run tries every point again
        code, _, err = tokenstack(capsys, "sweep", spec, "--out", out, "-j", "1")
        assert code == 1 and "Traceback" not in err
        assert "4 run (4 error)" in err and "4 point(s) failed" in err and "pool has 1" in err
        doc = idx.read_index(out)
        assert [r["status"] for r in doc["points"]] == ["error"] * 4
        assert all("kv_blocks" in r["error"] and r["file"] is None for r in doc["points"])
        assert point_files(out) == {}


def test_dry_run_lists_the_points_and_runs_nothing(capsys, tmp_path):
    code, out, err = tokenstack(capsys, "sweep", write_spec(tmp_path), "--out", tmp_path / "dry", "--dry-run")
    assert code == 0 and "4 points (grid sampling)" in err
    lines = out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("tokenstack-hbm4 llama-3.1-8b azure-conv-like qps=2 seed=0 (")
    assert not (tmp_path / "dry").exists()


def test_local_processes_equal_this_process(reference, tmp_path):
    out = tmp_path / "j2"
    result = run_sweep(load_sweep_spec(write_spec(tmp_path)), out, executor=LocalExecutor(2))
    assert result.counts == {"ok": 4}
    assert_same_points(reference, out)


def test_local_dask_cluster_equals_local_processes(reference, capsys, tmp_path):
    pytest.importorskip("dask.distributed")
    out = tmp_path / "dask"
    code, _, err = tokenstack(capsys, "sweep", write_spec(tmp_path), "--out", out, "--dask-local", "2")
    assert code == 0, err
    assert "local Dask cluster of 2" in err and "4 run (4 ok)" in err
    assert_same_points(reference, out)


@pytest.fixture
def dask_scheduler(tmp_path):
    """A real `dask scheduler` and one `dask worker` (2 processes of 1 thread) on localhost, started as
    subprocesses of their own, as a remote cluster would be; yields the scheduler's address. The workers
    get an empty op-cost cache of their own (a remote machine shares none: run_sweep hands each Dask job
    the costs it reads) and this checkout on their path. Stopped (terminate, then kill) afterwards."""
    import os
    import subprocess
    import time

    pytest.importorskip("dask.distributed")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
           "TOKENSTACK_CACHE": str(tmp_path / "worker-cache"),
           "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}  # as DaskExecutor's own local clusters
    sched_file = tmp_path / "scheduler.json"
    logs = [open(tmp_path / f"{n}.log", "w") for n in ("scheduler", "worker")]
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              env=env, cwd=tmp_path, stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        deadline, address = time.monotonic() + 60, None
        while address is None and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.2)
            try:
                address = json.loads(sched_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                pass  # not written yet, or not whole yet
        if address is None:
            pytest.fail(f"dask scheduler did not start: {(tmp_path / 'scheduler.log').read_text()[-2000:]}")
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nworkers", "2",
                                       "--nthreads", "1", "--no-dashboard"],
                                      env=env, cwd=tmp_path, stdout=logs[1], stderr=subprocess.STDOUT))
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()


def test_remote_dask_scheduler_equals_local_processes(reference, dask_scheduler, capsys, tmp_path):
    out = tmp_path / "remote"
    code, _, err = tokenstack(capsys, "sweep", write_spec(tmp_path), "--out", out, "--dask", dask_scheduler)
    assert code == 0, err
    assert f"the Dask scheduler at {dask_scheduler}" in err and "4 run (4 ok)" in err
    assert_same_points(reference, out)


def test_dask_options_without_dask_fail_in_one_line(capsys, tmp_path, monkeypatch):
    for name in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    spec = write_spec(tmp_path)
    for option in (("--dask-local", "2"), ("--dask", "tcp://127.0.0.1:8786")):
        code, out, err = tokenstack(capsys, "sweep", spec, "--out", tmp_path / "x", *option)
        assert code == 2 and out == "" and "Traceback" not in err
        assert err.startswith(f"error: {option[0]}: ") and "tokenstack_sim[dist]" in err
    code, _, err = tokenstack(capsys, "sweep", spec, "--dask", "tcp://x:1", "--dask-local", "2")
    assert code == 2 and "not both" in err


# ------------------------------------------------------------------------------------- report

class WellFormed(html.parser.HTMLParser):
    """Tag nesting check: every non-void element closed, in order."""
    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base", "embed", "track"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.images, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_report_images_decode_and_show_the_expected_series(reference, capsys, tmp_path):
    import matplotlib.image as mpimg

    from tokenstack_sim.results import sweep_report as sr

    records = idx.read_index(reference)["points"]
    rep = sr.write_report(records, tmp_path / "rep", title="t4")
    stems = [p.stem for p in rep.images]
    assert stems == ["throughput_latency", "slo_attainment", "slo_capacity", "energy_per_token", "pareto",
                     "sensitivity_qps"]  # qps is the only swept design dimension
    for p in rep.images:
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0
    systems = ["tokenstack-hbm4", "gpu-hbm4"]
    labels = {k: sr.series_labels(f) for k, f in rep.figures.items()}
    assert labels["throughput_latency"] == [systems, systems]  # TPOT p50 and p99 panels
    assert labels["slo_attainment"] == [systems]
    assert labels["slo_capacity"] == [systems]
    assert labels["energy_per_token"] == [["GPU", "stacks", "PIM", "links"]]
    assert labels["pareto"] == [systems]
    assert [g for g in (ln.get_gid() for ln in rep.figures["pareto"].axes[0].lines)] == ["front"]
    assert labels["sensitivity_qps"] == [systems] * 3
    # each line holds the seed-mean of its points: 2 rates per system
    for line in rep.figures["slo_attainment"].axes[0].lines:
        if line.get_gid() == "series":
            assert list(line.get_xdata()) == [2.0, 6.0]
    bars = rep.figures["energy_per_token"].axes[0].containers
    assert all(len(c.patches) == 4 for c in bars)  # one bar per (system, qps)

    text = rep.html.read_text(encoding="utf-8")
    parser = WellFormed()
    parser.feed(text)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    assert parser.tags[:1] == ["html"] and text.startswith("<!DOCTYPE html>")
    assert len(parser.images) == len(rep.images)
    for attrs, path in zip(parser.images, rep.images):
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix) and attrs["alt"] == path.stem
        data = base64.b64decode(attrs["src"][len(prefix):])
        assert data == path.read_bytes()
        assert mpimg.imread(io.BytesIO(data), format="png").ndim == 3
    assert "http://" not in text and "https://" not in text  # self-contained
    assert text.count("<table>") == 2 and text.count("<tr>") >= 1 + 2 + 1 + 4

    # through the CLI: the points table on stdout, the page under DIR/report
    code, out, err = tokenstack(capsys, "report", reference, "--format", "json", "--plots", tmp_path / "cli")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 4 and {r["system"] for r in rows} == set(systems) and all(r["status"] == "ok" for r in rows)
    assert (tmp_path / "cli" / "report.html").is_file()


def test_slo_capacity_and_pareto_front_by_hand():
    from tokenstack_sim.results.sweep_report import pareto_front, slo_capacity_qps

    assert slo_capacity_qps([1, 2, 4], [1.0, 0.95, 0.5]) == pytest.approx((2 + 2 * 0.05 / 0.45, "interpolated"))
    assert slo_capacity_qps([1, 2], [1.0, 0.95]) == (2, "at_least")
    assert slo_capacity_qps([1, 2], [0.5, 0.1]) == (1, "below")
    assert pareto_front([(1, 10), (2, 5), (2, 20), (3, 15), (4, 30)]) == [(1, 10), (2, 20), (4, 30)]


def test_report_of_a_folder_that_is_not_a_sweep(capsys, tmp_path):
    code, out, err = tokenstack(capsys, "report", tmp_path)
    assert code == 2 and "index.json" in err and str(tmp_path) in err and "Traceback" not in err


# -------------------------------------------------------------------------------- spec errors

BAD = [
    ("colour = 1\n", "colour", "unknown key"),
    ('systems = ["no-such-system"]\n', "systems[0]", "unknown system"),
    ('models = ["llama-3.1-8b", 7]\n', "models[1]", "expected a name or path"),
    ('workloads = ["nowhere.csv"]\n', "workloads[0]", "unknown workload"),
    ("qps = [2.0, 0]\n", "qps[1]", "expected a rate > 0"),
    ("qps = {min = 1, max = 4}\n", "qps", "needs sampling.method"),
    ("seeds = [-1]\n", "seeds[0]", "integer >= 0"),
    ("duration_s = -5\n", "duration_s", "expected a number > 0"),
    ("slo_tpot_s = 0\n", "slo_tpot_s", "time > 0"),
    ('[engine]\noverlap = "bogus"\n', "engine.overlap", "expected one of"),
    ("[engine]\ncolour = 1\n", "engine.colour", "unknown key"),
    ("[scheduler]\nmax_num_seqs = [64, 0]\n", "scheduler.max_num_seqs[1]", ">= 1"),
    ("[scheduler]\nnum_kv_blocks = 100\n", "scheduler.num_kv_blocks", "kv_blocks"),
    ('[kv]\neviction = ["lru", "fifo"]\n', "kv.eviction[1]", "expected one of"),
    ('[params]\n"gpu_stack.layout.pim_dies" = [4, 99]\n', 'params."gpu_stack.layout.pim_dies"[1]', "<= 64"),
    ('[params]\n"no_such_key" = 1\n', "params.no_such_key", "unknown key"),
    ("[params]\nmemory_utilization = [0.8, 1979-05-27]\n", "params.memory_utilization[1]", "expected a string"),
    ('[sampling]\nmethod = "sobol"\n', "sampling.method", "expected one of"),
    ('[sampling]\nmethod = "lhs"\n', "sampling.points", "required key is missing"),
    ("[sampling]\npoints = 4\n", "sampling.points", "random"),
    ('[sampling]\nmethod = "lhs"\npoints = 4\ncross = ["nope"]\n', "sampling.cross[0]", "unknown dimension"),
    ('[params]\nmemory_utilization = {min = 0.9, max = 0.5}\n[sampling]\nmethod = "random"\npoints = 2\n',
     "params.memory_utilization", "min 0.9 > max 0.5"),
]


def _spec_with(line: str) -> str:
    """SPEC with one top-level key replaced/added, or one table appended (TOML tables go last)."""
    if line.startswith("["):
        table = line.split("]")[0] + "]"
        if table in SPEC:  # add the keys to the existing table
            return SPEC.replace(table + "\n", line)
        return SPEC + line
    key = line.split("=")[0].strip()
    lines = [ln for ln in SPEC.splitlines(keepends=True) if ln.split("=")[0].strip() != key]
    return "".join(lines[:2]) + line + "".join(lines[2:])


@pytest.mark.parametrize("line, where, words", BAD, ids=[b[1] for b in BAD])
def test_spec_errors_name_the_file_and_the_key(tmp_path, capsys, line, where, words):
    path = write_spec(tmp_path, _spec_with(line), name="bad.toml")
    with pytest.raises(InputError) as info:
        load_sweep_spec(path)
    assert info.value.source == str(path) and info.value.where == where, str(info.value)
    assert words in info.value.message
    code, out, err = tokenstack(capsys, "sweep", path, "--dry-run")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip() == f"error: {info.value}" and len(err.strip().splitlines()) == 1


def test_missing_keys_and_files(tmp_path):
    path = write_spec(tmp_path, SPEC.replace("duration_s = 5.0\n", ""))
    with pytest.raises(InputError, match="required key is missing") as info:
        load_sweep_spec(path)
    assert info.value.where == "duration_s"
    path = write_spec(tmp_path, SPEC.replace("schema_version = 1\n", ""))
    with pytest.raises(InputError) as info:
        load_sweep_spec(path)
    assert info.value.where == "schema_version"
    with pytest.raises(InputError, match="file not found"):
        load_sweep_spec(tmp_path / "absent.toml")


def test_a_refused_combination_names_the_spec_before_anything_runs(tmp_path, capsys):
    # each value alone is fine on attacc-hbm4 (8 stack sites), but 4 GPU stacks + 6 PIM stacks are 10
    text = SPEC.replace('systems = ["tokenstack-hbm4", "gpu-hbm4"]', 'systems = ["attacc-hbm4"]') + (
        '[params]\n"gpu_stacks_per_gpu" = [2, 4]\n"pim_device.pim_stacks" = [4, 6]\n')
    path = write_spec(tmp_path, text)
    spec = load_sweep_spec(path)
    assert len(expand(spec)) == 2 * 2 * 2
    code, out, err = tokenstack(capsys, "sweep", path, "--out", tmp_path / "never")
    assert code == 2 and "Traceback" not in err
    assert f"{path}: params: the combination" in err and "pim_device.pim_stacks" in err
    assert not (tmp_path / "never").exists()


# --------------------------------------------------------------------------- sampling and ids

def test_grid_random_and_lhs():
    from tokenstack_sim.sweep.sampling import design

    dims = [Dim("qps", (1.0, 2.0)), Dim("engine.overlap", ("none", "sub_batch")), Dim("params.x", (3,))]
    grid = design(dims)
    assert len(grid) == 4 and grid[1] == {"qps": 1.0, "engine.overlap": "sub_batch", "params.x": 3}

    n = 20
    dims = [Dim("qps", range=Range(1.0, 100.0, log=True)), Dim("params.n", range=Range(2, 8)),
            Dim("params.u", range=Range(0.0, 1.0)), Dim("engine.overlap", ("none", "sub_batch"))]
    pts = design(dims, "lhs", n, seed=3)
    assert pts == design(dims, "lhs", n, seed=3) and pts != design(dims, "lhs", n, seed=4)
    u = np.array([p["params.u"] for p in pts])
    assert sorted(np.floor(u * n).astype(int)) == list(range(n))  # one point per stratum
    q = np.log(np.array([p["qps"] for p in pts]) / 1.0) / np.log(100.0)
    assert sorted(np.floor(q * n).astype(int)) == list(range(n))
    assert all(isinstance(p["params.n"], int) and 2 <= p["params.n"] <= 8 for p in pts)
    assert [p["engine.overlap"] for p in pts].count("none") == n // 2  # lists are stratified too
    rnd = design(dims, "random", n, seed=3)
    assert len(rnd) == n and all(1.0 <= p["qps"] <= 100.0 for p in rnd)
    crossed = design([Dim("qps", (1.0, 2.0, 4.0)), Dim("params.u", range=Range(0.0, 1.0))], "lhs", 5, cross=("qps",))
    assert len(crossed) == 15 and [p["qps"] for p in crossed[:3]] == [1.0, 2.0, 4.0]
    assert len({p["params.u"] for p in crossed}) == 5


def test_lhs_spec_expands_to_points_times_crossed_values(tmp_path):
    text = SPEC + ('[params]\n"memory_utilization" = {min = 0.6, max = 0.95}\n'
                   '[sampling]\nmethod = "lhs"\npoints = 3\nseed = 7\ncross = ["qps"]\n')
    spec = load_sweep_spec(write_spec(tmp_path, text))
    pts = expand(spec)
    assert len(pts) == 2 * 3 * 2 and len({p.id for p in pts}) == len(pts)
    assert [p.id for p in pts] == [p.id for p in expand(load_sweep_spec(write_spec(tmp_path, text)))]
    assert all(0.6 <= p.params["params"]["memory_utilization"] <= 0.95 for p in pts)


def test_point_ids_are_stable():
    params = {"system": "gpu-hbm4", "model": "llama-3.1-8b", "workload": "azure-conv-like", "seed": 0, "qps": 2.0,
              "run": {"duration_s": 5.0}, "engine": {}, "scheduler": {}, "kv": {}, "params": {}}
    # pinned: a change of the hash renames every point of every existing sweep folder
    assert point_id(params) == point_id(dict(reversed(list(params.items()))))
    assert point_id(params) == "cc359f6990ae12fa"


def test_parameters_are_set_strings_the_loader_routes_into_the_presets():
    from tokenstack_sim.config.loader import load_config
    from tokenstack_sim.sweep.overrides import system_overrides

    sets = system_overrides("attacc-hbm4", {"memory_utilization": 0.8, "pim_device.stack.pim.lanes": 8,
                                            "gpu_stack.basedie.tlb_entries": 512, "gpu.name": "g"})
    assert sets == ["memory_utilization=0.8", "pim_device.stack.pim.lanes=8", "gpu_stack.basedie.tlb_entries=512",
                    'gpu.name="g"']
    s = load_config("attacc-hbm4", sets, kind="system")
    assert s.pim_stack.config.pim.lanes == 8 and s.pim_stack.config.pim.mode_scope == "channel"  # the preset's kept
    assert s.gpu_stack.config.basedie.tlb_entries == 512 and s.gpu.name == "g"
    s = load_config("tokenstack-hbm4", system_overrides("tokenstack-hbm4", {"gpu_stack.layout.pim_dies": 2}),
                    kind="system")
    assert sum(d.kind == "pim" for d in s.gpu_stack.dies) == 2


def test_eta_text():
    from tokenstack_sim.sweep.progress import Progress, hms

    t = [0.0]
    lines = []
    prog = Progress(total=10, skipped=4, emit=lines.append, clock=lambda: t[0])
    t[0] = 30.0
    prog.point_done("ok", "a")
    t[0] = 60.0
    line = prog.point_done("ok", "b")
    assert line.startswith("[6/10] ok") and "elapsed 1m00s" in line and "ETA 2m00s" in line and lines == [lines[0], line]
    assert hms(7300) == "2h01m" and hms(5) == "5s"
