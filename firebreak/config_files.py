"""Configuration files (contacts, routing, escalation …): YAML parsed into a
pydantic model, with every problem reported as `file:line: field: message`,
the way runbook errors are, and re-read only when the file changes."""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from runbooks.loader import LineMap, RunbookInvalid, display_path, format_path, parse_yaml, pydantic_message

ModelT = TypeVar("ModelT", bound=BaseModel)


def load_model(path: Path, model: type[ModelT], error: type[Exception]) -> tuple[ModelT, LineMap]:
    """Parse `path` into `model`; raise `error` with one located line per problem."""
    shown = display_path(Path(path))
    try:
        data, lines = parse_yaml(Path(path))
    except RunbookInvalid as exc:  # unreadable, YAML syntax, duplicate keys: already located
        raise error(str(exc)) from exc
    try:
        return model.model_validate(data if data is not None else {}), lines
    except ValidationError as exc:
        problems = [f"{shown}:{lines.line_of(tuple(e['loc']))}: {format_path(tuple(e['loc'])) or '(file)'}: "
                    f"{pydantic_message(e)}" for e in exc.errors()]
        raise error("\n".join(problems)) from exc

