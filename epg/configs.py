"""The one config mechanism: frozen dataclasses to plain dicts and back, with the checks written once.

Every config of the project (``EPGConfig``, ``IngestConfig``, ``PretrainConfig``, the job
configs ...) derives from ``Config``, so a run records its whole configuration with
``to_dict`` (JSON-ready: nested dicts, lists for tuples) and is rebuilt from that record
with ``from_dict``. ``from_dict`` is where loading is checked: a field the class does not
have is an error naming it and the known ones, a value of the wrong type is an error naming
the field (``EPGConfig.pairs.k must be int, got '3'``); nested configs, tuples and Optional
fields are rebuilt from their plain form; missing fields take their defaults. Value rules
(ranges, choices) stay in each class's ``__post_init__``, with ``fail``/``positive``/
``non_negative``/``one_of`` for the messages, so an invalid config cannot be built at all.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T", bound="Config")


class Config:
    """Base of every config dataclass: ``to_dict`` / ``from_dict`` with one set of checks.

    ``config_error`` is the exception class loading raises (a ``ValueError`` subclass a
    stage may choose so its CLI reports it like its other input errors).
    """

    config_error: ClassVar[type[ValueError]] = ValueError

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists, paths strings), for run records and JSON."""
        return to_plain(self)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """Inverse of ``to_dict``; unknown fields and mistyped values are errors naming the field."""
        return from_dict(cls, data)

    @classmethod
    def default_of(cls, name: str) -> Any:
        """The default of one field (CLI flags take their defaults from here)."""
        return field_default(cls, name)


def to_plain(value: Any) -> Any:
    """A JSON-ready copy: dataclasses -> dicts, tuples -> lists, paths -> strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def field_default(cls: type, name: str) -> Any:
    """The default value of field ``name`` of dataclass ``cls`` (its factory called)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
            if f.default is dataclasses.MISSING:
                raise KeyError(f"{cls.__name__}.{name} has no default")
            return f.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def from_dict(cls: type[T], data: Mapping[str, Any], path: str | None = None,
              error: type[ValueError] | None = None) -> T:
    """Build ``cls`` from its plain form; errors name ``path.field`` and are ``error`` (default:
    ``cls.config_error``; nested configs raise the outermost class's error)."""
    path = path or cls.__name__
    error = error or getattr(cls, "config_error", ValueError)
    if not isinstance(data, Mapping):
        raise error(f"{path} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise error(f"{path}: unknown field(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _load(value, hints[name], f"{path}.{name}", error) for name, value in data.items()}
    return cls(**values)


def _load(value: Any, hint: Any, where: str, error: type[ValueError]) -> Any:
    """``value`` rebuilt as ``hint`` describes, or an error naming ``where``."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _load(value, option, where, error)
            except ValueError:
                continue
        raise error(f"{where} must be {_name(hint)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise error(f"{where} must be one of {args}, got {value!r}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return from_dict(hint, value, where, error) if isinstance(value, Mapping) else _wrong(value, hint, where, error)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _wrong(value, hint, where, error)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(v, args[0], f"{where}[{i}]", error) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise error(f"{where} must have {len(args)} values, got {value!r}")
        return tuple(_load(v, a, f"{where}[{i}]", error) for i, (v, a) in enumerate(zip(value, args))) if args \
            else tuple(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            _wrong(value, hint, where, error)
        return [_load(v, args[0], f"{where}[{i}]", error) for i, v in enumerate(value)] if args else list(value)
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            _wrong(value, hint, where, error)
        if not args:
            return dict(value)
        return {_load(k, args[0], where, error): _load(v, args[1], f"{where}[{k!r}]", error) for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _wrong(value, hint, where, error)
        return float(value) if isinstance(value, int) else value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _wrong(value, hint, where, error)
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            _wrong(value, hint, where, error)
        return value
    if hint is type(None):
        if value is not None:
            _wrong(value, hint, where, error)
        return None
    if isinstance(hint, type) and issubclass(hint, PurePath):
        if not isinstance(value, (str, PurePath)):
            _wrong(value, hint, where, error)
        return hint(value)
    return value


def _wrong(value: Any, hint: Any, where: str, error: type[ValueError]) -> Any:
    raise error(f"{where} must be {_name(hint)}, got {value!r}")


def _name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


# -- value rules for __post_init__: errors that name the field --------------------------------


def fail(obj: object, name: str, rule: str, value: object, error: type[ValueError] | None = None) -> None:
    """Raise ``<Class>.<name> must be <rule>, got <value>``."""
    raise (error or getattr(obj, "config_error", ValueError))(f"{type(obj).__name__}.{name} must be {rule}, got {value!r}")


def positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            fail(obj, name, "> 0", value)


def non_negative(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value >= 0:
            fail(obj, name, ">= 0", value)


def one_of(obj: object, name: str, allowed: tuple[Any, ...]) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        fail(obj, name, f"one of {allowed}", value)
