"""`prefect`, as Firebreak starts it for its own Prefect server, with two fixes for the SQLite server.

    python -m firebreak.cli.prefect_server_main server start --host 127.0.0.1 --port 4200

Why: under a burst of new incidents the embedded (SQLite) Prefect server froze for 60 s, its
SQLite busy timeout, in one burst in three or four. Found with py-spy, the chain is:

1. Prefect's server talks to SQLite through aiosqlite: one thread per connection, and the
   connection's SQLite mutex is held by that thread while a statement runs, including while it
   sleeps in SQLite's busy handler waiting up to 60 s for the write lock.
2. The write lock is held by another connection's transaction, driven by a coroutine on the
   server's event loop.
3. A cursor of the waiting connection that was never closed, left in a reference cycle, is freed
   by the garbage collector on the event-loop thread. Freeing an
   unclosed sqlite3 cursor resets its statement, which takes that same connection mutex: the
   event loop blocks until the busy wait gives up, so the lock holder can never commit.

Everything on the server (run creation, state changes, the UI) waits those 60 s, and the waiter
then fails with "database is locked". The fix hands an aiosqlite cursor's sqlite3 cursor, when the
wrapper is finalized, to its own connection thread to close, behind whatever that thread is
doing, so no other thread ever waits on a connection's mutex.

Second, the instant 503s. Prefect begins its SQLite write transactions DEFERRED (only
`with_for_update` ones IMMEDIATE). In WAL mode a deferred transaction that has read, and then
writes after another connection committed, cannot take the write lock at all: SQLite answers
"database is locked" at once (its snapshot is stale; the busy handler is not asked), and Prefect
turns that into a 503. Under a burst of new incidents run creations met this again and again,
each retry later (the executor backs off), and a few runs took 4-8 s to be created. Every write
transaction now begins IMMEDIATE: it takes the write lock first, waiting its turn in the busy
handler, so it never meets a stale snapshot. SQLite has one writer anyway; reads outside a
transaction (most of the API and the UI) are untouched. Everything else is `prefect` as is.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys
import weakref
from collections.abc import AsyncIterator
from typing import Any


def close_on_connection_thread(cursor: Any) -> None:
    """aiosqlite.Cursor.__del__: queue the close of the wrapped sqlite3 cursor on the connection's own
    thread. The queued call keeps the sqlite3 cursor alive until that thread closes it, so it is never
    freed (and its statement reset) on the thread that dropped the wrapper."""
    connection = getattr(cursor, "_conn", None)
    inner = getattr(cursor, "_cursor", None)
    queue = getattr(connection, "_tx", None)
    if inner is None or queue is None or not getattr(connection, "_running", False):
        return  # a stopped connection's thread is gone; the cursor is freed where it is, as before
    queue.put_nowait((None, inner.close))  # no future: nobody waits; the thread drops an error of close()


def install() -> None:
    """Apply both fixes in this process (idempotent)."""
    import aiosqlite.cursor
    from prefect.server.database.configurations import AioSqliteConfiguration

    aiosqlite.cursor.Cursor.__del__ = close_on_connection_thread  # type: ignore[attr-defined]
    if not getattr(AioSqliteConfiguration.begin_transaction, "firebreak_immediate", False):
        AioSqliteConfiguration.begin_transaction = _immediate(AioSqliteConfiguration.begin_transaction)  # type: ignore[method-assign]


def _immediate(begin_transaction: Any) -> Any:
    """Prefect's begin_transaction, always in IMMEDIATE mode (for SQLite, `with_for_update` chooses
    BEGIN IMMEDIATE and nothing else: prefect.server.database.configurations), and in turn: the
    write transactions of one event loop queue for it, first come first served, on an asyncio lock.

    Why the turn: SQLite has one writer, and a connection that finds the write lock taken waits in
    its busy handler, which sleeps 1, 2, 5, 10 … up to 100 ms between tries whether or not the lock
    came free meanwhile. Under a burst of new incidents the server's writers (run creations, state
    changes, its event and task-run services) met there, and the unlucky ones slept through many
    commits of the others: the p99 of creating a run was several times its p50. Queued, each writer
    begins the moment the one before it commits. A transaction begun inside one this task already
    holds (Prefect does not do that; SQLite would refuse it anyway) skips the queue rather than wait
    for itself."""
    turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = weakref.WeakKeyDictionary()

    @contextlib.asynccontextmanager
    async def begin_immediate(self: Any, session: Any, with_for_update: bool = False) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        turn = turns.get(loop)
        if turn is None:
            turn = turns[loop] = _Turn()
        task = asyncio.current_task()
        if task is not None and turn.holder is task:
            async with begin_transaction(self, session, with_for_update=True) as transaction:
                yield transaction
            return
        async with turn.lock:
            turn.holder = task
            try:
                async with begin_transaction(self, session, with_for_update=True) as transaction:
                    yield transaction
            finally:
                turn.holder = None

    begin_immediate.firebreak_immediate = True  # type: ignore[attr-defined]
    return begin_immediate


class _Turn:
    """One event loop's write turn (see _immediate) and the task that holds it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holder: asyncio.Task[Any] | None = None


def main() -> None:
    install()
    from prefect.cli import app

    sys.argv[0] = "prefect"
    app()  # exits with Prefect's own exit code


if __name__ == "__main__":
    main()
