"""Architecture parameters of a sweep point, as the `--set` overrides the config loader already reads.

A sweep's `[params]` table names a path in a system config, exactly as `tokenstack check SYSTEM --set
PATH=VALUE` would, e.g. `memory_utilization`, `gpu_stacks_per_gpu` or `pim_device.pim_stacks`. A system
names its stack, GPU and PIM-device presets rather than holding their fields, and reaches into them with
its own `stack_set` / `gpu_set` / `pim_device.stack_set` lists of `--set` strings (config/system.py).
So a path that starts with one of those preset references is routed into that list:

- `gpu_stack.<path>`          -> appended to the system's `stack_set`   (e.g. `gpu_stack.layout.pim_dies`)
- `gpu.<path>`                -> appended to the system's `gpu_set`
- `pim_device.stack.<path>`   -> appended to the system's `pim_device.stack_set`

Everything else is a plain `--set` on the system. The system's own entries in those lists are kept and
the sweep's come after them (a later override wins). Nothing here reads or checks a value: the loader
does, when `load_config(system, overrides, kind="system")` resolves the point.

Leaves out: inline tables as values (a parameter is a TOML scalar or a list of them).
"""

from __future__ import annotations

import json
import math

from tokenstack_sim.config.loader import read_raw

# (path prefix in the sweep spec, the system key holding --set strings for that preset), most specific first
ROUTES = (("pim_device.stack.", "pim_device.stack_set"), ("gpu_stack.", "stack_set"), ("gpu.", "gpu_set"))


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


def _get(raw: dict, dotted: str):
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def system_overrides(system: str, params: dict) -> list[str]:
    """The `--set` strings that give `system` (a preset name or TOML path) the parameter values `params`
    (path -> value), in the order of `params`, routed as the module docstring says."""
    direct: list[str] = []
    routed: dict[str, list[str]] = {}
    for path, value in params.items():
        for prefix, set_key in ROUTES:
            if path.startswith(prefix):
                routed.setdefault(set_key, []).append(f"{path[len(prefix):]}={toml_literal(value)}")
                break
        else:
            direct.append(f"{path}={toml_literal(value)}")
    if routed:
        raw, _ = read_raw(system)
        for set_key, items in routed.items():
            existing = _get(raw, set_key)
            existing = list(existing) if isinstance(existing, list) else []
            direct.append(f"{set_key}={toml_literal(existing + items)}")
    return direct
