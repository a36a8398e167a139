"""tokenstack_sim: a cycle-approximate simulator of LLM serving on heterogeneous HBM4-PIM memory.

The public Python API is re-exported here; the command line (`tokenstack`) is a thin layer over it.
"""

__version__ = "0.1.0"

from tokenstack_sim.errors import InputError  # noqa: E402

__all__ = ["InputError", "__version__"]


def __getattr__(name):
    # Lazy re-exports keep `import tokenstack_sim` cheap (no numba import until a kernel is needed).
    from tokenstack_sim import api

    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'tokenstack_sim' has no attribute {name!r}")
