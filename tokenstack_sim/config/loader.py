"""Find, read, merge and validate config files and presets.

A preset is a TOML file under the project's `arch_configs/` folder, named by its file stem. A config
file may extend a preset with `base = "name"`: the base is read first and the file's tables are merged
over it key by key, except that a file's override list for a named preset (`stack_set`, `dram_set`, ...)
comes after its base's rather than replacing it. `--set key.path=value` overrides are merged last; their values are TOML literals
(`64`, `0.5`, `"closed"`, `true`), and a bare word is taken as a string.

One override adds or replaces ONE key and never drops another setting:
- a key path reaching INTO a preset a config names (a system's `gpu_stack.layout.pim_dies`, a stack's
  `dram.clock.data_rate_gbps`) is appended, as `rest=value`, to the list of overrides that config applies
  to that preset (`stack_set`, `dram_set`, ...: OVERRIDE_ROUTES), after the config's own entries, so a
  later entry wins and the preset's own settings stay. Routing repeats at each level, so
  `gpu_stack.dram.clock.data_rate_gbps=10` on a system reaches the stack's `dram_set`;
- setting one of those lists itself (`--set 'gpu_stack.dram_set=["..."]'`) appends its items too (a list
  that starts with the config's own entries is taken whole, so they are not repeated);
- anything else replaces that one key; an unknown key is refused by the resolver naming the valid keys.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import importlib

from tokenstack_sim.config.dram import Family
from tokenstack_sim.errors import InputError

SCHEMA_VERSION = 1
_AFTER_NOTES = re.compile(r"( \(after --set [^()]*\))+$")

# kind -> "module:function" turning the merged raw table of a config file into its resolved form
# (`function(raw: dict, path: Path)`). Imported lazily, so that each kind lives in its own module and a
# new kind is one line here. A resolved config offers `describe() -> str` and `as_dict() -> dict`.
KIND_RESOLVERS = {
    "dram": "tokenstack_sim.config.dram:from_raw",
    "stack": "tokenstack_sim.config.stack:from_raw",
    "model": "tokenstack_sim.config.model:from_raw",
    "gpu": "tokenstack_sim.config.gpu:from_raw",
    "link": "tokenstack_sim.config.link:from_raw",
    "system": "tokenstack_sim.config.system:from_raw",
}
KINDS = tuple(KIND_RESOLVERS)

# kind -> {key naming a preset: the key of the list of `--set` strings the config applies to that preset}.
# A path that goes on past the preset key is routed into its list (module docstring); where the lists
# are read: config/system.py (resolve_system) and config/stack.py (resolve_stack).
OVERRIDE_ROUTES = {
    "system": {"gpu_stack": "stack_set", "gpu": "gpu_set", "gpu_link": "gpu_link_set",
               "host_link": "host_link_set", "pim_device.stack": "pim_device.stack_set",
               "pim_device.link": "pim_device.link_set"},
    "stack": {"dram": "dram_set"},
}


def arch_configs_dir() -> Path:
    """The built-in preset folder: next to the package in a checkout, or under sys.prefix when installed."""
    for candidate in (Path(__file__).resolve().parents[2] / "arch_configs",
                      Path(sys.prefix) / "share" / "tokenstack_sim" / "arch_configs"):
        if candidate.is_dir():
            return candidate
    raise InputError("the built-in arch_configs/ folder was not found; install with `pip install -e .` "
                     "from a checkout")


def list_presets() -> dict[str, Path]:
    """Preset name → file, for every config under arch_configs/ (families are not presets)."""
    root = arch_configs_dir()
    out = {}
    for path in sorted(root.rglob("*.toml")):
        if "families" in path.relative_to(root).parts:
            continue
        out[path.stem] = path
    return out


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise InputError("file not found", source=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", source=path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=path) from None


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def locate(name_or_path: str) -> Path:
    """A preset name or a path to a TOML file."""
    presets = list_presets()
    if name_or_path in presets:
        return presets[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise InputError("file not found", source=path)
        return path
    raise InputError(f"unknown preset {name_or_path!r}; known presets: {', '.join(presets)} "
                     f"(or give a path to a .toml file)")


def read_raw(name_or_path: str, _chain: tuple[Path, ...] = ()) -> tuple[dict, Path]:
    """The file's tables merged over its `base` chain, unvalidated."""
    path = locate(name_or_path)
    if path.resolve() in _chain:
        raise InputError("`base` chain loops back to this file", source=path, where="base")
    raw = read_toml(path)
    base = raw.get("base", "")
    if base:
        if not isinstance(base, str):
            raise InputError(f"expected a preset name, got {base!r}", source=path, where="base")
        if base.endswith(".toml") and not Path(base).is_absolute():
            base = str(path.parent / base)  # a relative base path is relative to the file naming it
        base_raw, _ = read_raw(base, (*_chain, path.resolve()))
        base_raw.pop("name", None)
        base_raw.pop("description", None)
        for key in raw.get("timing", {}) if isinstance(raw.get("timing"), dict) else ():
            base_raw.get("timing", {}).pop(timing_twin(key), None)
        clock = raw.get("clock")
        if isinstance(clock, dict) and "data_rate_gbps" in clock and "tck_ns" not in clock:
            base_clock = base_raw.get("clock")
            if isinstance(base_clock, dict):  # a file that restates the rate alone derives its tCK
                base_clock.pop("tck_ns", None)
        merged = _merge(base_raw, raw)
        _join_set_lists(base_raw, raw, merged)
        raw = merged
    return raw, path


def _get_dotted(raw: dict, dotted: str):
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _joined(existing: list, items: list) -> list:
    """`items` after `existing`; a list that starts with all of `existing` is taken whole (applying those
    entries twice in a row sets the same keys to the same values, so only the repeat is left out)."""
    if existing and list(items[:len(existing)]) == list(existing):
        return list(items)
    return [*existing, *items]


def _join_set_lists(base_raw: dict, top: dict, merged: dict) -> None:
    """A file's override lists for named presets (`stack_set`, `dram_set`, ...: OVERRIDE_ROUTES) come after
    its base's, as a `--set` of them does, instead of replacing them: extending a preset never drops one of
    its settings. In place on `merged`."""
    kind = top.get("kind", base_raw.get("kind"))
    for list_key in OVERRIDE_ROUTES.get(kind, {}).values():
        below, above = _get_dotted(base_raw, list_key), _get_dotted(top, list_key)
        if isinstance(below, list) and isinstance(above, list):
            *parents, leaf = list_key.split(".")
            node = merged
            for part in parents:
                node = node[part]  # a table in both, so _merge made a fresh one
            node[leaf] = _joined(below, above)


def timing_twin(key: str) -> str:
    """`nRCD_RD` <-> `tRCD_RD_ns`: the same timing parameter in the other unit."""
    return ("n" + key[1:-3]) if key.endswith("_ns") else ("t" + key[1:] + "_ns")


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise InputError(f"expected key.path=value, got {text!r}", source="--set")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.split("."), parsed


def _route(kind, path: list[str]) -> tuple[str, list[str]] | None:
    """(list key, rest of the path) when `path` reaches into a preset named by a config of `kind`."""
    best = None
    for ref, list_key in OVERRIDE_ROUTES.get(kind, {}).items():
        parts = ref.split(".")
        if len(path) > len(parts) and path[:len(parts)] == parts and (best is None or len(parts) > best[2]):
            best = (list_key, path[len(parts):], len(parts))
    return None if best is None else best[:2]


def _append_to_list(out: dict, list_key: str, items: list, text: str) -> None:
    """Append `items` (`--set` strings) to the override list at dotted `list_key` of `out`, in place."""
    *parents, leaf = list_key.split(".")
    node = out
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):  # e.g. pim_device on a system without one
            raise InputError(f"this config has no [{part}] table, so {text.partition('=')[0].strip()!r} has "
                             f"nothing to apply to", source="--set", where=text.partition("=")[0].strip())
        node[part] = child = dict(child)
        node = child
    existing = node.get(leaf, [])
    if not isinstance(existing, list):
        raise InputError(f"{list_key} of this config is {existing!r}, expected a list of KEY=VALUE strings",
                         source="--set", where=list_key)
    bad = [i for i in items if not isinstance(i, str)]
    if bad:
        raise InputError(f"expected KEY=VALUE strings in {list_key}, got {bad[0]!r}", source="--set",
                         where=list_key)
    node[leaf] = _joined(existing, items)


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> tuple[dict, list[str]]:
    """`raw` with `overrides` applied as the module docstring says, and the dotted key of each."""
    out = _merge(raw, {})
    kind = raw.get("kind")
    list_keys = set(OVERRIDE_ROUTES.get(kind, {}).values())
    keys = []
    for text in overrides:
        path, value = parse_override(text)
        dotted = ".".join(path)
        if path[0] in ("base", "schema_version", "kind"):
            raise InputError(f"{path[0]} cannot be overridden; write a file that says base = \"...\" instead",
                             source="--set", where=path[0])
        keys.append(dotted)
        routed = _route(kind, path)
        if routed is not None:  # into a named preset: one more entry in the config's list for it
            list_key, rest = routed
            _append_to_list(out, list_key, [f"{'.'.join(rest)}={text.partition('=')[2].strip()}"], text)
            continue
        if dotted in list_keys:  # the list itself: its items come after the config's own (later wins)
            _append_to_list(out, dotted, value if isinstance(value, list) else [value], text)
            continue
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise InputError(f"{'.'.join(path[:i + 1])} is {child!r}, not a table"
                                 + (f" (keys that reach into a named preset here: "
                                    f"{', '.join(k + '.<key>' for k in OVERRIDE_ROUTES[kind])})"
                                    if kind in OVERRIDE_ROUTES else ""), source="--set", where=dotted)
            node[part] = child = dict(child)
            node = child
        leaf = path[-1]
        if path[0] == "timing":  # a timing given in the other unit replaces the preset's value
            node.pop(timing_twin(leaf), None)
        if path == ["clock", "data_rate_gbps"] and _rate_alone(out, overrides):
            node.pop("tck_ns", None)  # derived from the new rate (config/dram.py), as the twin timings are
        node[leaf] = value
    return out, keys


# The row timings that say whether a DRAM preset's core is given in ns (a pin-rate change keeps them in
# ns) or in cycles (a speed bin: its cycle counts were set for its own clock).
_CORE_TIMINGS_NS = ("tRCD_RD_ns", "tRP_ns", "tRAS_ns")


def _rate_alone(raw: dict, overrides) -> bool:
    """A pin rate set without a tCK in the same overrides, on a DRAM config whose core timings are in ns:
    the stated tCK is dropped so the rate derives it (beats per tCK / rate) and the ns timings scale. A
    config with its core in cycles (a speed bin, e.g. hbm3-ramulator21) keeps its tCK, so a rate alone is
    refused there (config/dram.py names both keys)."""
    if any(parse_override(t)[0] == ["clock", "tck_ns"] for t in overrides):
        return False
    timing = raw.get("timing")
    return isinstance(timing, dict) and all(k in timing for k in _CORE_TIMINGS_NS)


def load_family(name: str, *, source: str | None = None) -> Family:
    path = arch_configs_dir() / "dram" / "families" / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.toml"))
        raise InputError(f"unknown DRAM family {name!r}; known: {', '.join(known)}", source=source,
                         where="family")
    raw = read_toml(path)
    for key in ("levels", "commands", "constraints"):
        if not isinstance(raw.get(key), list):
            raise InputError("expected a list", source=path, where=key)
    allowed = {"name", "scope", "prev", "next", "latency", "window", "sibling"}
    for i, c in enumerate(raw["constraints"]):
        unknown = set(c) - allowed
        if unknown:
            raise InputError(f"unknown key; valid keys here: {', '.join(sorted(allowed))}", source=path,
                             where=f"constraints[{i}].{sorted(unknown)[0]}")
        for key in ("name", "scope", "prev", "next", "latency"):
            if key not in c:
                raise InputError("required key is missing", source=path, where=f"constraints[{i}].{key}")
    return Family(name=name, levels=tuple(raw["levels"]), commands=tuple(raw["commands"]),
                  constraints=tuple(raw["constraints"]), source=str(path))


def _check_header(raw: dict, path: Path) -> str:
    version = raw.get("schema_version")
    if version is None:
        raise InputError(f"required key is missing (this program reads schema_version = {SCHEMA_VERSION})",
                         source=path, where="schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(f"unsupported schema version {version!r}; this program reads {SCHEMA_VERSION}",
                         source=path, where="schema_version")
    kind = raw.get("kind")
    if kind not in KIND_RESOLVERS:
        raise InputError(f"expected one of {', '.join(map(repr, KINDS))}, got {kind!r}", source=path, where="kind")
    return kind


# The folder of arch_configs/ that holds the presets of each kind.
KIND_FOLDERS = {"dram": "dram", "stack": "stacks", "model": "models", "gpu": "gpu", "link": "links",
                "system": "systems"}


def _list_key_as_preset(key: str) -> str:
    """`gpu_stack.dram_set` -> `gpu_stack.dram`: an override of a preset's list, as the path its errors name."""
    for routes in OVERRIDE_ROUTES.values():
        for ref, list_key in routes.items():
            if key == list_key or key.endswith("." + list_key):
                return key[:len(key) - len(list_key)] + ref
    return key


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = (), *, kind: str | None = None):
    """Read a preset or file, apply `--set` overrides, validate and resolve it.

    `kind` (optional) is the kind the caller needs; another kind is refused by name, and an unknown
    name lists the presets of that kind only."""
    if kind is not None and kind in KIND_FOLDERS and not Path(name_or_path).suffix == ".toml" \
            and not Path(name_or_path).exists() and name_or_path not in list_presets():
        root = arch_configs_dir() / KIND_FOLDERS[kind]
        known = sorted(p.stem for p in root.glob("*.toml")) if root.is_dir() else []
        raise InputError(f"unknown {kind} {name_or_path!r}; known: {', '.join(known)} (or a path to a .toml file)")
    raw, path = read_raw(name_or_path)
    raw, override_keys = apply_overrides(raw, overrides)
    try:
        found = _check_header(raw, path)
        if kind is not None and found != kind:
            raise InputError(f"expected a {kind!r} config here, but this file is kind = {found!r}",
                             source=path, where="kind")
        module, func = KIND_RESOLVERS[found].split(":")
        return getattr(importlib.import_module(module), func)(raw, path)
    except InputError as exc:
        # an error at or around an overridden key is blamed on --set (a relation error names `timing`)
        # a nested preset's error reads "gpu_stack (dram (clock.x))"; its dotted form is gpu_stack.dram.clock.x
        w = (exc.where or "").replace(" (", ".").rstrip(")")
        if w and any(w == k or w.startswith(k + ".") or k.startswith(w + ".")
                     for k in [*override_keys, *map(_list_key_as_preset, override_keys)]):
            note = "" if w in override_keys else f" (after --set {', '.join(override_keys)})"
            # the outermost level's note names what the user typed; a nested preset's names its inner lists
            message = _AFTER_NOTES.sub("", exc.message)
            raise InputError(message + note, source="--set", where=w) from None
        raise
