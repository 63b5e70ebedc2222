"""Configuration files (contacts, routing, escalation …): YAML parsed into a
pydantic model, with every problem reported as `file:line: field: message`,
the way runbook errors are, and re-read only when the file changes."""
from __future__ import annotations

import functools
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from firebreak.yaml_lines import LineMap, Path_, YamlInvalid, display_path, format_path, parse_yaml, pydantic_message

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


def load_model(path: Path, model: type[ModelT], error: type[Exception],
               explain: Callable[[ErrorDetails], str | None] | None = None) -> tuple[ModelT, LineMap]:
    """Parse `path` into `model`; raise `error` with one located line per problem.

    `explain(pydantic_error)` may return a file-specific message for a problem (None: the
    usual one); whatever it returns is shown as is, so it must not repeat a secret."""
    shown = display_path(Path(path))
    try:
        data, lines = parse_yaml(Path(path))
    except YamlInvalid as exc:  # unreadable, YAML syntax, duplicate keys: already located
        raise error(str(exc)) from exc
    try:
        return model.model_validate(data if data is not None else {}), lines
    except ValidationError as exc:
        problems = []
        for problem in exc.errors():
            where, message = _in_document(data, problem)
            message = (explain(problem) if explain else None) or message
            problems.append(f"{shown}:{lines.line_of(where)}: {format_path(where) or '(file)'}: {message}")
        raise error("\n".join(problems)) from exc


def _in_document(data: Any, problem: ErrorDetails) -> tuple[Path_, str]:
    """Where a pydantic problem is in the YAML document, and what to say about it.

    Pydantic's locations name things that are not in the file: the tag of a discriminated
    union (`auth.bearer.token_env` for `auth: {type: bearer}`) and `[key]` for a bad mapping
    key. Those are left out so the path (and its line) is the one a reader sees."""
    where: list[str | int] = []
    node = data
    loc = tuple(problem["loc"])
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if part == "[key]":
            continue
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not last:
            continue  # a union tag or model name pydantic added
        else:
            node = None
        where.append(part)
    context = problem.get("ctx") or {}
    if problem["type"] in ("union_tag_invalid", "union_tag_not_found"):
        # The problem is the discriminator field itself (e.g. `type`), so point at it.
        where.append(str(context.get("discriminator", "")).strip("'"))
        if problem["type"] == "union_tag_not_found":
            return tuple(where), "required field is missing"
        return tuple(where), f"got {context.get('tag')!r}; expected one of {context.get('expected_tags')}"
    return tuple(where), pydantic_message(problem)


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
