"""Typed, frozen configs and the strict loader that fills them from YAML recipes.

Every config is a frozen dataclass with a docstring per field. :func:`from_dict` refuses unknown
keys (listing the valid ones) instead of silently swallowing a typo, and :func:`override`
returns a *new* config with command-line overrides applied; configs are never mutated in place.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from polydistill.errors import ConfigError

__all__ = ["from_dict", "override", "load_yaml", "to_dict", "parse_value", "parse_assignments"]

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-4`` and ``3e5`` as numbers, as YAML 1.2 does.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-4``) and ``1e-4`` is a string:
    a learning rate written the way everyone writes it reached SB3 as text.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`_Loader` (safe; ``1e-4`` is a float)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises:
        ConfigError: if the file is missing, unreadable, or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe file not found: expected a YAML file at {str(p)!r}")
    try:
        data = yaml_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {str(p)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"recipe {str(p)!r} must hold a mapping at top level, got {type(data).__name__}"
        )
    return data


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and lightly coerce, e.g. int -> float, '1e6' -> int) ``value`` against ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {tp}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, float | str):
            try:
                f = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
            if not f.is_integer():
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            return int(f)
        if isinstance(value, int):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(f):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return f
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str | None = None) -> T:
    """Build the dataclass ``cls`` from ``data``, refusing unknown keys.

    Args:
        cls: A dataclass type.
        data: Field values; missing fields take their defaults.
        where: Name used in error messages (defaults to the class name).

    Raises:
        ConfigError: on an unknown key (listing valid keys) or a value of the wrong type.
    """
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def parse_value(text: str) -> Any:
    """Parse a command-line override value with YAML rules (``1e5``, ``true``, ``[1, 2]``)."""
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        return text


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """Parse ``["a.b=1", "c=[1, 2]"]`` into ``{"a.b": 1, "c": [1, 2]}`` (YAML values).

    Raises:
        ConfigError: for an item without ``=``.
    """
    out: dict[str, Any] = {}
    for a in assignments:
        if "=" not in a:
            raise ConfigError(f"override {a!r} must look like key=value")
        k, v = a.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def override(cfg: T, assignments: list[str] | Mapping[str, Any]) -> T:
    """Return a copy of ``cfg`` with dotted overrides applied (``"distill.lr=1e-3"``).

    Raises:
        ConfigError: on a malformed assignment or an unknown field.
    """
    if isinstance(assignments, Mapping):
        items = list(assignments.items())
    else:
        items = list(parse_assignments(assignments).items())
    data = to_dict(cfg)
    for key, value in items:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a config section")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(
                f"override {key!r}: unknown key {parts[-1]!r}; valid keys: {', '.join(sorted(node))}"
            )
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Convert a (nested) dataclass config to plain dicts and lists (JSON/YAML-safe)."""
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"expected a dataclass config, got {type(cfg).__name__}")

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)
