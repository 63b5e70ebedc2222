"""Configuration files (contacts, routing, escalation …): YAML parsed into a
pydantic model, with every problem reported as `file:line: field: message`,
the way runbook errors are, and re-read only when the file changes."""
from __future__ import annotations

import functools
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from runbooks.loader import LineMap, RunbookInvalid, display_path, format_path, parse_yaml, pydantic_message

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


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



def cached_by_mtime(error: type[Exception], what: str) -> Callable[[Callable[[Path], T]], Callable[[Path], T]]:
    """Decorate `build(path) -> T` so it runs again only when the file changes;
    a missing or unreadable file raises `error` naming it."""

    def decorate(build: Callable[[Path], T]) -> Callable[[Path], T]:
        @lru_cache(maxsize=8)
        def cached(path_text: str, _mtime: float) -> T:
            return build(Path(path_text))

        @functools.wraps(build)
        def load(path: Path) -> T:
            path = Path(path)
            try:
                mtime = path.stat().st_mtime
            except OSError as exc:
                raise error(f"{path}: cannot read {what}: {exc}") from exc
            return cached(str(path), mtime)

        return load

    return decorate
