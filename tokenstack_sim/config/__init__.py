"""Configuration: TOML files and presets → validated, frozen, resolved dataclasses."""

from tokenstack_sim.config.dram import DramConfig, ResolvedDram
from tokenstack_sim.config.loader import list_presets, load_config

__all__ = ["DramConfig", "ResolvedDram", "list_presets", "load_config"]
