"""Readers against the real traces (statistics from ../shared/reference/workloads.md) and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.hashing import reblock
from tokenstack_sim.workload.readers import detect_format, read_generic, read_trace
from tokenstack_sim.workload.stats import prefix_hit, trace_stats
from tokenstack_sim.workload.table import FLAG_FAILED, NO_ID, validate

from _traces import real_trace  # tests/_traces.py




@pytest.mark.validation
def test_azure_code_matches_workloads_md():
    stats = trace_stats(read_trace(real_trace("azure2023/AzureLLMInferenceTrace_code.csv")))
    assert stats.requests == 8819
    assert stats.input_tokens.mean == pytest.approx(2048, abs=1)
    assert stats.input_tokens.p50 == 1469
    assert stats.input_tokens.p99 == pytest.approx(7436, abs=1)
    assert stats.output_tokens.mean == pytest.approx(27.9, abs=0.05)
    assert stats.output_tokens.p50 == 13
    assert stats.rate_qps == pytest.approx(2.57, abs=0.005)
    assert stats.interarrival_cv == pytest.approx(13.2, abs=0.05)
    assert stats.duration_s / 60 == pytest.approx(57, abs=0.5)
    assert stats.prefix is None


@pytest.mark.validation
def test_azure_conv_matches_workloads_md():
    stats = trace_stats(read_trace(real_trace("azure2023/AzureLLMInferenceTrace_conv.csv")))
    assert stats.requests == 19366
    assert stats.input_tokens.mean == pytest.approx(1155, abs=1)
    assert stats.input_tokens.p50 == 1020
    assert stats.input_tokens.max == 14050
    assert stats.output_tokens.mean == pytest.approx(211, abs=0.5)
    assert stats.rate_qps == pytest.approx(5.53, abs=0.005)
    assert stats.interarrival_cv == pytest.approx(1.09, abs=0.005)
    assert stats.fano_1s == pytest.approx(1.39, abs=0.01)


@pytest.mark.validation
def test_mooncake_conversation_matches_workloads_md():
    table = read_trace(real_trace("mooncake_fast25/conversation_trace.jsonl"))
    stats = trace_stats(table)
    assert stats.requests == 12031
    assert stats.input_tokens.mean == pytest.approx(12035, abs=1)
    assert stats.input_tokens.p50 == 6909
    assert stats.output_tokens.mean == pytest.approx(343, abs=0.5)
    assert stats.rate_qps == pytest.approx(3.40, abs=0.005)
    assert stats.interarrival_cv == pytest.approx(3.0, abs=0.05)
    assert stats.fano_1s == pytest.approx(7.9, abs=0.05)
    assert stats.prefix.token_hit_frac == pytest.approx(0.374, abs=0.001)
    assert stats.prefix.request_hit_p50 == pytest.approx(0.36, abs=0.01)
    assert stats.prefix.request_hit_p90 == pytest.approx(0.95, abs=0.01)
    assert stats.prefix.blocks_reused_frac == pytest.approx(0.24, abs=0.01)
    # Block 0 is shared by every request (the platform system prompt).
    first = table.prefix_hashes[table.prefix_offsets[:-1]]
    assert np.all(first == first[0])


@pytest.mark.validation
def test_mooncake_synthetic_matches_workloads_md():
    stats = trace_stats(read_trace(real_trace("mooncake_fast25/synthetic_trace.jsonl")))
    assert stats.input_tokens.mean == pytest.approx(15326, abs=1)
    assert stats.output_tokens.p50 == 69
    assert stats.rate_qps == pytest.approx(3.9, abs=0.01)
    assert stats.prefix.token_hit_frac == pytest.approx(0.65, abs=0.005)
    assert stats.prefix.request_hit_p50 == 0.0


@pytest.mark.validation
def test_reblocking_to_16_tokens_keeps_the_hit():
    # The first 3,000 requests keep the test fast; the hit is compared on the same rows at both sizes.
    table = read_trace(real_trace("mooncake_fast25/conversation_trace.jsonl")).take(np.arange(3000))
    fine = reblock(table, 16)
    validate(fine)
    assert fine.hash_block_tokens == 16
    assert len(fine.hashes_of(0)) == -(-table.rows["input_tokens"][0] // 16)
    assert prefix_hit(fine)[1].token_hit_frac == pytest.approx(prefix_hit(table)[1].token_hit_frac, abs=1e-9)
    with pytest.raises(InputError, match="must divide"):
        reblock(table, 24)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.unit
def test_azure_2024_zone_aware_timestamps(tmp_path):
    path = write(
        tmp_path,
        "az24.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.003245+00:00,100,5\n"
        "2024-05-10 00:00:01.503245+00:00,200,6\n"
        "2024-05-10 02:00:00.000000+02:00,300,7\n",  # the same instant as 00:00:00 UTC
    )
    table = read_trace(path)
    assert table.meta["format"] == "azure2024"
    assert list(table.rows["input_tokens"]) == [300, 100, 200]  # resorted by absolute time
    assert table.rows["arrival_s"][2] == pytest.approx(1.503245, abs=1e-6)


@pytest.mark.unit
def test_azure_seven_fraction_digits(tmp_path):
    path = write(
        tmp_path,
        "az.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,10,1\n2023-11-16 18:17:04.0319605,20,2\n",
    )
    assert read_trace(path).rows["arrival_s"][1] == pytest.approx(0.0520005, abs=1e-7)


@pytest.mark.unit
def test_bad_row_names_file_and_line_and_skip_bad_counts(tmp_path):
    path = write(
        tmp_path,
        "az.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,10,1\n2023-11-16 18:17:04.0,ten,2\n"
        "2023-11-16 18:17:05.0,30,3\n",
    )
    with pytest.raises(InputError) as info:
        read_trace(path)
    assert info.value.where == "line 3" and info.value.source == str(path)
    assert "ContextTokens" in info.value.message
    table = read_trace(path, skip_bad=True)
    assert len(table) == 2 and table.meta["skipped_rows"] == 1


@pytest.mark.unit
def test_mooncake_hash_count_checked(tmp_path):
    path = write(
        tmp_path,
        "mc.jsonl",
        '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}\n'
        '{"timestamp": 5, "input_length": 600, "output_length": 5, "hash_ids": [0]}\n',
    )
    with pytest.raises(InputError, match="needs 2") as info:
        read_trace(path)
    assert info.value.where == "line 2"
    bad_hash = write(
        tmp_path, "mc2.jsonl", '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [-3]}\n'
    )
    with pytest.raises(InputError, match="hash_ids") as info:
        read_trace(bad_hash)
    assert info.value.where == "line 1"


BURST = (
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,100,20,120,Conversation log\n"
    "7,GPT-4,300,0,300,API log\n"
    "9,ChatGPT,50,10,60,API log\n"
)


@pytest.mark.unit
def test_burstgpt_failed_rows_dropped_or_flagged(tmp_path):
    path = write(tmp_path, "burst.csv", BURST)
    assert detect_format(path) == "burstgpt"
    dropped = read_trace(path)
    assert len(dropped) == 2 and dropped.meta["failed_dropped"] == 1
    assert list(dropped.rows["arrival_s"]) == [0.0, 4.0]
    kept = read_trace(path, failed="keep")
    assert len(kept) == 3 and kept.rows["flags"][1] == FLAG_FAILED and kept.rows["output_tokens"][1] == 0
    assert kept.meta["apps"][kept.rows["app_id"][1]] == "GPT-4/API log"


@pytest.mark.unit
def test_generic_csv_with_mapping_and_parents(tmp_path):
    path = write(
        tmp_path,
        "g.csv",
        "id,t_ms,prompt,gen,conv,after\nA,1000,10,1,c1,\nB,1500,20,2,c1,A\nC,1200,30,3,c2,\n",
    )
    mapping = {"arrival": "t_ms", "input_tokens": "prompt", "output_tokens": "gen", "session_id": "conv",
               "request_id": "id", "parent_id": "after"}
    table = read_trace(path, "generic", mapping=mapping, time_unit="ms")
    assert list(table.rows["input_tokens"]) == [10, 30, 20]
    assert table.rows["arrival_s"] == pytest.approx([0.0, 0.2, 0.5])
    assert list(table.rows["parent_id"]) == [NO_ID, NO_ID, 0]
    assert table.rows["session_id"][0] == table.rows["session_id"][2]
    with pytest.raises(InputError, match="unknown mapping field 'prompt'"):
        read_trace(path, "generic", mapping={"prompt": "x"})


@pytest.mark.unit
def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(InputError, match="cannot tell"):
        read_trace(write(tmp_path, "x.csv", "a,b\n1,2\n"))


@pytest.mark.unit
def test_generic_jsonl_with_hashes_and_validation(tmp_path):
    path = write(
        tmp_path,
        "g.jsonl",
        '{"t": 0.0, "in": 40, "out": 3, "h": [7, 8, 9]}\n{"t": 0.5, "in": 20, "out": 1, "h": [7, 8]}\n',
    )
    mapping = {"arrival_s": "t", "input_tokens": "in", "output_tokens": "out", "hash_ids": "h"}
    table = read_generic(path, mapping, hash_block_tokens=16)
    hit = prefix_hit(table)[1]
    assert hit.token_hit_frac == pytest.approx(20 / 60)  # 2 blocks of 16 tokens, capped at 20 tokens
    with pytest.raises(InputError, match="must list 2 integer hashes") as info:
        read_generic(path, mapping, hash_block_tokens=32)
    assert info.value.where == "line 1"
    broken = table.take(np.array([1, 0]))
    with pytest.raises(InputError, match="not sorted by arrival_s"):
        validate(broken)


@pytest.mark.unit
@pytest.mark.parametrize("fmt", ["mooncake", "burstgpt", "generic"])
def test_non_utf8_line_is_located_and_skippable(tmp_path, fmt):
    if fmt == "mooncake":
        good = b'{"timestamp":%d,"input_length":100,"output_length":5,"hash_ids":[1]}\n'
        data = good % 0 + b"\xff\xfe\n" + good % 5
        path, kwargs, bad_line = tmp_path / "m.jsonl", {}, 2
    elif fmt == "burstgpt":
        data = (b"Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,a,5,6,11,x\n"
                b"2,a,\xff5,6,11,x\n3,a,5,6,11,x\n")
        path, kwargs, bad_line = tmp_path / "b.csv", {}, 3
    else:
        data = b"t,i,o\n1,5,6\n2,\xe9,6\n3,5,6\n"
        path, bad_line = tmp_path / "g.csv", 3
        kwargs = {"mapping": {"arrival": "t", "input_tokens": "i", "output_tokens": "o"}}
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        read_trace(path, fmt, **kwargs)
    assert info.value.where == f"line {bad_line}" and "not UTF-8" in info.value.message
    assert info.value.source == str(path)
    table = read_trace(path, fmt, skip_bad=True, **kwargs)
    assert len(table) == 2 and table.meta["skipped_rows"] == 1


@pytest.mark.unit
@pytest.mark.parametrize("stamp", ["NaN", "1e400", "-Infinity"])
def test_mooncake_non_finite_timestamp_names_line_and_is_skippable(tmp_path, stamp):
    good = '{"timestamp":%s,"input_length":100,"output_length":5,"hash_ids":[1]}\n'
    path = write(tmp_path, "m.jsonl", good % 0 + good % stamp + good % 7)
    with pytest.raises(InputError) as info:
        read_trace(path, "mooncake")
    assert info.value.where == "line 2" and "timestamp" in info.value.message
    table = read_trace(path, "mooncake", skip_bad=True)
    assert len(table) == 2 and table.meta["skipped_rows"] == 1


@pytest.mark.unit
def test_generic_unknown_parent_and_nan_arrival_name_line(tmp_path):
    mapping = {"arrival": "t", "input_tokens": "i", "output_tokens": "o", "request_id": "id", "parent_id": "p"}
    path = write(tmp_path, "g.csv", "t,i,o,id,p\n1,5,6,a,\n2,5,6,b,zz\n3,5,6,c,a\n")
    with pytest.raises(InputError) as info:
        read_generic(path, mapping)
    assert info.value.where == "line 3" and "parent_id 'zz'" in info.value.message
    table = read_generic(path, mapping, skip_bad=True)
    assert list(table.rows["parent_id"]) == [NO_ID, 0] and table.meta["skipped_rows"] == 1
    path = write(tmp_path, "n.csv", "t,i,o\n1,5,6\nnan,5,6\n")
    with pytest.raises(InputError) as info:
        read_generic(path, {"arrival": "t", "input_tokens": "i", "output_tokens": "o"})
    assert info.value.where == "line 3" and "finite" in info.value.message


@pytest.mark.unit
def test_burstgpt_keep_zero_request_tokens_message(tmp_path):
    header = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    path = write(tmp_path, "b.csv", header + "1,a,5,6,11,x\n2,a,0,0,0,x\n")
    with pytest.raises(InputError) as info:
        read_trace(path, "burstgpt", failed="keep")
    assert info.value.where == "line 3" and "failed (0-token response) row" in info.value.message
    assert len(read_trace(path, "burstgpt")) == 1  # dropped as failed by default
    path = write(tmp_path, "c.csv", header + "1,a,5,6,11,x\n2,a,0,4,4,x\n")
    with pytest.raises(InputError, match="Request tokens is 0, expected >= 1"):
        read_trace(path, "burstgpt", failed="keep")
    path = write(tmp_path, "d.csv", header + "inf,a,5,6,11,x\n")
    with pytest.raises(InputError, match="finite"):
        read_trace(path, "burstgpt")
