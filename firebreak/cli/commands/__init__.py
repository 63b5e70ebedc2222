"""Further `firebreak` subcommands, one module per concern.

Each module here defines `register(subparsers)`, which adds its commands; the
CLI discovers them, so a new concern adds a module and touches nothing else.
Modules must import heavy dependencies (Prefect, the engine) inside the command
functions, not at module level, to keep `firebreak --help` fast.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil


def register_all(subparsers: argparse._SubParsersAction) -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}").register(subparsers)
