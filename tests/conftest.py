"""Test session plumbing: one real Prefect server for the whole session, a
throw-away FIREBREAK_HOME, and the contact-centre simulator.

The environment is set here, at import, because Prefect reads its settings
when it is first imported (test modules import it while being collected).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.notifications_support import NotifyConfig


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_SESSION_DIR = Path(tempfile.mkdtemp(prefix="firebreak-tests-"))
_PREFECT_PORT = _free_port()
_API_URL = f"http://127.0.0.1:{_PREFECT_PORT}/api"

os.environ.update({
    "FIREBREAK_HOME": str(_SESSION_DIR / "home"),
    "PREFECT_API_URL": _API_URL,
    "PREFECT_HOME": str(_SESSION_DIR / "prefect-client"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # The server stops at session end; logs still queued for it would only print errors.
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
})
os.environ.pop("FIREBREAK_DATABASE_URL", None)
os.environ.pop("FIREBREAK_CONTACTS_FILE", None)

from firebreak.cli.prefect_server import start_local_server, wait_until_healthy  # noqa: E402

_SERVER_LOG = _SESSION_DIR / "prefect-server.log"
_SERVER: subprocess.Popen[bytes] | None = None


def _is_xdist_controller(config: pytest.Config) -> bool:
    """Under `pytest -n N` the controlling process runs no test: only its workers need a server."""
    return bool(getattr(config.option, "numprocesses", None)) and "PYTEST_XDIST_WORKER" not in os.environ


def pytest_configure(config: pytest.Config) -> None:
    # Started before collection so the ~17 s start-up overlaps it. Each xdist worker is a session
    # of its own, with its own server, port and FIREBREAK_HOME (all chosen above, per process).
    global _SERVER
    if _is_xdist_controller(config):
        return
    # The Prefect server is not ours to measure: started without coverage's subprocess hook, so it
    # is not slowed by tracing (`make test` runs the suite under `coverage run`).
    coverage_config = os.environ.pop("COVERAGE_PROCESS_CONFIG", None)
    try:
        _SERVER = start_local_server(_SESSION_DIR / "prefect-server", _PREFECT_PORT, _SERVER_LOG, detach=False)
    finally:
        if coverage_config is not None:
            os.environ["COVERAGE_PROCESS_CONFIG"] = coverage_config


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SERVER is None:
        return
    _SERVER.terminate()
    try:
        _SERVER.wait(timeout=20)
    except subprocess.TimeoutExpired:
        _SERVER.kill()


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """The session's real Prefect server (its API URL)."""
    assert _SERVER is not None, "no Prefect server was started for this session"
    wait_until_healthy(_API_URL, _SERVER, _SERVER_LOG)
    return _API_URL


@pytest.fixture
def simulator() -> Iterator[object]:
    """A fresh simulator with no fault; its inbox receives the contacts' notifications."""
    from simulator import start_simulator

    sim = start_simulator(fault="none", recovery_seconds=0.5)
    previous = os.environ.get("FIREBREAK_INBOX")
    os.environ["FIREBREAK_INBOX"] = f"{sim.host}:{sim.port}"
    try:
        yield sim
    finally:
        sim.stop()
        if previous is None:
            os.environ.pop("FIREBREAK_INBOX", None)
        else:
            os.environ["FIREBREAK_INBOX"] = previous


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Point the records at a fresh database of each backend for one test."""
    from records.db import dispose_all
    from tests.postgres import temporary_database
    from tests.records_env import records_database_at

    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'records.db'}"
        else:
            url = stack.enter_context(temporary_database())
        stack.enter_context(records_database_at(url))
        stack.callback(dispose_all)  # runs first: the engines go before the URL is restored
        yield request.param


@pytest.fixture
def notify_config(tmp_path: Path) -> Iterator[NotifyConfig]:
    """A notifications configuration written per test (see tests/notifications_support.py)."""
    from tests.notifications_support import NotifyConfig

    config = NotifyConfig(tmp_path / "notifications")
    config.directory.mkdir()
    try:
        yield config
    finally:
        config.restore()

