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
