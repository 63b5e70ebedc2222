"""Every runbook action, by name. Importing this module imports every module in
`tasks/`, and each action module registers its actions as it is imported, so a
new action is a new module and nothing else.

It also binds the catalogue to the runbook library and validator (which are
given the actions, never import them): `load_runbook` and `validate_file` are
what the flows, the intake, the reports and the CLI call."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import tasks
from runbooks import library, validate
from runbooks.loader import LoadedRunbook, RunbookProblem
from tasks.base import ACTIONS, Action

for _module in pkgutil.iter_modules(tasks.__path__):
    importlib.import_module(f"tasks.{_module.name}")

__all__ = ["ACTIONS", "Action", "load_runbook", "validate_file"]


def load_runbook(runbook: str) -> LoadedRunbook:
    """A runbook by id (`system-outage`) or path, validated against every action; RunbookNotFound
    or RunbookInvalid otherwise. Cached per file and modification time."""
    return library.load(runbook, ACTIONS)


def validate_file(path: Path) -> tuple[LoadedRunbook | None, list[RunbookProblem]]:
    """Every problem of one runbook file, checked against every action (`firebreak validate`)."""
    return validate.validate_file(path, ACTIONS)
