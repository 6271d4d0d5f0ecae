"""Settings declared once: a dataclass field carries its help, choices and range, and validates itself.

Every config dataclass (training, mining, index building) declares its fields with :func:`setting`
and calls :func:`validate` from ``__post_init__``. The command-line options and the YAML keys are
generated from the same fields (:mod:`embedtune.cli.options`), so the CLI, a config file and the
Python API refuse a bad value with the same message, raised here as :class:`SettingError`.

Values are checked, not coerced: a YAML ``learning_rate: "1e-5"`` (a string) is refused rather than
turned into a number, because a silently re-typed value is how a config file trains the wrong run.
The one exception is paths, where ``str`` and ``Path`` are equally natural.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embedtune.errors import EmbedtuneError

_META = "embedtune"


class SettingError(EmbedtuneError):
    """A setting with a value it cannot take; the message names the setting (``field``), never a CLI flag."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.reason = field, message


@dataclasses.dataclass(frozen=True)
class Meta:
    """What a setting says about itself: help text, allowed values, numeric range, and its CLI spelling."""

    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None  # inclusive lower bound
    max: float | None = None  # inclusive upper bound
    above: float | None = None  # exclusive lower bound (e.g. a temperature must be > 0)
    below: float | None = None  # exclusive upper bound
    flag: str | tuple[str, ...] | None = None  # the CLI option(s), when not ``--field-name``; ``--no-x`` = a
    # flag that sets False
    cli: bool = True  # False: a library/YAML setting with no command-line option


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    below: float | None = None,
    flag: str | tuple[str, ...] | None = None,
    cli: bool = True,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its :class:`Meta`; use it for every field of a config dataclass."""
    meta = Meta(help, tuple(choices) if choices is not None else None, min, max, above, below, flag, cli)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_META: meta})


def meta(field: dataclasses.Field) -> Meta | None:
    return field.metadata.get(_META)


def meta_of(cls: type, name: str) -> Meta:
    """The :class:`Meta` of setting ``name`` of dataclass ``cls``."""
    return cls.__dataclass_fields__[name].metadata[_META]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_type(cls: type, name: str) -> tuple[Any, bool]:
    """The declared type of a field with ``None`` taken out, and whether ``None`` is allowed."""
    hint = _hints(cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007
    return hint, False


def _check_type(name: str, value: Any, kind: Any) -> Any:
    """``value`` if it is of ``kind`` (an int passes for a float, a str for a Path); else a SettingError."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingError(name, f"expected a list, got {value!r}")
        items = typing.get_args(kind)
        item = items[0] if items else Any
        if len(items) == 2 and items[1] is not Ellipsis:  # a fixed pair such as (low, high)
            if len(value) != 2:
                raise SettingError(name, f"expected two values, got {list(value)!r}")
            return tuple(_check_type(name, v, t) for v, t in zip(value, items, strict=True))
        return tuple(_check_type(name, v, item) for v in value)
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingError(name, f"expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(name, f"expected a whole number, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(name, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise SettingError(name, f"expected a finite number, got {value!r}")
        return float(value)
    if kind is Path:
        if not isinstance(value, (str, Path)) or str(value) == "":
            raise SettingError(name, f"expected a path, got {value!r}")
        return Path(value)
    if kind is str:
        if not isinstance(value, str):
            raise SettingError(name, f"expected text, got {value!r}")
        return value
    return value  # a union of several types (e.g. int | str): the owner checks it


def _check_bounds(name: str, value: Any, m: Meta) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if m.choices is not None and v not in m.choices:
            raise SettingError(name, f"'{v}' is not one of {', '.join(map(str, m.choices))}")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if m.min is not None and v < m.min:
            raise SettingError(name, f"must be at least {m.min:g}, got {v:g}")
        if m.max is not None and v > m.max:
            raise SettingError(name, f"must be at most {m.max:g}, got {v:g}")
        if m.above is not None and v <= m.above:
            raise SettingError(name, f"must be greater than {m.above:g}, got {v:g}")
        if m.below is not None and v >= m.below:
            raise SettingError(name, f"must be less than {m.below:g}, got {v:g}")


def validate(obj: Any) -> None:
    """Check (and normalise: paths to ``Path``, lists to tuples) every :func:`setting` field of a dataclass.

    Called from ``__post_init__``; checks that relate several fields stay in the owner's own method.
    """
    cls = type(obj)
    for f in dataclasses.fields(cls):
        m = meta(f)
        if m is None:
            continue
        value = getattr(obj, f.name)
        kind, optional = field_type(cls, f.name)
        if value is None:
            if not optional:
                raise SettingError(f.name, "a value is required")
            continue
        value = _check_type(f.name, value, kind)
        _check_bounds(f.name, value, m)
        object.__setattr__(obj, f.name, value)


def from_mapping(cls: type, values: dict[str, Any], source: str, **overrides: Any) -> Any:
    """Build ``cls`` from a mapping (a parsed YAML file): unknown keys and bad values are refused with
    ``source`` (the file) named; ``overrides`` (options given on the command line) win over the file."""
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise EmbedtuneError(f"{source}: unknown setting '{key}' (known: {', '.join(sorted(known))})")
    merged = {**values, **overrides}
    missing = [f.name for f in dataclasses.fields(cls) if f.init and _required(f) and f.name not in merged]
    if missing:
        raise EmbedtuneError(f"{source}: '{missing[0]}' is required")
    try:
        return cls(**merged)
    except SettingError as e:
        raise SettingError(e.field, f"{e.reason} (in {source})") from e


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping, with ``1e-5`` read as the number it is.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-5``), so a plain ``1e-5`` would come
    back as text and be refused; every other YAML tool reads it as a number, and so do we.
    """
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    number = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789."))
    # Integers keep their own tag: the resolver above is consulted only after the built-in ones.
    try:
        values = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=Loader) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise EmbedtuneError(f"{path}: cannot read config ({str(e).splitlines()[0]})") from e
    if not isinstance(values, dict):
        raise EmbedtuneError(f"{path}: expected a mapping of setting: value")
    return values


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
