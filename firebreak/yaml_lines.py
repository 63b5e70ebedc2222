"""YAML with line numbers, so every problem in a file names file, line and field.

Generic: runbooks (runbooks.loader) and configuration files (firebreak.config_files)
are both read through it, and report problems as `file:line: field: message`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from firebreak.errors import ConfigInvalid

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class LocatedProblem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field or '(file)'}: {self.message}"


class YamlInvalid(ConfigInvalid):
    """A file that cannot be read or parsed as YAML, or repeats a key: one located problem each."""

    def __init__(self, problems: list[LocatedProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class LineMap:
    """Line (1-based) of every key and item in the YAML document."""

    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def format_path(path: Path_) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _walk(node: yaml.Node, path: Path_, lines: LineMap, problems: list[tuple[Path_, int, str]]) -> None:
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append((path + (key,), line, f"duplicate key {key!r} (first on line {seen[key]})"))
            seen[key] = line
            lines.lines[path + (key,)] = line
            _walk(value_node, path + (key,), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.lines[path + (index,)] = item.start_mark.line + 1
            _walk(item, path + (index,), lines, problems)


def parse_yaml(path: Path) -> tuple[Any, LineMap]:
    """Parse YAML; syntax errors and duplicate keys become YamlInvalid with a line."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlInvalid([LocatedProblem(shown, 1, "", f"cannot read file: {exc}")]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        reason = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context:
            where = f" (line {context_mark.line + 1})" if context_mark and context_mark.line + 1 != line else ""
            reason = f"{context}{where}: {reason}"
        raise YamlInvalid([LocatedProblem(shown, line, "", f"YAML syntax error: {reason}")]) from exc
    lines = LineMap()
    duplicates: list[tuple[Path_, int, str]] = []
    if node is not None:
        _walk(node, (), lines, duplicates)
    if duplicates:
        raise YamlInvalid([LocatedProblem(shown, line, format_path(p), msg) for p, line, msg in duplicates])
    return data, lines


def pydantic_message(error: ErrorDetails) -> str:
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    if error["type"] == "enum":
        expected = error.get("ctx", {}).get("expected")
        return f"got {error.get('input')!r}; expected {expected}"
    if error["type"] == "string_pattern_mismatch":
        return f"{error.get('input')!r} must match {error['ctx']['pattern']}"
    return message
