"""Architecture parameters of a sweep point, as the `--set` overrides the config loader already reads.

A sweep's `[params]` table names a path in a system config, exactly as `tokenstack check SYSTEM --set
PATH=VALUE` and `tokenstack run SYSTEM --set PATH=VALUE` take it, e.g. `memory_utilization`,
`gpu_stacks_per_gpu`, `gpu_stack.layout.pim_dies`, `gpu_stack.dram.clock.data_rate_gbps` or
`pim_device.stack.pim.lanes`. Each parameter becomes one `PATH=VALUE` string; the loader
(config/loader.py `apply_overrides`) routes a path that reaches into a preset the system names into the
system's list of overrides for it (`stack_set`, the stack's `dram_set`, ...), after the preset's own
entries, so one parameter changes one key and drops nothing. Nothing here reads or checks a value: the
loader does, when `load_config(system, overrides, kind="system")` resolves the point.

Leaves out: inline tables as values (a parameter is a TOML scalar or a list of them).
"""

from __future__ import annotations

import json
import math


def toml_literal(value) -> str:
    """`value` written as the TOML literal `parse_override` reads back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a --set value")


def system_overrides(system: str, params: dict) -> list[str]:
    """The `--set` strings that give `system` (a preset name or TOML path; kept for the callers, the
    strings do not depend on it) the parameter values `params` (path -> value), in the order of `params`."""
    return [f"{path}={toml_literal(value)}" for path, value in params.items()]
