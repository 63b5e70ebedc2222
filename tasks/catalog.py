"""Every runbook action, by name. Importing this module imports every module in
`tasks/`, and each action module registers its actions as it is imported, so a
new action is a new module and nothing else."""
from __future__ import annotations

import importlib
import pkgutil

import tasks
from tasks.base import ACTIONS, Action

for _module in pkgutil.iter_modules(tasks.__path__):
    importlib.import_module(f"tasks.{_module.name}")

__all__ = ["ACTIONS", "Action"]
