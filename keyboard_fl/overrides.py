"""Configuration for research sweeps: partial JSON files and ``section.field=value`` overrides.

A :class:`~keyboard_fl.config.RunConfig` is a tree of frozen dataclasses. Two
ways change any leaf of it without writing Python:

* :func:`merge_json` lays a full or partial config (the JSON of
  ``RunConfig.to_json``, any subset of it) over a base config;
* :func:`apply_sets` applies ``--set`` assignments such as
  ``federated.local_epochs=2`` or ``canaries.repetitions=1,10``.

Every value is checked against the dataclass field's type (int, float, bool,
str, ``Literal`` choices, ``X | None`` via ``null``, tuples, nested sections)
and every error names the field, e.g. ``unknown field federated.local_epoch
(did you mean local_epochs?)``. The dataclasses' own ``__post_init__`` checks
(bounds) still run on the result. Errors are :class:`ConfigError`, a
``ValueError``, so the CLI shows them as one line with exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from keyboard_fl.config import RunConfig

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ConfigError(ValueError):
    """A config file or ``--set`` override that does not fit the config's fields or types."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a dataclass (the modules use ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _describe(a) for a in args)
    if typing.get_origin(tp) is tuple:
        return f"list of {_describe(args[0])}"
    return "object" if dataclasses.is_dataclass(tp) else getattr(tp, "__name__", str(tp))


def _field_type(cls: type, name: str, path: str) -> Any:
    """The type of field ``name`` of dataclass ``cls``; unknown names get a suggestion."""
    hints = _hints(cls)
    if name not in hints:
        close = difflib.get_close_matches(name, list(hints), n=1)
        hint = f"did you mean {close[0]}?" if close else f"{cls.__name__} has {', '.join(hints)}"
        raise ConfigError(f"unknown field {path} ({hint})")
    return hints[name]


def _section_class(tp: Any) -> type | None:
    """The dataclass of a section field (``X`` or ``X | None``), or None for a leaf."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if found else None
    return None


def check_value(value: Any, tp: Any, path: str) -> Any:
    """``value`` (as parsed from JSON) if it fits type ``tp``, converted (lists → tuples, ints → floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{path}: expected {_describe(tp)}, got {json.dumps(value)[:80]}")
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arm in (a for a in args if a is not type(None)):
            try:
                return check_value(value, arm, path)
            except ConfigError:
                pass
        raise bad
    if origin is typing.Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: must be one of {_describe(tp)}, got {json.dumps(value)[:80]}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        return tuple(check_value(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise ConfigError(f"{path}: fields of type {tp!r} cannot be set from a config")


def _merge(obj: Any, cls: type, patch: Any, path: str) -> Any:
    """A new ``cls`` instance: ``obj`` (an instance or None) with ``patch`` (a JSON object) laid over it."""
    if not isinstance(patch, Mapping):
        raise ConfigError(f"{path or 'config'}: expected an object for {cls.__name__}, got {json.dumps(patch)[:80]}")
    base = obj if obj is not None else cls()
    changes = {}
    for name, value in patch.items():
        where = f"{path}.{name}" if path else str(name)
        tp = _field_type(cls, str(name), where)
        section = _section_class(tp)
        if section is not None and value is not None:
            changes[name] = _merge(getattr(base, name), section, value, where)
        else:
            changes[name] = check_value(value, tp, where)
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def merge_json(cfg: RunConfig, patch: Mapping[str, Any], *, where: str = "config") -> RunConfig:
    """``cfg`` with a full or partial config object laid over it; errors are prefixed with ``where``."""
    try:
        return _merge(cfg, RunConfig, patch, "")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_json(path: str | Path) -> dict[str, Any]:
    """The JSON object in a config file; a syntax error names the file and line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object (a full or partial RunConfig), got {type(data).__name__}")
    return data


def parse_value(text: str, tp: Any, path: str) -> Any:
    """Parse the command-line text of a ``--set`` value for a field of type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("null", "none") and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        for arm in arms:
            try:
                return parse_value(text, arm, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {text!r}")
    if origin is tuple:
        s = text.strip()
        items = json.loads(s) if s.startswith("[") else [v for v in s.split(",") if v.strip()]
        return tuple(parse_value(str(v), args[0], f"{path}[{i}]") for i, v in enumerate(items))
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ConfigError(f"{path}: expected true or false, got {text!r}")
    if tp is int or tp is float:
        try:
            return check_value(json.loads(text), tp, path)
        except json.JSONDecodeError:
            raise ConfigError(f"{path}: expected {_describe(tp)}, got {text!r}") from None
    if tp is str or origin is typing.Literal:
        return check_value(text, tp, path)
    raise ConfigError(f"{path}: fields of type {tp!r} cannot be set from the command line")


def parse_set(assignment: str) -> tuple[list[str], str]:
    """Split ``section.field=value`` into its path and raw value."""
    key, eq, value = assignment.partition("=")
    parts = key.strip().split(".")
    if not eq or not all(parts):
        raise ConfigError("expected section.field=value (e.g. federated.local_epochs=2)")
    return parts, value


def apply_sets(cfg: RunConfig, assignments: Iterable[str]) -> RunConfig:
    """``cfg`` with each ``section.field=value`` assignment applied in order."""
    for assignment in assignments:
        try:
            cfg = _merge(cfg, RunConfig, _set_patch(assignment), "")
        except ConfigError as e:
            raise ConfigError(f"--set {assignment}: {e}") from None
    return cfg


def _set_patch(assignment: str) -> dict[str, Any]:
    """The nested JSON patch of one ``section.field=value`` assignment, its value type-checked."""
    parts, raw = parse_set(assignment)
    cls: type = RunConfig
    for i, part in enumerate(parts[:-1]):  # walk the sections
        section = _section_class(_field_type(cls, part, ".".join(parts[: i + 1])))
        if section is None:
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is a value, not a section")
        cls = section
    full = ".".join(parts)
    tp = _field_type(cls, parts[-1], full)
    if _section_class(tp) is not None:
        value = None if raw.strip().lower() in ("null", "none") else _json_object(raw, full)
    else:
        value = parse_value(raw, tp, full)
    patch: Any = value
    for part in reversed(parts):
        patch = {part: patch}
    return patch


def _json_object(raw: str, path: str) -> dict:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{path} is a section: set one of its fields ({path}.FIELD=value), or give a JSON object or null"
        )
    return value


def resolve(base: RunConfig, *, config_file: str | Path | None = None, sets: Iterable[str] = ()) -> RunConfig:
    """``base`` (a preset), then the ``--config`` file laid over it, then the ``--set`` assignments."""
    cfg = base
    if config_file is not None:
        cfg = merge_json(cfg, load_json(config_file), where=str(config_file))
    return apply_sets(cfg, sets)


__all__ = ["ConfigError", "apply_sets", "check_value", "load_json", "merge_json", "parse_set", "parse_value", "resolve"]
