"""`prefect`, as Firebreak starts it for its own Prefect server, with one fix for the SQLite server.

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
doing, so no other thread ever waits on a connection's mutex. Everything else is `prefect` as is.
"""
from __future__ import annotations

import sys
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
    """Apply the fix to aiosqlite in this process (idempotent)."""
    import aiosqlite.cursor

    aiosqlite.cursor.Cursor.__del__ = close_on_connection_thread  # type: ignore[attr-defined]


def main() -> None:
    install()
    from prefect.cli import app

    sys.argv[0] = "prefect"
    app()  # exits with Prefect's own exit code


if __name__ == "__main__":
    main()
