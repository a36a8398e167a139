"""Build frozen dataclasses from parsed TOML, validating every key.

A config section is a frozen dataclass whose fields carry their constraints in `metadata`
(`spec(min=..., max=..., choices=..., doc=...)`). `build(cls, raw, where, source)` checks a raw dict
against it: an unknown key is rejected by name with the valid keys listed; a wrong type or an
out-of-range value names the file and the full key path. Nothing is coerced silently except
int → float where a float is expected.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

from tokenstack_sim.errors import InputError


def spec(default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None,
         doc: str = "", default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with validation metadata."""
    meta = {"min": min, "max": max, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin in (dict, collections.abc.Mapping):
        return f"a table of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _convert(tp: Any, value: Any, where: str, source: str | None) -> Any:
    origin = get_origin(tp)

    def fail() -> InputError:
        return InputError(f"expected {_type_name(tp)}, got {_describe(value)}", source=source, where=where)

    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        errors = []
        for arg in args:
            try:
                return _convert(arg, value, where, source)
            except InputError as exc:
                errors.append(exc)
        raise fail()
    if origin is Literal:
        if value in get_args(tp) and type(value) is type(get_args(tp)[0]):
            return value
        raise fail()
    if origin is tuple:
        if not isinstance(value, list):
            raise fail()
        (item_tp, *_rest) = get_args(tp)
        return tuple(_convert(item_tp, v, f"{where}[{i}]", source) for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise fail()
        _key_tp, val_tp = get_args(tp)
        return types.MappingProxyType({k: _convert(val_tp, v, f"{where}.{k}", source) for k, v in value.items()})
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail()
        return build(tp, value, where=where, source=source)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if tp is Any:
        return value
    raise TypeError(f"schema type {tp!r} is not supported")  # a programming error, not bad input


def build(cls: type, raw: dict, *, where: str = "", source: str | None = None) -> Any:
    """Validate `raw` against dataclass `cls` and return a frozen instance."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise InputError(f"unknown key; valid keys here: {', '.join(sorted(fields))}", source=source, where=key)
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InputError(f"required key is missing ({f.metadata.get('doc') or _type_name(hints[name])})",
                                 source=source, where=key)
            continue
        value = _convert(hints[name], raw[name], key, source)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if lo is not None and value < lo:
                raise InputError(f"must be >= {lo}, got {value}", source=source, where=key)
            if hi is not None and value > hi:
                raise InputError(f"must be <= {hi}, got {value}", source=source, where=key)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except InputError as exc:  # __post_init__ checks that relate several keys
        raise exc.located(source=source, where_prefix=where or None) from None


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config (for printing and hashing)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, types.MappingProxyType | dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
