"""The one configuration mechanism: typed dataclasses built from dicts / YAML / JSON, with
``key.sub=value`` overrides and named presets.

Every config in vistok (tokenizers and their quantizer, training, token LMs, ...) subclasses
:class:`Config` and is built by :func:`from_dict`, which coerces what is unambiguous (``"2e-4"`` to a
float, lists to tuples, nested mappings to nested configs) and rejects unknown keys (listing the
valid ones) and ill-typed values, each as one :class:`VistokError` naming the dotted key. Range checks
live in each config's ``__post_init__`` and raise :class:`VistokError` too.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vistok.errors import VistokError

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type where that is unambiguous."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        last: Exception | None = None
        for a in args:
            try:
                return _coerce(value, a, key)
            except VistokError as e:
                last = e
        raise last or VistokError(f"{key}: cannot use {value!r}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise VistokError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if tp is Any or tp is dict or origin is dict:
        return value
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise VistokError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise VistokError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise VistokError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponents without a dot ("2e-4", "1e5") as strings; take them as numbers.
            try:
                value = float(value.strip())
            except ValueError:
                raise VistokError(f"{key}: expected a number, got {value!r}") from None
            if math.isnan(value):
                raise VistokError(f"{key}: expected a number, got NaN")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise VistokError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise VistokError(f"{key}: expected a string, got {value!r}")
        return value
    if typing.get_origin(tp) is typing.Literal:
        if value not in typing.get_args(tp):
            raise VistokError(f"{key}: expected one of {typing.get_args(tp)}, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` (recursively), rejecting unknown keys.

    A class may define ``upgrade_dict(data) -> data`` to accept older spellings of its keys (e.g.
    flat quantizer settings saved before the quantizer had its own section)."""
    if not isinstance(data, dict):
        raise VistokError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {type(data).__name__}")
    if any(not isinstance(k, str) for k in data):
        raise VistokError(f"{prefix.rstrip('.') or cls.__name__}: keys must be strings, got {sorted(map(repr, data))}")
    upgrade = getattr(cls, "upgrade_dict", None)
    if upgrade is not None:
        data = upgrade(dict(data))
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - fields
    if unknown:
        raise VistokError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}; valid: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except VistokError as e:
        raise VistokError(f"{prefix}{e}" if prefix and not str(e).startswith(prefix) else str(e)) from None
    except (TypeError, ValueError, OverflowError) as e:
        raise VistokError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None


def merge(base: dict, over: dict) -> dict:
    """``over`` laid on ``base`` recursively (nested mappings merge; other values replace)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Config:
    """Base of every vistok config dataclass: :meth:`from_dict` / :meth:`to_dict` / :meth:`replace`
    through the one typed builder, and named presets (:meth:`presets` -> table, :meth:`preset`)."""

    #: what the presets are called in error messages ("MAGVIT-v2 preset", "LM preset", ...)
    family: typing.ClassVar[str] = "config"

    @classmethod
    def from_dict(cls: type[T], data: dict, *, prefix: str = "") -> T:
        return from_dict(cls, data, prefix=prefix)

    def to_dict(self) -> dict:
        return to_dict(self)

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes``, validated like any other input."""
        return from_dict(type(self), merge(to_dict(self), changes))

    @classmethod
    def presets(cls) -> dict[str, dict]:
        return {}

    @classmethod
    def preset(cls: type[T], name: str, overrides: dict | None = None, *, prefix: str = "", **kw: Any) -> T:
        """The named preset with ``overrides`` (a nested mapping, merged) and keyword overrides."""
        table = cls.presets()
        if name not in table:
            raise VistokError(f"unknown {cls.family} preset {name!r}; choose from {sorted(table)}")
        return from_dict(cls, merge(merge(table[name], overrides or {}), kw), prefix=prefix)


def to_dict(obj: Any) -> dict:
    """Dataclass -> plain dict of YAML/JSON-safe values (tuples become lists)."""

    def clean(v):
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return clean(dataclasses.asdict(obj))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` -> (["optim", "lr"], 0.0003); the value is parsed as YAML."""
    if "=" not in text:
        raise VistokError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise VistokError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise VistokError(f"override {text!r}: cannot parse value: {e}") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict (a copy)."""
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise VistokError(f"override {text!r}: {part} is not a section")
        node[path[-1]] = value
    return out


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's contents; unreadable or non-UTF-8 files are one clear error."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as e:
        raise VistokError(f"cannot read {what} {p}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise VistokError(f"cannot read {what} {p}: not UTF-8 text") from None


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    try:
        data = yaml.safe_load(read_text(p, "config"))
    except yaml.YAMLError as e:
        raise VistokError(f"config {p} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VistokError(f"config {p} must be a mapping at the top level")
    return data


def load_named(name_or_path: str | Path, presets: dict[str, dict], what: str) -> tuple[dict, list[set[str]]]:
    """The raw mapping of a named preset, or of a YAML file that may start from one (``base:``),
    and the top-level keys each layer set (preset, then file), for callers whose keys interact."""
    text = str(name_or_path)
    if text in presets:
        data = copy.deepcopy(presets[text])
        return data, [set(data)]
    if Path(text).suffix in (".yaml", ".yml") or Path(text).is_file():
        raw = load_yaml(text)
        base = raw.pop("base", None)
        if base is not None and base not in presets:
            raise VistokError(f"{text}: unknown base preset {base!r}; choose from {sorted(presets)}")
        start = copy.deepcopy(presets[base]) if base else {}
        return merge(start, raw), [set(start), set(raw)]
    raise VistokError(f"{text!r} is neither {what} ({', '.join(sorted(presets))}) nor a YAML file")

