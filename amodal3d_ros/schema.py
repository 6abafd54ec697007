"""The configuration schema machinery: declared settings, one loader and one validator.

Every configurable value of the project (the pipeline, the ROS node, training) is a field of a
dataclass deriving from :class:`Schema`, declared with :func:`setting`: its default (the only
place defaults live), a description, and optionally a :class:`Range`, choices and a read-only
flag. A field whose type is itself a schema dataclass is a section (declared with
:func:`section`), so every value has a flat dotted key (``fuse.voxels``, ``keyframes.max``).

One loader serves every source: flat dotted keys (ROS parameters), nested mappings (YAML, plain
or a ROS 2 parameter file) and ``KEY=VALUE`` text (``--set``) all end in :meth:`Schema.from_flat_dict`,
which converts each value to its field's type and refuses bad values naming their keys. The same
schema renders the commented parameter file and the README table (:func:`yaml_text`,
:func:`markdown_rows`), so a setting cannot be added without being documented and validated.
"""
from __future__ import annotations

import collections.abc
import copy
import dataclasses
import functools
import math
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration value that is missing, unknown or out of range."""


@dataclass(frozen=True)
class Range:
    """Allowed numbers: ``low``/``high`` bounds (None: unbounded), closed unless ``*_open``; with
    ``step``, integers ``low + k * step`` only. For a pair (tuple setting) it applies to each element."""
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    step: int = 0

    def __contains__(self, value) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return not self.step or (value - (self.low or 0)) % self.step == 0

    def describe(self) -> str:
        multiple = f"a multiple of {self.step} " if self.step else ""
        if self.low is not None and self.high is not None:
            return (f"{multiple}in {'(' if self.low_open else '['}{self.low}, "
                    f"{self.high}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{multiple}{'>' if self.low_open else '>='} {self.low}"
        if self.high is not None:
            return f"{multiple}{'<' if self.high_open else '<='} {self.high}"
        return multiple.strip() or "any number"


def setting(default: Any, doc: str, *, range: Optional[Range] = None, choices: Optional[Iterable] = None,
            read_only: bool = False, key: Optional[str] = None) -> Any:
    """A configuration field: ``default``, ``doc`` (units first, e.g. "m, ..."), allowed ``range`` or
    ``choices``, ``read_only`` (set at start-up only) and ``key`` when the public name differs from
    the attribute (``keyframes.max`` for ``max_keyframes``)."""
    return field(default=default, metadata={"doc": doc, "range": range, "read_only": read_only, "key": key,
                                            "choices": tuple(choices) if choices is not None else None})


def section(schema_class: type, doc: str) -> Any:
    """A nested group of settings (its keys get the field's name as prefix)."""
    return field(default_factory=schema_class, metadata={"doc": doc})


@dataclass(frozen=True)
class Setting:
    """One setting as the loader, the node and the documentation see it."""
    key: str  # flat dotted key
    path: tuple[str, ...]  # attribute path from the root dataclass
    kind: Any  # the field's type (bool, int, float, str, tuple[float, float], Optional[float])
    default: Any
    doc: str
    range: Optional[Range] = None
    choices: Optional[tuple] = None
    read_only: bool = False

    def constraint(self) -> str:
        """The allowed values and the read-only flag in words ('' when any value of the type is)."""
        allowed = _one_of(self.choices) if self.choices is not None else self.range.describe() if self.range else ""
        return "; ".join(filter(None, [allowed, "read-only at run time" if self.read_only else ""]))


class Schema:
    """Base of the configuration dataclasses: flat keys in and out, YAML, ``--set``, validation."""

    @classmethod
    def settings(cls) -> dict[str, Setting]:
        """Every setting of this schema by flat key, in declaration order."""
        return dict(_settings(cls))

    def to_flat_dict(self) -> dict[str, Any]:
        return {key: _get(self, s.path) for key, s in _settings(type(self))}

    @classmethod
    def from_flat_dict(cls, flat: dict[str, Any], base: Optional[Schema] = None):
        """``base`` (default: the defaults) with the flat ``{key: value}`` applied; each value must have
        its setting's type (ints are accepted for floats). Raises ConfigError naming every bad key."""
        config = copy.deepcopy(base) if base is not None else cls()
        known = dict(_settings(cls))
        errors = []
        for key, value in flat.items():
            if key not in known:
                errors.append(unknown_key(key, known))
                continue
            try:
                _set(config, known[key].path, convert(known[key], value))
            except ConfigError as exc:
                errors.append(str(exc))
        errors += config.problems_found() if not errors else []
        if errors:
            raise ConfigError("invalid configuration: " + "; ".join(errors))
        return config

    @classmethod
    def from_dict(cls, nested: Optional[dict], base: Optional[Schema] = None):
        return cls.from_flat_dict(flatten(nested or {}), base)

    @classmethod
    def from_yaml(cls, path: str | Path, section_name: Optional[str] = None):
        return cls.from_dict(read_yaml(path, section_name))

    def with_overrides(self, assignments: Iterable[str] = (), values: Optional[dict[str, Any]] = None):
        """A copy with ``KEY=VALUE`` texts (``--set``) and then typed ``values`` applied, validated."""
        return type(self).from_flat_dict({**parse_assignments(type(self), assignments), **(values or {})}, self)

    def validate(self, prefix: str = "") -> None:
        """Raise ConfigError naming every bad value (keys shown with ``prefix``)."""
        errors = self.problems_found(prefix)
        if errors:
            raise ConfigError("invalid configuration: " + "; ".join(errors))

    def problems_found(self, prefix: str = "") -> list[str]:
        """Every bad value as 'KEY must be ...': types, ranges, choices, then each class's :meth:`problems`."""
        errors = []
        for f in dataclasses.fields(self):
            value, key = getattr(self, f.name), prefix + (f.metadata.get("key") or f.name)
            if isinstance(value, Schema):
                errors += value.problems_found(key + ".")
                continue
            spec = _field_setting(type(self), f, key)
            try:
                convert(spec, value)
            except ConfigError as exc:
                errors.append(str(exc))
        if errors:
            return errors
        keys = {f.name: f.metadata.get("key") or f.name for f in dataclasses.fields(self)}
        return [f"{prefix}{keys[name]} {text}" for name, text in self.problems()]

    def problems(self) -> list[tuple[str, str]]:
        """Rules that one field's range cannot say (one field against another): (attribute, 'must ...')."""
        return []


# ---------------------------------------------------------------------- the schema of a class
@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(kind) -> bool:
    return isinstance(kind, type) and issubclass(kind, Schema)


@functools.cache
def _settings(cls: type) -> tuple[tuple[str, Setting], ...]:
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key") or f.name
        kind = hints[f.name]
        if _is_section(kind):
            out += [(f"{key}.{sub_key}", dataclasses.replace(s, key=f"{key}.{sub_key}", path=(f.name, *s.path)))
                    for sub_key, s in _settings(kind)]
        else:
            out.append((key, _field_setting(cls, f, key)))
    return tuple(out)


def _field_setting(cls: type, f: dataclasses.Field, key: str) -> Setting:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return Setting(key=key, path=(f.name,), kind=_hints(cls)[f.name], default=default,
                   doc=f.metadata.get("doc", ""), range=f.metadata.get("range"), choices=f.metadata.get("choices"),
                   read_only=f.metadata.get("read_only", False))


def section_docs(cls: type, prefix: str = "") -> dict[str, str]:
    """{flat key of a section: its description}, nested sections included."""
    out = {}
    for f in dataclasses.fields(cls):
        kind = _hints(cls)[f.name]
        if _is_section(kind):
            key = prefix + (f.metadata.get("key") or f.name)
            out[key] = f.metadata.get("doc", "")
            out.update(section_docs(kind, key + "."))
    return out


def _get(obj, path: tuple[str, ...]):
    for name in path:
        obj = getattr(obj, name)
    return obj


def _set(obj, path: tuple[str, ...], value) -> None:
    setattr(_get(obj, path[:-1]), path[-1], value)


def unknown_key(key: str, known: dict[str, Setting]) -> str:
    """'unknown configuration key' naming the keys of the same section, to spot a typo."""
    group = key.rpartition(".")[0]
    siblings = [k for k in known if k.rpartition(".")[0] == group]
    return f"unknown configuration key '{key}'" + (f" (known: {', '.join(siblings)})" if siblings else "")


# ---------------------------------------------------------------------- values
UNIONS = (Union, types.UnionType)  # Optional[X] and X | None


def _optional_of(kind):
    """X of Optional[X] (the only unions settings may have)."""
    return next(a for a in typing.get_args(kind) if a is not type(None))


def _type_name(kind) -> str:
    if typing.get_origin(kind) is tuple:
        return f"a list of {len(typing.get_args(kind))} {typing.get_args(kind)[0].__name__}"
    if typing.get_origin(kind) in UNIONS:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(kind))
    return kind.__name__


def _one_of(choices: tuple) -> str:
    names = [str(c) if c != "" else "''" for c in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _typed(kind, value, key: str):
    """``value`` as ``kind`` (strict: only ints widen to floats); ConfigError naming ``key`` otherwise."""
    origin = typing.get_origin(kind)
    if origin in UNIONS:
        return None if value is None else _typed(_optional_of(kind), value, key)
    if origin is tuple:
        args = typing.get_args(kind)
        if isinstance(value, collections.abc.Sequence) and not isinstance(value, str) and len(value) == len(args):
            return tuple(_typed(a, v, key) for a, v in zip(args, value))
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"setting '{key}' has a type the schema does not support: {kind}")
    raise ConfigError(f"'{key}' must be {_type_name(kind)}, got {value!r}")


def convert(spec: Setting, value):
    """``value`` checked against ``spec``: type, finiteness, range and choices."""
    value = _typed(spec.kind, value, spec.key)
    for element in value if isinstance(value, tuple) else (value,):
        if isinstance(element, float) and not math.isfinite(element):
            raise ConfigError(f"{spec.key} must be a finite number, got {value!r}")
        if element is not None and spec.range is not None and element not in spec.range:
            raise ConfigError(f"{spec.key} must be {spec.range.describe()}, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{spec.key} must be {_one_of(spec.choices)}, got {value!r}")
    return value


def parse_text(kind, text: str):
    """A ``--set`` value (text) as a value of ``kind`` where it reads as one; else the text, which the
    type check then refuses naming the key."""
    origin = typing.get_origin(kind)
    if origin in UNIONS:
        return None if text.strip().lower() in ("", "none", "null") else parse_text(_optional_of(kind), text)
    if origin is tuple:
        parts = text.strip().strip("[]()").split(",")
        return tuple(parse_text(a, p) for a, p in zip(typing.get_args(kind), parts)) \
            if len(parts) == len(typing.get_args(kind)) else text
    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    if kind is bool:
        return words.get(text.strip().lower(), text)
    for number in (int, float):
        if kind is number:
            try:
                return number(text)
            except ValueError:
                return text
    return text


def parse_assignments(cls: type, assignments: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` texts (``--set``) as typed flat values; unknown keys and missing '=' refused."""
    known = dict(_settings(cls))
    out = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        key, text = (part.strip() for part in item.split("=", 1))
        if key not in known:
            raise ConfigError(f"--set: {unknown_key(key, known)}")
        out[key] = parse_text(known[key].kind, text)
    return out


# ---------------------------------------------------------------------- YAML
def flatten(nested: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as flat dotted keys ({'fuse': {'voxels': 48}} -> {'fuse.voxels': 48})."""
    if not isinstance(nested, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {type(nested).__name__}")
    out = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_yaml(path: str | Path, section_name: Optional[str] = None) -> dict:
    """The mapping in a YAML file: plain, or the parameters of a ROS 2 parameter file
    (``node: {ros__parameters: ...}``); with ``section_name``, only that section (of a ROS 2 file),
    or that section where a plain file has one (else all of it)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    ros_file = len(data) == 1 and isinstance(next(iter(data.values())), dict) \
        and "ros__parameters" in next(iter(data.values()))
    if ros_file:
        data = next(iter(data.values()))["ros__parameters"] or {}
    if section_name is not None:
        data = data.get(section_name, {} if ros_file else data)
    return data


def _yaml_scalar(value) -> str:
    value = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def yaml_text(cls: type, indent: int = 0, width: int = 100) -> str:
    """The settings of ``cls`` with their defaults as nested YAML, each preceded by its description."""
    tree: dict = {}
    for key, spec in _settings(cls):
        node = tree
        *groups, name = key.split(".")
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = spec
    docs = section_docs(cls)
    lines: list[str] = []

    def render(node: dict, prefix: str, depth: int) -> None:
        pad = " " * (indent + 2 * depth)
        for name, child in node.items():
            doc = child.doc + (f" ({child.constraint()})" if child.constraint() else "") \
                if isinstance(child, Setting) else docs.get(prefix + name, "")
            lines.extend(textwrap.wrap(doc, width - len(pad), initial_indent=pad + "# ",
                                       subsequent_indent=pad + "#   "))
            if isinstance(child, Setting):
                lines.append(f"{pad}{name}: {_yaml_scalar(child.default)}")
            else:
                lines.append(f"{pad}{name}:")
                render(child, f"{prefix}{name}.", depth + 1)

    render(tree, "", 0)
    return "\n".join(lines) + "\n"


def markdown_rows(cls: type, prefix: str = "") -> list[str]:
    """One Markdown table row per setting: | `key` | default | allowed values | description |."""
    rows = []
    for key, spec in _settings(cls):
        doc = spec.doc.replace("|", "\\|")
        rows.append(f"| `{prefix}{key}` | `{_yaml_scalar(spec.default)}` | {spec.constraint()} | {doc} |")
    return rows
