"""Load runbook YAML with line numbers, so every error names file, line and field
(the YAML reading itself is firebreak.yaml_lines)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from firebreak.errors import ConfigInvalid
from firebreak.yaml_lines import (
    LineMap,
    LocatedProblem,
    Path_,
    YamlInvalid,
    display_path,
    format_path,
    parse_yaml,
    pydantic_message,
)
from runbooks.schema import Runbook

#: A problem in a runbook file: file, line, field, message.
RunbookProblem = LocatedProblem


class RunbookInvalid(ConfigInvalid):
    """A runbook file cannot be read, parsed or validated; one located line per problem."""

    def __init__(self, problems: list[RunbookProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class LoadedRunbook:
    runbook: Runbook
    path: Path
    lines: LineMap
    raw: dict[str, Any]

    def problem(self, at: Path_, message: str) -> RunbookProblem:
        return RunbookProblem(display_path(self.path), self.lines.line_of(at), format_path(at), message)


def load_runbook(path: Path | str) -> LoadedRunbook:
    """Parse and type-check one runbook file (no cross-field checks; see validate)."""
    path = Path(path)
    try:
        data, lines = parse_yaml(path)
    except YamlInvalid as exc:  # unreadable, YAML syntax, duplicate keys: already located
        raise RunbookInvalid(exc.problems) from exc
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
