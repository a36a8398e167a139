"""Find, read, merge and validate config files and presets.

A preset is a TOML file under the project's `arch_configs/` folder, named by its file stem. A config
file may extend a preset with `base = "name"`: the base is read first and the file's tables are merged
over it key by key. `--set key.path=value` overrides are merged last; their values are TOML literals
(`64`, `0.5`, `"closed"`, `true`), and a bare word is taken as a string.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import importlib

from tokenstack_sim.config.dram import Family
from tokenstack_sim.errors import InputError

SCHEMA_VERSION = 1

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
        raw = _merge(base_raw, raw)
    return raw, path


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


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> tuple[dict, list[str]]:
    out = _merge(raw, {})
    keys = []
    for text in overrides:
        path, value = parse_override(text)
        if path[0] in ("base", "schema_version", "kind"):
            raise InputError(f"{path[0]} cannot be overridden; write a file that says base = \"...\" instead",
                             source="--set", where=path[0])
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else child
                if not isinstance(child, dict):
                    raise InputError(f"{part!r} is not a table; cannot set {'.'.join(path)}", source="--set")
                node[part] = child = dict(child)
            node = child
        leaf = path[-1]
        if path[0] == "timing":  # a timing given in the other unit replaces the preset's value
            node.pop(timing_twin(leaf), None)
        node[leaf] = value
        keys.append(".".join(path))
    return out, keys


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
        w = exc.where or ""
        if w and any(w == k or w.startswith(k + ".") or k.startswith(w + ".") for k in override_keys):
            note = "" if w in override_keys else f" (after --set {', '.join(override_keys)})"
            raise InputError(exc.message + note, source="--set", where=exc.where) from None
        raise
