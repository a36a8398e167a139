"""`tokenstack workload ...` end to end: tables printed, files written, bad input -> one line, exit 2."""

from __future__ import annotations

import hashlib
import shutil
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.fetch import KNOWN_TRACES, KnownTrace
from tokenstack_sim.workload.spec import load_spec
from tokenstack_sim.workload.stats import trace_stats
from tokenstack_sim.workload.store import load_npz

from _traces import real_trace  # tests/_traces.py

ROOT = Path(__file__).resolve().parents[1]


def _main():
    """The real console entry point; a stand-in with the same contract while the rest of the CLI is
    being built (another sub-command module may be missing)."""
    try:
        from tokenstack_sim.cli import main

        return main
    except ImportError:
        from tokenstack_sim.cli.workload_cmd import workload

        def main(argv):
            try:
                workload.main(args=argv[1:], prog_name="tokenstack workload", standalone_mode=False)
            except InputError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)

        return main


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        _main()(["workload", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err



@pytest.mark.unit
def test_inspect_prints_table_and_plot(capsys, tmp_path):
    trace = real_trace("mooncake_fast25/conversation_trace.jsonl")
    code, out, err = run(capsys, "inspect", str(trace), "--plot", str(tmp_path / "p.png"))
    assert code == 0, err
    assert "12,031" in out and "3.401 req/s" in out and "37.4%" in out
    assert "12,035.1" in out  # input mean
    assert (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.unit
def test_malformed_row_exits_2_naming_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,10,1\n2023-11-16 18:17:04.0,12\n")
    code, out, err = run(capsys, "inspect", str(bad))
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert f"{bad}: line 3: expected 3 fields, found 2" in err
    code, out, err = run(capsys, "inspect", str(bad), "--skip-bad")
    assert code == 0 and "skipped 1 bad row" in err and "requests         1" in out


@pytest.mark.unit
def test_bad_json_line_and_missing_file(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [1]}\n{"timestamp": 1,\n')
    code, _, err = run(capsys, "inspect", str(bad), "--format", "mooncake")
    assert code == 2 and f"{bad}: line 2: not valid JSON" in err
    code, _, err = run(capsys, "inspect", str(tmp_path / "nope.csv"), "--format", "azure")
    assert code == 2 and "trace file not found" in err


@pytest.mark.unit
def test_spec_errors_name_file_and_key(capsys, tmp_path):
    text = (ROOT / "workloads" / "azure-conv-like.toml").read_text()
    typo = tmp_path / "typo.toml"
    typo.write_text(text.replace("rate_qps = 5.53", "rate_qsp = 5.53"))
    code, _, err = run(capsys, "synth", str(typo), "-n", "10", "-o", str(tmp_path / "o.npz"))
    assert code == 2
    assert f"{typo}: arrivals.rate_qsp: unknown key 'rate_qsp'; valid keys: family, rate_qps, cv" in err
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text.replace("cv = 1.09", 'cv = "high"'))
    with pytest.raises(InputError) as info:
        load_spec(wrong)
    assert info.value.where == "arrivals.cv" and info.value.source == str(wrong) and "expected a number" in info.value.message
    negative = tmp_path / "neg.toml"
    negative.write_text(text.replace("rate_qps = 5.53", "rate_qps = -1"))
    with pytest.raises(InputError, match="expected > 0") as info:
        load_spec(negative)
    assert info.value.where == "arrivals.rate_qps"
    old = tmp_path / "old.toml"
    old.write_text(text.replace("schema_version = 1", "schema_version = 7"))
    with pytest.raises(InputError, match="expected 1, got 7"):
        load_spec(old)


@pytest.mark.unit
def test_synth_convert_fit_round_trip(capsys, tmp_path):
    spec = ROOT / "workloads" / "mooncake-conv-like.toml"
    out = tmp_path / "syn.npz"
    code, _, err = run(capsys, "synth", str(spec), "--requests", "3000", "--seed", "4", "-o", str(out))
    assert code == 0, err
    table = load_npz(out)
    assert len(table) == 3000 and table.hash_block_tokens == 512
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary behind

    converted = tmp_path / "conv.npz"
    code, _, err = run(capsys, "convert", str(out), "-o", str(converted), "--rate", "10", "--block-tokens", "16")
    assert code == 0, err
    scaled = load_npz(converted)
    stats = trace_stats(scaled)
    assert stats.rate_qps == pytest.approx(10, rel=1e-9)
    assert stats.interarrival_cv == pytest.approx(trace_stats(table).interarrival_cv, rel=1e-9)
    assert scaled.hash_block_tokens == 16

    fitted = tmp_path / "fitted.toml"
    code, _, err = run(capsys, "fit", str(out), "-o", str(fitted))
    assert code == 0, err
    again = load_spec(fitted)
    assert again.name == "fitted" and again.prefix is not None
    assert again.arrivals.rate_qps == pytest.approx(3.4, rel=0.1)


@pytest.mark.unit
def test_convert_adds_prefix_to_azure(capsys, tmp_path):
    trace = real_trace("azure2023/AzureLLMInferenceTrace_conv.csv")
    out = tmp_path / "az.npz"
    code, _, err = run(capsys, "convert", str(trace), "-o", str(out), "--add-prefix", "--window", "0", "600")
    assert code == 0, err
    table = load_npz(out)
    assert table.has_prefix and table.rows["arrival_s"][-1] < 600
    assert 0.1 < trace_stats(table).prefix.token_hit_frac < 0.6


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def mirror(tmp_path):
    """A loopback HTTP server serving a copy of one small known trace."""
    source = real_trace("azure2023/AzureLLMInferenceTrace_code.csv")
    root = tmp_path / "mirror"
    (root / "azure2023").mkdir(parents=True)
    shutil.copy(source, root / "azure2023" / source.name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.mark.unit
def test_fetch_from_loopback_verifies_sha256(capsys, tmp_path, mirror, monkeypatch):
    base_url, root = mirror
    cache = tmp_path / "cache"
    code, out, err = run(capsys, "fetch", "azure2023-code", "--cache-dir", str(cache), "--base-url", base_url)
    assert code == 0, err
    fetched = cache / "azure2023" / "AzureLLMInferenceTrace_code.csv"
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == KNOWN_TRACES["azure2023-code"].sha256
    # A tampered mirror fails the check and leaves nothing in the cache.
    (root / "azure2023" / "AzureLLMInferenceTrace_code.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    fresh = tmp_path / "cache2"
    monkeypatch.setenv("TOKENSTACK_TRACE_BASE_URL", base_url)
    code, _, err = run(capsys, "fetch", "azure2023-code", "--cache-dir", str(fresh))
    assert code == 2 and "sha256 mismatch" in err
    assert not any(p.is_file() for p in fresh.rglob("*"))
    # The cached, verified copy is reused without asking the (now tampered) mirror.
    code, out, _ = run(capsys, "fetch", "azure2023-code", "--cache-dir", str(cache), "--base-url", base_url)
    assert code == 0 and str(fetched) in out


@pytest.mark.unit
def test_fetch_unreachable_mirror_is_input_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(
        KNOWN_TRACES, "azure2023-code", KnownTrace("http://127.0.0.1:9/x.csv", "azure2023/x.csv", "0" * 64, "test")
    )
    code, _, err = run(capsys, "fetch", "azure2023-code", "--cache-dir", str(tmp_path))
    assert code == 2 and "download failed" in err


@pytest.mark.unit
def test_generic_format_through_cli_mapping(capsys, tmp_path):
    trace = tmp_path / "mine.csv"
    trace.write_text("ts,prompt,gen\n0,100,10\n1,300,30\n3,200,20\n")
    code, out, err = run(capsys, "inspect", str(trace), "--format", "generic",
                         "--map", "arrival=ts", "--map", "input_tokens=prompt", "--map", "output_tokens=gen")
    assert code == 0, err
    assert "requests         3" in out and "200.0" in out  # input mean
    code, _, err = run(capsys, "inspect", str(trace), "--format", "generic", "--map", "arrival")
    assert code == 2 and "expected FIELD=COLUMN" in err
    code, _, err = run(capsys, "inspect", str(trace), "--format", "generic", "--map", "arrival=ts")
    assert code == 2 and "mapping lacks input_tokens, output_tokens" in err


@pytest.mark.unit
def test_readme_spec_example_parses():
    import re
    import tomllib

    from tokenstack_sim.workload.spec import parse_spec

    text = (ROOT / "workloads" / "README.md").read_text()
    example = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    spec = parse_spec(tomllib.loads(example), "README.md")
    assert spec.output_tokens.kind == "lognormal" and spec.prefix.followup_prob == 0.67


@pytest.mark.unit
def test_fetch_without_reference_traces(capsys, tmp_path, monkeypatch):
    """The same download path with a generated file, so it runs where ../shared is absent."""
    root = tmp_path / "mirror"
    (root / "demo").mkdir(parents=True)
    body = b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,10,1\n"
    (root / "demo" / "t.csv").write_bytes(body)
    known = KnownTrace("http://example.invalid/t.csv", "demo/t.csv", hashlib.sha256(body).hexdigest(), "test")
    monkeypatch.setitem(KNOWN_TRACES, "azure2023-code", known)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, err = run(capsys, "fetch", "azure2023-code", "--cache-dir", str(tmp_path / "c"), "--base-url", base_url)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, err
    assert (tmp_path / "c" / "demo" / "t.csv").read_bytes() == body


@pytest.mark.unit
def test_outputs_get_umask_permissions_not_0600(capsys, tmp_path):
    import os
    import stat

    from tokenstack_sim.workload.fit import fit_spec, write_spec

    old = os.umask(0o022)
    try:
        out = tmp_path / "t.npz"
        code, _, err = run(capsys, "synth", str(ROOT / "workloads" / "azure-conv-like.toml"), "-n", "50", "-o", str(out))
        assert code == 0, err
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        toml = write_spec(fit_spec(load_npz(out), "t"), tmp_path / "t.toml")
        assert stat.S_IMODE(toml.stat().st_mode) == 0o644
    finally:
        os.umask(old)


@pytest.fixture
def small_npz(capsys, tmp_path):
    out = tmp_path / "s.npz"
    code, _, err = run(capsys, "synth", str(ROOT / "workloads" / "azure-conv-like.toml"), "-n", "200", "-o", str(out))
    assert code == 0, err
    return out


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.mark.unit
def test_negative_seed_is_refused(capsys, tmp_path, small_npz):
    spec = str(ROOT / "workloads" / "azure-conv-like.toml")
    code, _, err = run(capsys, "synth", spec, "-n", "5", "--seed", "-1", "-o", str(tmp_path / "x.npz"))
    assert_one_line_error(code, err, "--seed")
    code, _, err = run(capsys, "convert", str(small_npz), "-o", str(tmp_path / "y.npz"), "--retime", "gamma", "--seed", "-1")
    assert_one_line_error(code, err, "--seed")


@pytest.mark.unit
def test_unwritable_plot_path_is_input_error(capsys, tmp_path, small_npz):
    target = tmp_path / "no" / "such" / "dir" / "p.png"
    code, _, err = run(capsys, "inspect", str(small_npz), "--plot", str(target))
    assert_one_line_error(code, err, str(target), "cannot write the plot")


@pytest.mark.unit
def test_output_suffix_must_be_npz(capsys, tmp_path, small_npz):
    spec = str(ROOT / "workloads" / "azure-conv-like.toml")
    code, _, err = run(capsys, "synth", spec, "-n", "5", "-o", str(tmp_path / "x.csv"))
    assert_one_line_error(code, err, "x.csv", ".npz")
    code, _, err = run(capsys, "convert", str(small_npz), "-o", str(tmp_path / "y.csv"))
    assert_one_line_error(code, err, "y.csv", ".npz")
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()


@pytest.mark.unit
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--retime", "poisson", "--cv", "3"], "poisson process has cv = 1"),
        (["--retime", "weibull", "--cv", "1e9"], "supported range 0.03 to 20"),
        (["--retime", "gamma", "--cv", "nan"], "supported range 0.03 to 20"),
        (["--retime", "gamma", "--rate", "inf"], "finite"),
    ],
)
def test_retime_refuses_cv_it_cannot_honour(capsys, tmp_path, small_npz, args, needle):
    code, _, err = run(capsys, "convert", str(small_npz), "-o", str(tmp_path / "y.npz"), *args)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "y.npz").exists()


@pytest.mark.unit
@pytest.mark.parametrize("key, value", [("rate_qps", "inf"), ("rate_qps", "nan"), ("cv", "nan"), ("cv", "inf")])
def test_spec_refuses_non_finite_numbers(capsys, tmp_path, key, value):
    values = {"rate_qps": "5.0", "cv": "2.0", key: value}
    spec = tmp_path / "s.toml"
    spec.write_text(
        'schema_version = 1\nname = "x"\n[arrivals]\nfamily = "gamma"\n'
        f'rate_qps = {values["rate_qps"]}\ncv = {values["cv"]}\n'
        '[input_tokens]\nkind = "constant"\nconstant = 5\n[output_tokens]\nkind = "constant"\nconstant = 5\n'
    )
    with pytest.raises(InputError) as info:
        load_spec(spec)
    assert info.value.source == str(spec) and info.value.where == f"arrivals.{key}"
    assert "finite" in info.value.message
