"""The public Python API. The CLI calls these same functions."""

from tokenstack_sim.config.loader import list_presets, load_config

__all__ = ["list_presets", "load_config", "run_dram"]


def run_dram(*args, **kwargs):
    """Run the cycle-level DRAM kernel; see `tokenstack_sim.hw.dram.run.run_dram`."""
    from tokenstack_sim.hw.dram.run import run_dram as _run

    return _run(*args, **kwargs)
