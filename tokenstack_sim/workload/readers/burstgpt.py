"""BurstGPT (KDD'25) CSV: ``Timestamp`` (s), ``Model``, ``Request tokens``, ``Response tokens``,
``Total tokens``, ``Log Type``; v3 adds ``Session ID`` and ``Elapsed time``.

Failed requests are logged with a 0-token response (1.8-7.3% of rows depending on the file). They are
handled explicitly by ``failed``:
- ``"drop"`` (default): removed; their number goes to ``meta["failed_dropped"]``;
- ``"keep"``: kept with ``FLAG_FAILED`` set and 0 output tokens, so a study can replay the load they put
  on prefill.
``app_id`` indexes ``meta["apps"]``, one entry per ``Model/Log Type`` pair; ``Session ID`` becomes a dense
``session_id``. The trace carries no prefix hashes.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from tokenstack_sim.errors import InputError
from tokenstack_sim.workload.readers._rows import BadRows, build_table, open_text, parse_count
from tokenstack_sim.workload.table import FLAG_FAILED, NO_ID, RequestTable

REQUIRED = ("Timestamp", "Model", "Request tokens", "Response tokens", "Log Type")
FAILED_POLICIES = ("drop", "keep")


def read_burstgpt(path: str | Path, *, skip_bad: bool = False, failed: str = "drop") -> RequestTable:
    path = Path(path)
    if failed not in FAILED_POLICIES:
        raise InputError(f"failed-row policy {failed!r} is not one of {', '.join(FAILED_POLICIES)}", source=path)
    bad = BadRows(path, skip_bad)
    arrival_s: list[float] = []
    input_tokens: list[int] = []
    output_tokens: list[int] = []
    app_ids: list[int] = []
    session_ids: list[int] = []
    flags: list[int] = []
    apps: dict[str, int] = {}
    sessions: dict[str, int] = {}
    dropped = 0
    with open_text(path, bad) as handle:
        reader = csv.reader(handle)
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise InputError(f"missing column(s) {', '.join(missing)}; header is {header}", source=path, where="line 1")
        col = {name: header.index(name) for name in header}
        session_col = col.get("Session ID")
        for fields in reader:
            line_no = reader.line_num
            if not fields:
                continue
            if len(fields) != len(header):
                bad.report(line_no, f"expected {len(header)} fields, found {len(fields)}")
                continue
            try:
                t_s = float(fields[col["Timestamp"]])
                if not (math.isfinite(t_s) and t_s >= 0):
                    raise ValueError(f"Timestamp is {fields[col['Timestamp']]!r}, expected finite seconds >= 0")
                request = parse_count(fields[col["Request tokens"]], "Request tokens")
                response = parse_count(fields[col["Response tokens"]], "Response tokens")
            except ValueError as exc:
                bad.report(line_no, str(exc))
                continue
            is_failed = response == 0
            if is_failed and failed == "drop":
                dropped += 1
                continue
            if request < 1:
                # A failed row is one with a 0-token response; its request tokens are what it puts on
                # prefill, so a kept row (failed or not) needs at least one.
                if is_failed:
                    bad.report(line_no, "Request tokens is 0 on a failed (0-token response) row; "
                                        "with --failed keep a row needs >= 1 request token to replay")
                else:
                    bad.report(line_no, "Request tokens is 0, expected >= 1")
                continue
            app = f"{fields[col['Model']].strip()}/{fields[col['Log Type']].strip()}"
            arrival_s.append(t_s)
            input_tokens.append(request)
            output_tokens.append(response)
            app_ids.append(apps.setdefault(app, len(apps)))
            session = fields[session_col].strip() if session_col is not None else ""
            session_ids.append(sessions.setdefault(session, len(sessions)) if session else NO_ID)
            flags.append(FLAG_FAILED if is_failed else 0)
    meta = {"format": "burstgpt", "source": path.name, "apps": list(apps), "failed_policy": failed, "failed_dropped": dropped}
    bad.annotate(meta)
    columns = {"app_id": app_ids, "session_id": session_ids, "flags": flags}
    return build_table(arrival_s, input_tokens, output_tokens, source=path, meta=meta, columns=columns)
