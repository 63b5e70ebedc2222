"""The fixes firebreak.cli.prefect_server_main applies to the Prefect server it starts.

The freeze it fixes, reproduced with two aiosqlite connections on one SQLite file, as the Prefect
server's own connections met under a burst:
- A holds the write lock; its commit is driven from the event loop;
- B waits for that lock inside SQLite's busy handler (holding B's connection mutex);
- a cursor of B that was never closed is dropped on the event-loop thread.

Unfixed, dropping the cursor blocks the event loop on B's mutex until B's busy wait gives up, so A
cannot commit in time and B fails with "database is locked" (the Prefect server froze for 60 s like
this). Fixed, the loop goes on, A commits, and B's write goes through.

The instant 503s it fixes, reproduced with two of the server's own write transactions (below).
"""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiosqlite
import pytest

REPO = Path(__file__).resolve().parents[2]
#: B's busy timeout: how long the unfixed event loop stays blocked.
BUSY_TIMEOUT_MS = 2000


async def _drop_a_cursor_while_its_connection_waits(database: Path) -> str:
    """What happens to B's write: 'written', or the error B got."""
    async with aiosqlite.connect(database, isolation_level=None) as a, \
            aiosqlite.connect(database, isolation_level=None) as b:
        await a.execute("PRAGMA journal_mode = WAL")
        await a.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
        await a.execute("INSERT INTO t VALUES (1), (2), (3)")
        await b.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # A statement still in use, never closed, that holds no read transaction (it reads no table),
        # like the server's failed statements: B can still wait for the write lock in the busy handler.
        left_open = await b.execute("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3")
        assert await left_open.fetchone() is not None

        await a.execute("BEGIN IMMEDIATE")  # A holds the write lock
        await a.execute("INSERT INTO t VALUES (4)")
        b_write = asyncio.ensure_future(b.execute("INSERT INTO t VALUES (5)"))  # B waits for it
        while not _waiting_in_sqlite(b, b_write):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # B's thread has taken the write; let it reach the busy handler (timeout 2 s)

        del left_open  # dropped on the event-loop thread, as the garbage collector did in the server
        await a.execute("COMMIT")  # the holder commits: B's write can now go through
        try:
            await b_write
        except sqlite3.OperationalError as exc:
            return str(exc)
        return "written"


def _waiting_in_sqlite(connection: aiosqlite.Connection, write: asyncio.Future[object]) -> bool:
    """The connection's thread has taken the write off its queue and not answered: it is inside
    SQLite, which (A holding the write lock) means in the busy handler."""
    return connection._tx.empty() and not write.done()


def _in_a_process_of_its_own(case: str, database: Path, fixed: bool) -> str:
    """Run one of the cases above on `database` in a process of its own, the fixes installed or not (they
    change aiosqlite and Prefect for the whole process, as in the server; this test process stays as it was),
    and return what it printed."""
    script = ("import asyncio, sys; from pathlib import Path; from firebreak.cli import prefect_server_main; "
              + ("prefect_server_main.install(); " if fixed else "")
              + f"from tests.firebreak.test_prefect_server_main import {case} as case; "
              + "print(asyncio.run(case(Path(sys.argv[1]))))")
    result = subprocess.run([sys.executable, "-c", script, str(database)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "unfixed"])
def test_a_cursor_dropped_on_the_loop_thread_does_not_block_the_lock_holder(tmp_path: Path, fixed: bool) -> None:
    outcome = _in_a_process_of_its_own("_drop_a_cursor_while_its_connection_waits", tmp_path / "prefect.db", fixed)
    if fixed:
        assert outcome == "written"
    else:  # the bug the fix is for, still present in this stack (if this fails, the fix may be obsolete)
        # B's write fails: mostly "database is locked" (its busy wait gave up); about one time in ten the
        # reset on the loop thread lands inside B's statement and B reports SQLite's "not an error".
        assert outcome in ("database is locked", "not an error"), outcome


async def _read_then_write_after_another_commit(database: Path) -> str:
    """Two of the Prefect server's own write transactions (its SQLite configuration, its pragmas): T1
    reads, T2 writes and commits meanwhile, then T1 writes. What happens to T1: 'written' or its error."""
    from prefect.server.database.configurations import AioSqliteConfiguration
    from sqlalchemy import text

    config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{database}")
    engine = await config.engine()
    async with engine.begin() as setup:
        await setup.execute(text("CREATE TABLE t (n INTEGER)"))
    first, second = await config.session(engine), await config.session(engine)

    async def t2_writes() -> None:
        async with config.begin_transaction(second):
            await second.execute(text("INSERT INTO t VALUES (2)"))

    try:
        async with config.begin_transaction(first):
            await first.execute(text("SELECT count(*) FROM t"))
            other = asyncio.ensure_future(t2_writes())  # fixed: it waits for T1's lock; unfixed: it commits
            for _ in range(150):  # unfixed, until T2 has committed; fixed, T2 cannot, so 3 s pass
                if other.done():
                    break
                await asyncio.sleep(0.02)
            await first.execute(text("INSERT INTO t VALUES (1)"))
        await other
    except Exception as exc:  # noqa: BLE001  the outcome is the point
        return f"{type(exc).__name__}: {exc}"
    finally:
        await first.close()
        await second.close()
        await engine.dispose()
    return "written"


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "unfixed"])
def test_a_write_transaction_that_read_first_waits_its_turn_instead_of_failing_at_once(tmp_path: Path,
                                                                                        fixed: bool) -> None:
    """Unfixed, T1 fails at once with "database is locked" (the server answers 503), though its busy timeout
    is 60 s: its snapshot went stale when T2 committed. Fixed, T1 holds the write lock from its BEGIN, T2
    waits for it, and both write."""
    outcome = _in_a_process_of_its_own("_read_then_write_after_another_commit", tmp_path / "prefect.db", fixed)
    if fixed:
        assert outcome == "written"
        rows = sqlite3.connect(tmp_path / "prefect.db").execute("SELECT n FROM t ORDER BY n").fetchall()
        assert rows == [(1,), (2,)]
    else:  # still how Prefect 3.8.8 begins its writes (if this fails, the fix may be obsolete)
        assert "database is locked" in outcome


async def _writers_queued_behind_a_holder(database: Path) -> str:
    """T1 holds a write transaction while T2, T3 and T4 begin theirs, in that order; each writes its
    number. What the table holds afterwards, and whether the waiters waited inside SQLite meanwhile."""
    from prefect.server.database.configurations import AioSqliteConfiguration
    from sqlalchemy import text

    config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{database}")
    engine = await config.engine()
    async with engine.begin() as setup:
        await setup.execute(text("CREATE TABLE t (n INTEGER)"))
    sessions = [await config.session(engine) for _ in range(4)]
    in_sqlite = []

    async def writes(number: int) -> None:
        async with config.begin_transaction(sessions[number - 1]):
            await sessions[number - 1].execute(text(f"INSERT INTO t VALUES ({number})"))

    try:
        async with config.begin_transaction(sessions[0]):
            await sessions[0].execute(text("INSERT INTO t VALUES (1)"))
            waiters = []
            for number in (2, 3, 4):
                waiters.append(asyncio.ensure_future(writes(number)))
                await asyncio.sleep(0.2)  # each has begun its wait before the next comes
            # A waiter inside SQLite holds a connection checked out of the pool; queued, none has one yet.
            in_sqlite.append(engine.pool.checkedout() - 1)
        await asyncio.gather(*waiters)
    finally:
        for session in sessions:
            await session.close()
        await engine.dispose()
    rows = sqlite3.connect(database).execute("SELECT n FROM t ORDER BY rowid").fetchall()
    return f"{[n for (n,) in rows]} waiting in sqlite: {in_sqlite[0]}"


def test_write_transactions_queue_first_come_first_served_outside_sqlite(tmp_path: Path) -> None:
    """Fixed, writers that find the write lock taken wait on the server's own turn, not asleep in SQLite's
    busy handler (1 … 100 ms naps whether or not the lock came free), and write in the order they came."""
    outcome = _in_a_process_of_its_own("_writers_queued_behind_a_holder", tmp_path / "prefect.db", True)
    assert outcome == "[1, 2, 3, 4] waiting in sqlite: 0"


def test_the_server_firebreak_starts_runs_prefect_with_the_fix(tmp_path: Path) -> None:
    """The launcher is `prefect` itself (its CLI answers), with the fix installed before it runs."""
    result = subprocess.run([sys.executable, "-m", "firebreak.cli.prefect_server_main", "version"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "3.8.8" in result.stdout
    probe = ("import aiosqlite.cursor as c; from firebreak.cli import prefect_server_main as m; m.install(); "
             "m.install(); from prefect.server.database.configurations import AioSqliteConfiguration as a; "
             "print(c.Cursor.__del__ is m.close_on_connection_thread and a.begin_transaction.firebreak_immediate "
             "and a.begin_transaction.__wrapped__.__closure__[0].cell_contents.__name__ == 'begin_transaction')")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60).stdout.strip() == "True"


def test_the_local_server_is_started_through_the_launcher() -> None:
    from firebreak.cli.prefect_server import server_command

    assert server_command(4321) == [sys.executable, "-m", "firebreak.cli.prefect_server_main", "server", "start",
                                    "--host", "127.0.0.1", "--port", "4321"]
