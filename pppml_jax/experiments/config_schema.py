"""Typed config sections: YAML mappings checked against frozen dataclasses, key by key.

A section is a frozen dataclass whose fields carry their type hint and, in ``metadata``, an
optional range (``min``, ``max``) and set of ``choices`` (:func:`option`). :func:`parse`
turns a mapping into such a dataclass and refuses, naming the dotted key, the bad value and
what is accepted: keys the dataclass does not have, values of the wrong type (a boolean is
never taken for a number), values out of range or not among the choices. :func:`to_dict`
turns a section back into plain JSON-able data.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the dotted key."""


def option(
    default: Any = dataclasses.MISSING,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: Sequence[Any] | None = None,
    help: str = "",
) -> Any:
    """A dataclass field with a default, an optional range / choice set and a help text."""
    metadata = {"min": min, "max": max, "choices": tuple(choices) if choices else None}
    metadata["help"] = help
    if isinstance(default, (list, dict)):
        frozen = tuple(default) if isinstance(default, list) else dict(default)
        return dataclasses.field(default_factory=lambda: frozen, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def join(path: str, key: Any) -> str:
    """``join("data", "options") == "data.options"``; list items as ``algorithms[2]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def describe(hint: Any) -> str:
    """A type hint in words: ``int | None`` -> ``"an integer or null"``."""
    if hint is bool:
        return "a boolean (true or false)"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in typing.get_args(hint))
    if origin in (tuple, list, Sequence) or hint in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"a list of {describe(args[0])}s" if args else "a list"
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def check_value(hint: Any, value: Any, key: str) -> Any:
    """``value`` checked against the type ``hint`` (and converted: lists to tuples, int to float).

    Raises:
      ConfigError: naming ``key``, the value and the accepted type.
    """
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, key)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_value(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r} must be {describe(hint)}")
    if origin in (tuple, list, Sequence) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be {describe(hint)}")
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        item = args[0] if args else Any
        return tuple(check_value(item, v, join(key, i)) for i, v in enumerate(value))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r} must be a mapping")
        return dict(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{key}={value!r} must be {describe(hint)}")
    return float(value) if hint is float else value


def check_range(field: dataclasses.Field, value: Any, key: str) -> None:
    """Applies the field's ``choices``, ``min`` and ``max`` (``option``) to ``value``."""
    meta = field.metadata
    note = f" ({meta['help']})" if meta.get("help") else ""
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is None:
            continue
        if meta.get("choices") and v not in meta["choices"]:
            accepted = ", ".join(repr(c) for c in meta["choices"])
            raise ConfigError(f"{key}={v!r} is not accepted; use one of {accepted}")
        if meta.get("min") is not None and v < meta["min"]:
            raise ConfigError(f"{key}={v!r} must be >= {meta['min']}{note}")
        if meta.get("max") is not None and v > meta["max"]:
            raise ConfigError(f"{key}={v!r} must be <= {meta['max']}{note}")


def parse(cls: type, value: Any, key: str) -> Any:
    """The dataclass ``cls`` built from the mapping ``value`` (``None``: every default).

    Raises:
      ConfigError: ``value`` is not a mapping, has a key ``cls`` lacks, or a bad value.
    """
    if value is None:
        value = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = key or "the config file"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(fields)}")
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown key {join(key, unknown[0])!r}; accepted keys here: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name not in value:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise ConfigError(f"{join(key, name)} is required")
            continue
        checked = check_value(hints[name], value[name], join(key, name))
        check_range(field, checked, join(key, name))
        kwargs[name] = checked
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def to_dict(value: Any) -> Any:
    """Plain JSON-able data of a section: dataclasses as dicts (or their ``to_dict()``), tuples
    as lists."""
    if callable(getattr(value, "to_dict", None)) and not isinstance(value, type):
        return to_dict(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    return value
