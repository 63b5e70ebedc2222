"""Engine, sessions and schema migration for the records database.

SQLite (the embedded default) runs in WAL mode and every session_scope transaction
begins IMMEDIATE, so concurrent steps queue for the write lock instead of failing with
"database is locked" half-way through a transaction; a process's own transactions
take turns before they begin (_configure_sqlite). Reads that write nothing use
read_scope: read-only connections that begin DEFERRED and wait for no writer.

PostgreSQL: one pool per process; a server that is full is waited for at connect, and
inside a run (waiting_out_outages) a server that does not answer is waited for too.
"""
from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from firebreak.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

log = logging.getLogger("firebreak.records.db")

#: SQLAlchemy's own pool defaults, for a process that sizes nothing (the CLI, a run Prefect started).
DEFAULT_POOL_SIZE, DEFAULT_MAX_OVERFLOW = 5, 10
#: SQLite's read-only connections (read_scope): a file handle each, no server to count against, so as
#: many as the threads that read at once (a worker's slots, their live views, the intake).
READ_POOL_SIZE, READ_MAX_OVERFLOW = 8, 32
#: PostgreSQL's SQLSTATE for "sorry, too many clients already" and "remaining connection slots are
#: reserved …": the server is full right now, which passes as other clients disconnect.
TOO_MANY_CONNECTIONS = "53300"
_SERVER_FULL_WORDS = ("too many clients", "remaining connection slots are reserved", "too many connections")

#: How long a SQLite writer waits for the write lock before "database is locked". Clearly shorter
#: than the run lock's stale time (records.run_locks.STALE_AFTER_SECONDS, 30 s): a lock renewal
#: stuck behind other writers must fail, be counted and be tried again while the lease is still
#: fresh. With a wait as long as the stale time, one blocked renewal would let the lease go stale
#: while its holder still believed it was renewing, and another run could take the incident over.
SQLITE_BUSY_TIMEOUT_SECONDS = 10.0

#: How long a run's records write waits for a PostgreSQL server that does not answer at all (stopped,
#: restarting, unreachable) before it fails (see waiting_out_outages). As long as a run's lease on its
#: incident lasts without renewal (records.run_locks.STALE_AFTER_SECONDS, which checks this): waiting
#: longer would only find the lease lost.
OUTAGE_PATIENCE_SECONDS = 30.0
#: What a server says when it is there but not taking connections now (shutting down, starting up,
#: recovering after a crash). psycopg gives no SQLSTATE for a refused connection, only the server's words.
_NOT_ANSWERING_NOW_WORDS = ("the database system is starting up", "the database system is shutting down",
                            "the database system is in recovery mode", "not yet accepting connections",
                            "terminating connection due to administrator command")

#: This context's patience with an unreachable server, in seconds; 0 (fail at once) unless a run set it.
_outage_patience: ContextVar[float] = ContextVar("records_outage_patience", default=0.0)

#: Set in a SQLite connection's info while its transaction holds this process's writer turn.
_HOLDS_TURN = "firebreak_holds_writer_turn"

_engines: dict[str, Engine] = {}
_read_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()
_migrate_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event below own transaction control.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns (WAL fsync), so an alert answered 202, or a
        # step recorded as done, survives a power cut too. Group commit keeps the cost per batch.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.close()

    # This process's transactions take turns before BEGIN IMMEDIATE, and hand the turn on the moment
    # they commit or roll back. SQLite lets one writer in at a time anyway; without the turn the others
    # wait in its busy handler, which sleeps in growing steps (up to 100 ms) whether or not the lock
    # came free meanwhile: under a burst of runs (16 slots, each writing its timeline) the runs then
    # spent more time asleep than writing. Other processes still meet at SQLite's own lock.
    turn = threading.Lock()

    def end_turn(info: dict[str, Any]) -> None:
        if info.pop(_HOLDS_TURN, False):
            turn.release()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # As long as SQLite itself would wait, and failing the same way ("database is locked").
        if not turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_SECONDS):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError(
                "database is locked (this process's other transactions held it)"))
        conn.info[_HOLDS_TURN] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            end_turn(conn.info)
            raise

    # "commit" and "rollback" are told before SQLAlchemy ends the transaction: end it here first, so
    # the turn is handed on only once the write lock is free (the driver's own call after this finds
    # no transaction open and does nothing).
    @event.listens_for(engine, "commit")
    def _on_commit(conn):
        try:
            _sqlite_driver(conn).commit()
        finally:
            end_turn(conn.info)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn):
        try:
            if conn.connection.driver_connection is not None:
                conn.connection.driver_connection.rollback()
        finally:
            end_turn(conn.info)

    # A connection that goes back to the pool, or is thrown away, mid-transaction (an error path)
    # gives up its turn too.
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):
        end_turn(record.info)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(_dbapi_connection, record, _exc):
        end_turn(record.info)


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().records_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                if parsed.database and parsed.database != ":memory:":
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                                                    "check_same_thread": False})
                _configure_sqlite(engine)
            else:
                # One pool per URL per process, shared by every thread (every run on a worker's slots):
                # at most pool_size + max_overflow connections, the figure the connection budget counts.
                # A thread that finds them all in use waits for one (pool_timeout) instead of failing.
                settings = get_settings()
                engine = create_engine(url, pool_pre_ping=True, pool_size=pool_size(),
                                       max_overflow=max_overflow(), pool_timeout=settings.db_pool_timeout)
                _wait_while_server_full(engine, settings.db_pool_timeout)
            _engines[url] = engine
        return engine


def _sqlite_read_engine(url: str) -> Engine:
    """SQLite only: the engine read_scope uses. Its connections are read-only (query_only) and begin
    their transactions DEFERRED, outside this process's writer turn: in WAL mode a reader sees the
    last commit and neither waits for the writer nor holds it up."""
    with _lock:
        engine = _read_engines.get(url)
        if engine is None:
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                                                      "check_same_thread": False},
                                   pool_size=READ_POOL_SIZE, max_overflow=READ_MAX_OVERFLOW)

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_connection, _record):
                dbapi_connection.isolation_level = None  # transactions begin in _on_begin below
                cursor = dbapi_connection.cursor()
                cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
                cursor.execute("PRAGMA query_only=ON")  # a write here is a bug: it fails instead of racing
                cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):
                # One snapshot for the whole scope: what a view reads from several tables agrees. The
                # driver's own commit and rollback end it (no turn to hand on here).
                conn.exec_driver_sql("BEGIN")

            _read_engines[url] = engine
        return engine


def pool_size() -> int:
    """Connections this process keeps per database (FIREBREAK_DB_POOL_SIZE, else SQLAlchemy's 5)."""
    size = get_settings().db_pool_size
    return DEFAULT_POOL_SIZE if size is None else size


def max_overflow() -> int:
    """Connections this process may open beyond its pool at a peak (FIREBREAK_DB_MAX_OVERFLOW, else 10)."""
    overflow = get_settings().db_max_overflow
    return DEFAULT_MAX_OVERFLOW if overflow is None else overflow


def server_full(exc: BaseException) -> bool:
    """The database refused a new connection because it has as many as it allows (for now)."""
    for error in (exc, getattr(exc, "orig", None), exc.__cause__):
        if error is None:
            continue
        if getattr(error, "sqlstate", None) == TOO_MANY_CONNECTIONS:
            return True
        if any(words in str(error).lower() for words in _SERVER_FULL_WORDS):
            return True
    return False


def server_unreachable(exc: BaseException, dbapi_operational_error: type[BaseException]) -> bool:
    """A new connection failed because the server is not answering (refused, reset, timed out) or is
    shutting down or starting up, not because of who asked: a server that answers with any other
    error (a wrong password, no such database) would answer the same again, and that fails at once."""
    if not isinstance(exc, dbapi_operational_error):
        return False
    message = " ".join(str(exc).split()).lower()
    if "fatal:" not in message and "error:" not in message:
        return True  # no answer from a server at all
    return any(words in message for words in _NOT_ANSWERING_NOW_WORDS)


@contextmanager
def waiting_out_outages(seconds: float = OUTAGE_PATIENCE_SECONDS) -> Iterator[None]:
    """In this context (and the tasks and threads it hands its context to), a session_scope whose
    PostgreSQL server is down or restarting tries again for up to `seconds` to connect instead of
    failing at once. A run sets it around its body: a records outage shorter than that pauses the
    run's writes rather than failing its step. The intake never sets it: while the store is away an
    alert must get its 503 at once, so that the monitor sends it again."""
    token = _outage_patience.set(seconds)
    try:
        yield
    finally:
        _outage_patience.reset(token)


def _wait_while_server_full(engine: Engine, patience: float) -> None:
    """A new connection the server refuses as full ("too many clients") is tried again, with
    back-off and jitter, for up to `patience` seconds: another process's connections come and go,
    and a step that needs one waits for it rather than failing its run. Any other refusal (wrong
    password, server down) fails here at once (a run's session waits out a server that is down:
    session_scope)."""

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        deadline = time.monotonic() + patience
        pause, tries = 0.05, 0
        while True:
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as exc:
                if not server_full(exc) or time.monotonic() + pause > deadline:
                    raise
                tries += 1
                if tries == 1:
                    log.warning("the records database is full (too many clients); waiting for a connection "
                                "(up to %gs): %s", patience, " ".join(str(exc).split()))
                pause = _back_off(pause)


def _back_off(pause: float) -> float:
    """Sleep about `pause` (jittered, so waiters that met the same refusal do not all try again at
    once); the next pause, doubled up to a second."""
    time.sleep(pause * (0.5 + random.random()))
    return min(pause * 2, 1.0)


def _sqlite_driver(connection: Connection) -> Any:
    """The sqlite3 connection itself: a pragma run there is outside SQLAlchemy's transaction."""
    driver = connection.connection.driver_connection
    if driver is None:  # only a closed or invalidated connection has none
        raise RuntimeError("the SQLite connection is no longer open")
    return driver


def migrate(url: str | None = None) -> None:
    """Bring the schema to the newest Alembic revision (idempotent, once per process per URL)."""
    url = url or get_settings().records_url
    if url in _migrated:
        return
    # One migration at a time per process: Alembic's `op` and `context` are process-wide
    # proxies, so two threads migrating at once would run each other's operations on
    # each other's connections (on PostgreSQL they then wait on each other forever).
    with _migrate_lock:
        if url in _migrated:
            return
        engine = get_engine(url)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        sqlite = engine.dialect.name == "sqlite"
        with engine.connect() as connection:
            if sqlite:
                # Batch migrations rebuild SQLite tables (copy, drop, rename); with foreign keys on,
                # dropping a table other rows refer to fails. The pragma only changes outside a
                # transaction; the references are checked before the upgrade commits.
                _sqlite_driver(connection).execute("PRAGMA foreign_keys=OFF")
            try:
                with connection.begin():
                    before = MigrationContext.configure(connection).get_current_revision()
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                    if before is not None and before < "0006":
                        # Migration 0006 was applied just now: sign the heads recorded before it, once.
                        from records.audit import adopt_legacy

                        adopt_legacy(connection)
                    if sqlite:
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise RuntimeError(f"the migration left rows referring to missing rows: {broken[:5]}")
            finally:
                if sqlite:
                    _sqlite_driver(connection).execute("PRAGMA foreign_keys=ON")
        _migrated.add(url)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error.

    Under waiting_out_outages (a run), its connection is taken before the body runs, and a server that
    does not answer is waited for, between tries, without holding a place in the pool: a wait inside
    the pool's connect would hold one, and the intake's own writes, which must fail at once with 503,
    would queue behind the waiting runs for the pool timeout instead."""
    migrate(url)
    engine = get_engine(url)
    session = _session_factory(engine)()
    try:
        patience = _outage_patience.get()
        if patience and engine.dialect.name != "sqlite":
            _connect_patiently(session, engine, patience)
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(url: str | None = None) -> Iterator[Session]:
    """A session that only reads (one snapshot). On SQLite it waits for no writer: every session_scope
    transaction takes this process's writer turn and begins IMMEDIATE, so a read there queued behind
    every write, and under a burst the runs' many small reads (a live view, a delivery check) held
    the turn the writes needed (issue 13). Here a write fails ("attempt to write a readonly
    database"). Elsewhere it is a session_scope."""
    url = url or get_settings().records_url
    engine = get_engine(url)
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):  # one connection's own
        with session_scope(url) as session:
            yield session
        return
    migrate(url)
    session = _session_factory(_sqlite_read_engine(url))()
    try:
        yield session
        session.commit()  # ends the read transaction; nothing was written, so nothing is synced
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _connect_patiently(session: Session, engine: Engine, patience: float) -> None:
    deadline = time.monotonic() + patience
    pause, warned = 0.05, False
    while True:
        try:
            session.connection()  # checked out (pinged first: one that died with the server is replaced)
            return
        except DBAPIError as exc:
            if (exc.orig is None or not server_unreachable(exc.orig, engine.dialect.loaded_dbapi.OperationalError)
                    or time.monotonic() + pause > deadline):
                raise
            session.rollback()
            if not warned:
                warned = True
                log.warning("the records database does not answer; this run's write waits for it (up to %gs): %s",
                            patience, " ".join(str(exc.orig).split()))
            pause = _back_off(pause)


_factories: dict[Engine, sessionmaker[Session]] = {}


def _session_factory(engine: Engine) -> sessionmaker[Session]:
    # One per engine: building a sessionmaker sets up its event dispatch, which costs more than
    # a short transaction does.
    factory = _factories.get(engine)
    if factory is None:
        factory = _factories[engine] = sessionmaker(engine, expire_on_commit=False)
    return factory


def dispose_all() -> None:
    with _lock:
        for engine in [*_engines.values(), *_read_engines.values()]:
            engine.dispose()
        _engines.clear()
        _read_engines.clear()
        _factories.clear()
        _migrated.clear()
