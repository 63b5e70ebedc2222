"""One error hierarchy: every exception class the application defines derives from
firebreak.errors.FirebreakError, found by importing every module of the app packages."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from firebreak import errors
from firebreak.errors import FirebreakError

APP_PACKAGES = ("firebreak", "records", "runbooks", "notifications", "tasks", "reports", "flows", "intake")
#: Not importable as plain modules: `python -m` entry points (they run the CLI), and Alembic's
#: migration scripts (env.py runs a migration when imported; Alembic loads them itself).
SKIPPED = ("__main__", "records.migrations")


def _app_modules() -> list[str]:
    names = []
    for package_name in APP_PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name.endswith(".__main__") or any(info.name == s or info.name.startswith(f"{s}.") for s in SKIPPED):
                continue
            names.append(info.name)
    return names


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _app_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[key] for key in sorted(found)]


EXCEPTIONS = _exception_classes()


def test_the_app_defines_exceptions_and_all_were_found() -> None:
    # A floor, so a discovery that silently imports nothing cannot pass.
    names = {cls.__name__ for cls in EXCEPTIONS}
    assert {"IncidentNotFound", "RunbookInvalid", "AuthFailed", "StepInputError", "RunbookFailed",
            "AckTokenExpired", "SourcesInvalid"} <= names
    assert len(EXCEPTIONS) >= 25


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_exception_is_a_firebreak_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, FirebreakError), f"{cls.__module__}.{cls.__qualname__} does not derive from FirebreakError"


def test_kinds_are_documented_and_the_core_imports_nothing_of_the_project() -> None:
    kinds = [getattr(errors, name) for name in errors.__all__]
    for kind in kinds:
        assert issubclass(kind, FirebreakError)
        assert kind.__doc__ and len(kind.__doc__.strip().splitlines()) == 1, kind
    source = inspect.getsource(errors)
    for package in APP_PACKAGES:
        assert f"from {package}" not in source and f"import {package}" not in source


def test_built_in_bases_callers_catch_are_kept() -> None:
    from notifications.roster import RosterInvalid
    from records.incidents import IncidentNotFound, InvalidTransition
    from runbooks.library import RunbookNotFound
    from tasks.approval import ApprovalTimedOut
    from tasks.base import StepInputError

    assert issubclass(IncidentNotFound, LookupError) and issubclass(IncidentNotFound, errors.NotFound)
    assert issubclass(InvalidTransition, ValueError) and issubclass(InvalidTransition, errors.Conflict)
    assert issubclass(RosterInvalid, ValueError) and issubclass(RosterInvalid, errors.ConfigInvalid)
    assert issubclass(StepInputError, ValueError) and issubclass(StepInputError, errors.InputInvalid)
    assert issubclass(ApprovalTimedOut, TimeoutError) and issubclass(ApprovalTimedOut, errors.StepFailed)
    # Loading an unknown runbook raised FileNotFoundError before it had a class of its own.
    assert issubclass(RunbookNotFound, FileNotFoundError) and issubclass(RunbookNotFound, errors.NotFound)
