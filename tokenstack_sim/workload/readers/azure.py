"""Azure LLM inference traces (AzurePublicDataset): ``TIMESTAMP,ContextTokens,GeneratedTokens``.

2023 (Splitwise): naive timestamps with 7 fractional digits, read as UTC. 2024 (DynamoLLM): the same
columns with tz-aware timestamps (``+00:00``). One file must not mix the two. Arrivals become seconds
after the first request; the absolute origin goes to ``meta["time_origin_s"]`` (Unix seconds).
The traces carry no prefix, session or application information.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.readers._rows import BadRows, build_table, open_text, parse_count
from tokenstack_sim.workload.table import RequestTable

HEADER = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _parse_time(text: str) -> tuple[float, bool]:
    """Unix seconds and whether the stamp carried a zone."""
    text = text.strip()
    dot = text.find(".")
    if dot >= 0:
        # Python 3.11 accepts up to 6 fractional digits reliably; keep 7th for the sub-microsecond part.
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        fraction = text[dot + 1 : end]
        stamp = datetime.fromisoformat(text[:dot] + text[end:])
        extra_s = float("0." + fraction) if fraction else 0.0
    else:
        stamp = datetime.fromisoformat(text)
        extra_s = 0.0
    aware = stamp.tzinfo is not None
    if not aware:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return (stamp - _EPOCH).total_seconds() + extra_s, aware


def read_azure(path: str | Path, *, skip_bad: bool = False) -> RequestTable:
    path = Path(path)
    bad = BadRows(path, skip_bad)
    arrival_s: list[float] = []
    input_tokens: list[int] = []
    output_tokens: list[int] = []
    zone_seen: bool | None = None
    with open_text(path, bad) as handle:
        header = [h.strip() for h in handle.readline().strip().lstrip("\ufeff").split(",")]
        if header != HEADER:
            raise InputError(f"header is {','.join(header)!r}, expected {','.join(HEADER)!r}", source=path, where="line 1")
        for line_no, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split(",")
            if len(fields) != 3:
                bad.report(line_no, f"expected 3 fields, found {len(fields)}")
                continue
            try:
                t_s, aware = _parse_time(fields[0])
            except ValueError:
                bad.report(line_no, f"TIMESTAMP {fields[0]!r} is not a date-time")
                continue
            if zone_seen is None:
                zone_seen = aware
            elif aware != zone_seen:
                bad.report(line_no, "TIMESTAMP mixes zone-aware and naive stamps in one file")
                continue
            try:
                context = parse_count(fields[1], "ContextTokens", minimum=1)
                generated = parse_count(fields[2], "GeneratedTokens")
            except ValueError as exc:
                bad.report(line_no, str(exc))
                continue
            arrival_s.append(t_s)
            input_tokens.append(context)
            output_tokens.append(generated)
    meta = {"format": "azure2024" if zone_seen else "azure2023", "source": path.name}
    bad.annotate(meta)
    return build_table(arrival_s, input_tokens, output_tokens, source=path, meta=meta)
