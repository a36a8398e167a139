"""The real reference traces beside the project (../shared/traces); tests skip cleanly without them."""

from pathlib import Path

import pytest

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


def real_trace(relative: str) -> Path:
    path = TRACES / relative
    if not path.is_file():
        pytest.skip(f"reference trace {relative} not present beside the project")
    return path
