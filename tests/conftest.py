"""Shared test fixtures: where the reference data lives, and one numba warm-up per session."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; tests that need it skip cleanly where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(scope="session")
def dram_warm():
    """Compile the DRAM kernels once per session (numba also caches them on disk)."""
    from tokenstack_sim.hw.dram.run import warmup

    warmup()


@pytest.fixture(scope="session")
def opcost_cache(tmp_path_factory) -> Path:
    """One characterized-op-cost cache for the whole session: $TOKENSTACK_CACHE points at a pytest tmp
    folder from first use to the end of the session, so tests that need the same (stack, op) table
    characterize it once (5-20 s each) and never read or write ~/.cache."""
    path = tmp_path_factory.mktemp("opcost_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("TOKENSTACK_CACHE", str(path))
    yield path
    mp.undo()
