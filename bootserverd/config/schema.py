"""Typed loading of YAML documents into frozen dataclasses, with precise errors.

Both the config file and the YAML inventory go through here, so every mistake is
reported the same way: file, line, dotted key, what is wrong — all of them at once.
A dataclass may define ``check(self, ctx, key)`` for rules that span its own keys.
A dataclass field declares its rules in ``metadata``:
  ``parse``: a callable(value, ctx) -> converted value (raises ValueError),
  ``choices``, ``min``/``max``, ``must_exist`` ("dir" | "file"), ``required``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml


@dataclasses.dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SchemaError(Exception):
    """One or more problems in one document; str() lists them one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Context:
    """Where the document came from, its key → line map, and the problems found so far."""

    def __init__(self, path: Path, lines: dict[str, int]):
        self.path = path
        self.base_dir = path.parent
        self.lines = lines
        self.problems: list[Problem] = []

    def problem(self, key: str, message: str) -> None:
        line = self.lines.get(key)
        probe = key
        while line is None and probe:
            probe = probe.rpartition(".")[0] if "." in probe else ""
            line = self.lines.get(probe)
        self.problems.append(Problem(str(self.path), line, key, message))


class SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader without YAML 1.1's base-60 numbers: an unquoted MAC such as
    52:54:00:12:34:56 would otherwise load as the integer 41135085296."""


SafeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if not (tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and ":" in regexp.pattern)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
SafeLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
SafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


def load_document(path: Path) -> tuple[Any, dict[str, int]]:
    """Read YAML (safe loading) plus the line of every key."""
    text = path.read_text(encoding="utf-8")
    node = yaml.compose(text, Loader=SafeLoader)
    lines: dict[str, int] = {}
    if node is not None:
        _collect_lines(node, "", lines)
    return yaml.load(text, Loader=SafeLoader), lines  # noqa: S506 - SafeLoader subclass


def _collect_lines(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _collect_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{prefix}[{index}]"
            lines[key] = item.start_mark.line + 1
            _collect_lines(item, key, lines)


_MISSING = object()


def build(cls: type, data: Any, key: str, ctx: Context) -> Any:
    """Convert a mapping into dataclass ``cls``; problems go to ctx, the result may be None."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        ctx.problem(key, f"must be a mapping, not {_kind(data)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]
    names = {f.name for f in fields}
    for unknown in sorted(set(map(str, data)) - names):
        hint = difflib.get_close_matches(unknown, names, n=1)
        ctx.problem(_join(key, unknown),
                    "unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    values: dict[str, Any] = {}
    ok = True
    for f in fields:
        sub = _join(key, f.name)
        if f.name not in data:
            if f.metadata.get("required") or (f.default is dataclasses.MISSING
                                              and f.default_factory is dataclasses.MISSING):
                ctx.problem(sub, "is required")
                ok = False
            continue
        before = len(ctx.problems)
        value = convert(hints[f.name], data[f.name], sub, ctx, f.metadata)
        if len(ctx.problems) > before:
            ok = False
        if value is not None or len(ctx.problems) == before:
            values[f.name] = value   # a list keeps the items that converted
    try:
        result = cls(**values)   # failed fields fall back to defaults, so check() still runs
    except TypeError:
        return None              # a required field failed
    check = getattr(result, "check", None)
    if check is not None:        # rules spanning this section's keys
        check(ctx, key)
    return result if ok else None


def convert(hint: Any, value: Any, key: str, ctx: Context, rules: typing.Mapping) -> Any:
    parse = rules.get("parse")
    try:
        if parse is not None:
            if value is None and _allows_none(hint):
                return None
            result = parse(value, ctx)
        else:
            result = _convert_by_type(hint, value, key, ctx, rules)
        _check_rules(result, rules, ctx)
        return result
    except ValueError as exc:
        ctx.problem(key, str(exc))
        return None


def _convert_by_type(hint: Any, value: Any, key: str, ctx: Context, rules: typing.Mapping) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert_by_type(args[0], value, key, ctx, rules)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if value is None:
            return ()
        items = value if isinstance(value, list) else [value]
        out = []
        for index, item in enumerate(items):
            try:
                converted = _convert_by_type(item_type, item, f"{key}[{index}]", ctx, {})
            except ValueError as exc:
                ctx.problem(f"{key}[{index}]", str(exc))
                continue
            if converted is not None:
                out.append(converted)
        return tuple(out)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key, ctx)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {_kind(value)} {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {_kind(value)} {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, not {_kind(value)} {value!r}")
        if value != value:           # .nan passes every min/max comparison
            raise ValueError("must be a number, not .nan")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"must be a string, not {_kind(value)}")
        return str(value)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a path, not {_kind(value)} {value!r}")
        return (ctx.base_dir / value).resolve() if not Path(value).is_absolute() else Path(value)
    if hint is ipaddress.IPv4Address:
        return parse_ipv4(value)
    if hint is ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(str(value), strict=True)
        except ValueError as exc:
            raise ValueError(f"not an IPv4 network like 10.0.0.0/24: {exc}") from None
    raise TypeError(f"schema: no converter for {hint!r} at {key}")


def _check_rules(value: Any, rules: typing.Mapping, ctx: Context) -> None:
    if value is None:
        return
    choices = rules.get("choices")
    if choices and value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
    low, high = rules.get("min"), rules.get("max")
    if low is not None and value < low or high is not None and value > high:
        raise ValueError(f"must be between {low} and {high}, not {value!r}")
    must_exist = rules.get("must_exist")
    if must_exist == "dir" and not Path(value).is_dir():
        raise ValueError(f"directory {value} does not exist")
    if must_exist == "file" and not Path(value).is_file():
        raise ValueError(f"file {value} does not exist")


def parse_ipv4(value: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise ValueError(f"not an IPv4 address: {value!r}") from None


def _allows_none(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)
