"""Writers take turns on SQLite: a thread lock within the process, an advisory file lock across processes.

SQLite lets one writer in at a time anyway, and writers that wait in its busy handler sleep
in growing steps (up to 100 ms), which under a burst costs far more than queueing. Threads
of this process queue on a lock (records.db does that for every transaction too, per engine;
this one also orders the threads around the file lock); processes (several intake workers, or
the intake's writer process, on one database) on an advisory file lock beside the database,
which wakes the next waiter the moment it is released. PostgreSQL needs no turn-taking (row locks decide).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: threads still take turns; processes meet at SQLite's own lock
    fcntl = None  # type: ignore[assignment]

from records.db import get_engine

_SQLITE_WRITER = threading.Lock()


def writer_turn(url: str | None) -> AbstractContextManager[Any]:
    """On SQLite, take turns before BEGIN IMMEDIATE (see the module's docstring); elsewhere, nothing."""
    engine = get_engine(url)
    if engine.dialect.name != "sqlite":
        return nullcontext()
    return _sqlite_turn(engine.url.database)


@contextmanager
def _sqlite_turn(database: str | None) -> Iterator[None]:
    with _SQLITE_WRITER:
        descriptor = _turn_file(database)
        if descriptor is None:
            yield
            return
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)


_turn_files: dict[str, int] = {}


def _turn_file(database: str | None) -> int | None:
    if fcntl is None or not database or database == ":memory:":
        return None
    descriptor = _turn_files.get(database)
    if descriptor is None:
        descriptor = _turn_files[database] = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    return descriptor
