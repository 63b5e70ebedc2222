"""Load runbook YAML with line numbers, so every error names file, line and field."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from runbooks.schema import Runbook

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class RunbookProblem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field or '(file)'}: {self.message}"


class RunbookInvalid(Exception):
    def __init__(self, problems: list[RunbookProblem]):
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


@dataclass
class LoadedRunbook:
    runbook: Runbook
    path: Path
    lines: LineMap
    raw: dict[str, Any]

    def problem(self, at: Path_, message: str) -> RunbookProblem:
        return RunbookProblem(display_path(self.path), self.lines.line_of(at), format_path(at), message)


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
    """Parse YAML; syntax errors and duplicate keys become RunbookInvalid with a line."""
    shown = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunbookInvalid([RunbookProblem(shown, 1, "", f"cannot read file: {exc}")]) from exc
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
        raise RunbookInvalid([RunbookProblem(shown, line, "", f"YAML syntax error: {reason}")]) from exc
    lines = LineMap()
    duplicates: list[tuple[Path_, int, str]] = []
    if node is not None:
        _walk(node, (), lines, duplicates)
    if duplicates:
        raise RunbookInvalid([RunbookProblem(shown, line, format_path(p), msg) for p, line, msg in duplicates])
    return data, lines


def pydantic_message(error: dict[str, Any]) -> str:
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


def load_runbook(path: Path | str) -> LoadedRunbook:
    """Parse and type-check one runbook file (no cross-field checks; see validate)."""
    path = Path(path)
    data, lines = parse_yaml(path)
    shown = display_path(path)
    if not isinstance(data, dict):
        raise RunbookInvalid([RunbookProblem(shown, 1, "", "a runbook must be a YAML mapping at the top level")])
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            problems.append(RunbookProblem(shown, lines.line_of(loc), format_path(loc), pydantic_message(error)))
        raise RunbookInvalid(problems) from exc
    return LoadedRunbook(runbook=runbook, path=path, lines=lines, raw=data)
