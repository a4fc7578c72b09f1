"""Typed configs: dataclasses are the source of truth, YAML mirrors them.

Resolution order: dataclass defaults (or a named preset) < `--config FILE` <
`--set key.sub=value`. Unknown keys are errors that name the key and list the
valid ones. `--dump-config` prints the resolved config as YAML.

Every config is a `@dataclass(kw_only=True)` with a docstring under each field;
`field_docs` reads those docstrings so `tmt ... --help` and dumped YAML can
show them.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import logging
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from tmt import TmtError
from tmt.core.io import read_yaml_object

T = TypeVar("T")

log = logging.getLogger(__name__)


class ConfigError(TmtError):
    """A config file or override is invalid."""

    exit_code = 2


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Return {field name: docstring} read from the string literal under each field."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(source)
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` (from YAML or a --set string) to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, args, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        return _coerce_sequence(value, origin, args, where)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    return _coerce_scalar(value, tp, where)


def _coerce_union(value: Any, tp: Any, args: tuple[Any, ...], where: str) -> Any:
    """`X | Y | None`: None if allowed, else the first member type the value converts to."""
    if value is None and type(None) in args:
        return None
    for a in args:
        if a is type(None):
            continue
        try:
            return _coerce(value, a, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where}: {value!r} does not fit {tp}")


def _coerce_sequence(value: Any, origin: Any, args: tuple[Any, ...], where: str) -> Any:
    """A list or tuple (a string is split at commas), each item converted."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v != ""]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    item_t = args[0] if args else Any
    items = [_coerce(v, item_t, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _coerce_scalar(value: Any, tp: Any, where: str) -> Any:
    """bool (true/false/yes/no/1/0), int, float, str, Path; other types pass through."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build a dataclass from a mapping; unknown keys are errors."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list/scalars (YAML- and JSON-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def merge(cfg: T, data: Mapping[str, Any], *, where: str = "") -> T:
    """Return a copy of `cfg` with the (possibly nested) values in `data` applied."""
    assert dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)
    hints = _hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'; valid keys here: {', '.join(names)}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = merge(current, value, where=path)
        else:
            changes[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(cfg, **changes)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ["a.b=3", "c=[1,2]"] into {"a": {"b": 3}, "c": [1, 2]} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}' (example: --set optim.lr=3e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{p}' was already given a value")
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    return read_yaml_object(path, what="config file", error=ConfigError, fix="a config file maps option names to values")


@dataclasses.dataclass(frozen=True)
class Spelling:
    """A setting whose one documented spelling (`key`, e.g. `train.max_minutes`) is the same across
    tools although it lives at `field` in this tool's config; `old` is an earlier spelling that is
    still accepted with a deprecation warning."""

    key: str
    """The spelling users write in `--set` and config files."""
    field: str
    """Where the value lives in this config (dotted path)."""
    old: str
    """The deprecated spelling."""


_warned_spellings: set[tuple[str, str]] = set()


def _pop_path(data: dict[str, Any], path: str) -> tuple[bool, Any]:
    """Remove `a.b.c` from nested `data` (and parents left empty) -> (found, value)."""
    head, _, rest = path.partition(".")
    if head not in data:
        return False, None
    if not rest:
        return True, data.pop(head)
    node = data[head]
    if not isinstance(node, dict):
        return False, None
    found, value = _pop_path(node, rest)
    if found and not node:
        del data[head]
    return found, value


def _put_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{p}' is given a value and also '{path}'")
    node[last] = value


def respell(data: Mapping[str, Any], spellings: Iterable[Spelling], *, from_file: bool = False) -> dict[str, Any]:
    """A copy of nested `data` with every spelling moved to its `field`. The `old` spelling logs a
    deprecation warning (once per process), except in a file where it is the field itself (a
    saved config's own layout)."""
    out = _nested_copy(data)
    for sp in spellings:
        new = _pop_path(out, sp.key)
        found, value = _pop_path(out, sp.old) if sp.old != sp.key else (False, None)
        if found:
            if not (from_file and sp.old == sp.field) and (sp.old, sp.key) not in _warned_spellings:
                _warned_spellings.add((sp.old, sp.key))
                log.warning("config key '%s' is deprecated; spell it '%s' (e.g. --set %s=...)", sp.old, sp.key, sp.key)
            _put_path(out, sp.field, value)
        if new[0]:  # given both ways, the new spelling wins
            _put_path(out, sp.field, new[1])
    return out


def _nested_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a nested mapping (its dicts copied; leaves shared)."""
    return {k: _nested_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def resolve(
    base: T,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    spellings: Iterable[Spelling] = (),
) -> T:
    """defaults/preset < config file < --set overrides; `spellings` map shared keys (and their
    deprecated forms) onto this config's fields."""
    spellings = tuple(spellings)
    cfg = base
    if config_file is not None:
        cfg = merge(cfg, respell(load_yaml(config_file), spellings, from_file=True))
    ov = respell(parse_overrides(overrides), spellings)
    if ov:
        cfg = merge(cfg, ov)
    return cfg


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_yaml(cfg: Any, path: str | Path) -> None:
    from tmt.core.io import atomic_write_text

    atomic_write_text(Path(path), dump_yaml(cfg))


def config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add `--config`, `--set` and `--dump-config` to a click command."""
    f = click.option(
        "--dump-config",
        is_flag=True,
        help="Print the resolved config as YAML and exit.",
    )(f)
    f = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one config value (repeatable), e.g. --set optim.lr=3e-4.",
    )(f)
    f = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML file overriding the defaults.",
    )(f)
    return f
