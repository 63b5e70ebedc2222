"""The migrations and the models agree, on SQLite and, where it is reachable, PostgreSQL; and the
migrations compute with their own frozen code, never the application's.

`alembic check` runs from the command line in a fresh interpreter, as an engineer would run
`alembic revision --autogenerate`: only what env.py imports is registered on the metadata
there, so a model module that env.py does not reach shows up as tables to drop.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from records.db import MIGRATIONS_DIR
from tests.postgres import temporary_database

VERSIONS = sorted((MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
#: What a migration may import besides the standard library: nothing of the application.
MIGRATION_LIBRARIES = {"alembic", "sqlalchemy"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'records.db'}"
        else:
            yield stack.enter_context(temporary_database())


def alembic(tmp_path: Path, url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {MIGRATIONS_DIR}\n")
    environment = {**os.environ, "FIREBREAK_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), *arguments], env=environment,
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)


def test_upgraded_database_matches_the_models(empty_database: str, tmp_path: Path) -> None:
    upgrade = alembic(tmp_path, empty_database, "upgrade", "head")
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    check = alembic(tmp_path, empty_database, "check")
    output = check.stdout + check.stderr
    assert check.returncode == 0, f"autogenerate finds differences between migrations and models:\n{output}"
    assert "No new upgrade operations detected" in output


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):  # inside functions too
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            modules.add((node.module or "").split(".")[0])
    return modules


@pytest.mark.parametrize("path", VERSIONS, ids=lambda p: p.stem)
def test_migrations_import_no_application_code(path: Path) -> None:
    foreign = _imported_modules(path) - MIGRATION_LIBRARIES - set(sys.stdlib_module_names)
    assert not foreign, (f"{path.name} imports {', '.join(sorted(foreign))}: a migration keeps its own frozen "
                         f"copy of what it computes, so later changes to the application cannot alter it")
