"""Strict config dataclasses: built from plain dicts (YAML, JSON, keyword arguments), checked key by key.

One mechanism serves every layer: head configs, LoRA settings, data set configs and whole recipe configs are
dataclasses read by :func:`from_dict`, which

- rejects unknown keys, naming each by its full path and suggesting the closest known name
  (``unknown key(s) model.head_config.hiden_sizes (did you mean 'hidden_sizes'?)``);
- checks values against the field types: nested dataclasses, ``X | None`` and other unions, ``Literal``,
  tuples (fixed length or ``tuple[X, ...]``), lists and dicts, element by element; bool is not an int, an int
  is a float, and a string such as ``"1e-4"`` (YAML 1.1 reads exponents without a dot as strings) is a float;
- reports a ``ValueError`` raised by a config's ``__post_init__`` as a :class:`ConfigError` prefixed with the
  path of that config.

It lives in the lowest layer so that ``heads`` and ``finetune`` can both build on it.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["ConfigError", "StrictConfig", "did_you_mean", "from_dict", "to_dict"]

T = TypeVar("T")
C = TypeVar("C", bound="StrictConfig")


class ConfigError(ValueError):
    """A configuration names an unknown key, lacks a required one, or has a value of the wrong type or range.

    The message starts with (or names) the path of the offending key, e.g. ``train.max_steps``.
    """


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``known`` to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclasses.dataclass
class StrictConfig:
    """Dataclass base built from a dict by :func:`from_dict` and written back by :func:`to_dict`."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
        """Build from ``data``, checking keys and types; ``where`` is the path used in error messages.

        Raises:
            ConfigError: an unknown or missing key, a value of the wrong type, or a value ``__post_init__``
                rejects.
        """
        return from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists) that :meth:`from_dict` accepts back."""
        return to_dict(self)

    @classmethod
    def config_class_for(cls, data: Mapping[str, Any], where: str) -> type[StrictConfig]:
        """The class that ``data`` describes: ``cls`` itself, or a subclass chosen by one of its keys.

        A family of configs (for instance one per data set, chosen by ``name``) overrides this, so that
        :func:`from_dict` checks ``data`` against the right fields.
        """
        return cls


def _path(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and values of the wrong type.

    Args:
        cls: a dataclass (a :class:`StrictConfig` may pick a subclass from ``data``).
        data: a mapping of field name -> value.
        where: the path of ``data`` in the whole config (``"model.head_config"``), used in error messages.

    Raises:
        ConfigError: see the module docstring.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    if isinstance(cls, type) and issubclass(cls, StrictConfig):
        cls = cls.config_class_for(data, where)  # type: ignore[assignment]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        named = ", ".join(_path(where, k) + did_you_mean(k, fields) for k in unknown)
        raise ConfigError(f"unknown key(s) {named}; {cls.__name__} takes: {', '.join(sorted(fields))}")
    no_default = dataclasses.MISSING
    required = [n for n, f in fields.items() if f.default is no_default and f.default_factory is no_default]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(f"missing required key(s) {', '.join(_path(where, k) for k in missing)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(v, hints[k], _path(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise  # already names its path
    except ValueError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = typing.get_args(tp)
        inner = ", ".join("..." if a is Ellipsis else _describe(a) for a in args)
        return f"{origin.__name__}[{inner}]" if args else origin.__name__
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against (and converted to) type ``tp``; ConfigError naming ``where`` otherwise."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as e:
                errors.append(e)
        # a value of the right kind with a problem inside (a nested key, an item) says more than the union
        inner = [e for e in errors if not str(e).startswith(f"{where}: expected ")]
        if inner:
            raise inner[0]
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value in args and not isinstance(value, bool):
            return value
        hint = did_you_mean(value, [a for a in args if isinstance(a, str)]) if isinstance(value, str) else ""
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}{hint}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return value if isinstance(value, tp) else from_dict(tp, value, where)
    base = origin or tp
    if base in (tuple, list) and isinstance(value, (tuple, list)):
        return base(_sequence(value, args, where, fixed=base is tuple))
    if base is dict and isinstance(value, Mapping):
        key_tp, value_tp = args or (Any, Any)
        return {_convert(k, key_tp, where): _convert(v, value_tp, _path(where, k)) for k, v in value.items()}
    return _scalar(value, tp, where)


def _sequence(value: list | tuple, args: tuple, where: str, fixed: bool) -> list:
    if not args:
        return list(value)
    if fixed and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise ConfigError(f"{where}: needs {len(args)} items, got {len(value)}: {list(value)!r}")
        return [_convert(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args))]
    return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]


def _scalar(value: Any, tp: Any, where: str) -> Any:
    base = typing.get_origin(tp) or tp
    if isinstance(value, bool):
        if base is bool:
            return value
    elif base is int and isinstance(value, numbers.Integral):
        return int(value)
    elif base is float and isinstance(value, numbers.Real):
        return float(value)
    elif base is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    elif isinstance(base, type) and base not in (int, float) and isinstance(value, base):
        return value
    raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (tuples become lists), for YAML / JSON and :func:`from_dict`."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(config).__name__}")
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
