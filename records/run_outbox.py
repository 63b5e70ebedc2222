"""The run outbox: one runbook run asked for per incident, and the executors that start it.

records.alert_ingest writes a row in the same transaction that opens the incident. An
executor (intake.runs: the intake's embedded one, or `firebreak worker`) moves it on:

    pending ──claim──▶ claimed ──a slot begins the run──▶ started ──the run returns──▶ finished
       ▲                  │
       └── released ──────┘  (Prefect unreachable: tried again after a back-off)

- An executor claims at most as many rows as it has free run slots; the rest wait here.
- `claimed` and `started` rows of a worker that stopped, or whose heartbeat (RunWorker) is
  stale, are claimable again: the flow run's idempotency key makes the taker find the same
  Prefect run, which it runs if it has not begun, leaves if it runs, or marks finished.
- The `deployment` executor hands the run to Prefect's workers: claimed ──▶ scheduled, and
  reconcile (flows.reconcile) marks it finished when Prefect reports its end.
- Every change of a claimed row is fenced on `claimed_by`: an executor that lost its claim
  (taken over while it looked dead) changes nothing.
- On PostgreSQL a transaction that makes rows claimable now (a new incident's row, rows a stopping
  worker gives back, a run asked to resume) also sends NOTIFY on WAKE_CHANNEL, delivered as it
  commits; executors LISTEN (`wait_for_due_rows`) and claim at once instead of at their next poll.
  The poll stays, for rows due later (a back-off) and for SQLite, which has no such signal.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from records.db import get_engine, max_overflow, pool_size, session_scope
from records.models import Base, Incident, utcnow

log = logging.getLogger("firebreak.records.run_outbox")

#: The PostgreSQL channel told that outbox rows became claimable (see the module docstring).
WAKE_CHANNEL = "firebreak_run_outbox"
#: The fewest connections (pool + overflow) a process needs before one is held for listening.
MIN_CONNECTIONS_TO_LISTEN = 3


class RunRequest(Base):
    """The outbox: one runbook run asked for per incident, started when Prefect answers."""

    __tablename__ = "run_requests"
    __table_args__ = (Index("ix_run_requests_status", "status", "next_attempt_at"),)

    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), primary_key=True)
    flow_name: Mapped[str] = mapped_column(String(100))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20))  # pending | claimed | started | scheduled | finished
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_at: Mapped[datetime | None]
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class RunWorker(Base):
    """A process that executes runs (the intake's embedded executor, or a `firebreak worker`).

    It renews `heartbeat_at` while it lives; outbox rows claimed by a worker whose heartbeat is
    stale are taken over by the others, so a dead worker's queued runs are not forgotten."""

    __tablename__ = "run_workers"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)  # host:pid:random
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    slots: Mapped[int] = mapped_column(Integer)  # runs it executes at once, at most
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]


def idempotency_key(incident_id: str) -> str:
    """Derived from the incident, plus a random part fixed when the outbox row is written:
    incident numbers restart in a new records database while the Prefect server (and the
    keys it remembers) may live on, and a key must never find another database's run."""
    return f"firebreak-incident-run:{incident_id}:{uuid.uuid4().hex}"


#: Statuses of a row some executor holds; taken over when that executor is dead.
HELD = ("claimed", "started")
#: How long a worker's heartbeat may be silent before its claims are taken over (seconds).
WORKER_STALE_SECONDS = 15.0


def announce_claimable(session: Any) -> None:
    """Tell the executors listening on this PostgreSQL database that rows became claimable, when
    `session`'s transaction commits (NOTIFY is transactional: a rollback sends nothing, and one
    transaction sends one however often it is called). Elsewhere nothing: executors poll."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(WAKE_CHANNEL, "")))


def wait_for_due_rows(on_due: Callable[[], None], stop: threading.Event, *, url: str | None = None,
                      retry_seconds: float = 1.0) -> None:
    """Until `stop` is set: call `on_due()` each time a transaction announcing claimable rows commits
    (announce_claimable). PostgreSQL only: on another database it returns at once.

    It holds one connection of this process's pool for LISTEN (the connection budget counts it). A
    connection lost (a restart, a fail-over) is replaced after `retry_seconds`, and `on_due()` is called
    then too: announcements sent while nobody listened are lost, and the caller's poll would otherwise
    find their rows only at its next turn."""
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        return
    if pool_size() + max_overflow() < MIN_CONNECTIONS_TO_LISTEN:
        # A pool this small (FIREBREAK_DB_POOL_SIZE set low on purpose) is the runs' own: polling it is.
        log.info("outbox wake-ups off: a pool of %d (+%d) keeps no connection to spare", pool_size(), max_overflow())
        return
    lost: str | None = None  # why the last connection went, while it is not back
    while not stop.is_set():
        connection = None
        try:
            connection = engine.connect()
            connection.rollback()  # nothing open: LISTEN outside a transaction takes effect at once
            listener = connection.connection.driver_connection
            assert listener is not None  # a live connection has its driver's
            listener.autocommit = True
            listener.execute(f"LISTEN {WAKE_CHANNEL}")
            if lost is not None:
                log.info("outbox wake-ups back (they had stopped: %s)", lost)
                lost = None
                on_due()  # what was announced while nobody listened
            while not stop.is_set():
                for _ in listener.notifies(timeout=1.0, stop_after=1):
                    on_due()
        except Exception as exc:  # noqa: BLE001  the database went away: listen again when it is back; the poll goes on
            if lost is None:
                log.warning("outbox wake-ups stopped (%s: %s): listening again every %gs; until then "
                            "executors find new rows at their poll", type(exc).__name__, exc, retry_seconds)
            lost = f"{type(exc).__name__}: {exc}"[:300]
            stop.wait(retry_seconds)
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):  # a dead connection may refuse even that
                    connection.invalidate()  # autocommit and LISTEN: not for the pool's other users
                    connection.close()


# --- workers ------------------------------------------------------------------------------------


def register_worker(worker_id: str, *, host: str, pid: int, slots: int, url: str | None = None) -> None:
    now = utcnow()
    with session_scope(url) as session:
        session.add(RunWorker(id=worker_id, host=host, pid=pid, slots=slots, started_at=now, heartbeat_at=now))


def renew_worker(worker_id: str, *, url: str | None = None) -> bool:
    """The worker's heartbeat (every ~2 s while it lives); False if its row is gone (register again)."""
    with session_scope(url) as session:
        return bool(_changed(session.execute(
            update(RunWorker).where(RunWorker.id == worker_id).values(heartbeat_at=utcnow()))))


def stop_worker(worker_id: str, *, url: str | None = None) -> int:
    """A clean stop: the worker is marked stopped and the rows it claimed but did not begin go
    back to pending at once, for the other executors; returns how many. (Rows whose run it began
    stay `started`: the run ends here, or reconcile records it crashed.)"""
    with session_scope(url) as session:
        session.execute(update(RunWorker).where(RunWorker.id == worker_id).values(stopped_at=utcnow()))
        given_back = _changed(session.execute(
            update(RunRequest).where(RunRequest.claimed_by == worker_id, RunRequest.status == "claimed")
            .values(status="pending", claimed_by=None, claimed_at=None, next_attempt_at=utcnow())))
        if given_back:
            announce_claimable(session)
        return given_back


def live_workers(*, stale_after: float = WORKER_STALE_SECONDS, url: str | None = None) -> list[RunWorker]:
    with session_scope(url) as session:
        return list(session.scalars(select(RunWorker).where(*_alive(stale_after)).order_by(RunWorker.started_at)))


def forget_workers_before(moment: datetime, *, url: str | None = None) -> int:
    """Delete worker rows silent since `moment` (a worker row that is gone counts as dead)."""
    with session_scope(url) as session:
        return _changed(session.execute(delete(RunWorker).where(RunWorker.heartbeat_at < moment)))


def _alive(stale_after: float) -> tuple[ColumnElement[bool], ...]:
    return RunWorker.stopped_at.is_(None), RunWorker.heartbeat_at >= utcnow() - timedelta(seconds=stale_after)


# --- the outbox rows ------------------------------------------------------------------------------


def _claimable(worker: str, stale_after: float) -> ColumnElement[bool]:
    """Due pending rows, and rows held by another worker that is not alive (stopped, silent, or
    unknown). Never the claimer's own: it is alive, even if its heartbeat is late (a busy machine),
    and its slots are on those rows."""
    live = select(RunWorker.id).where(*_alive(stale_after))
    orphaned = (RunRequest.status.in_(HELD) & RunRequest.finished_at.is_(None)
                & (RunRequest.claimed_by.is_(None)
                   | ((RunRequest.claimed_by != worker) & RunRequest.claimed_by.not_in(live.scalar_subquery()))))
    # The leading IN lets the status index skip the (many) finished rows.
    return RunRequest.status.in_(("pending", *HELD)) & or_(
        (RunRequest.status == "pending") & (RunRequest.next_attempt_at <= utcnow()), orphaned)


def claim_run_requests(worker: str, *, limit: int = 20, stale_after: float = WORKER_STALE_SECONDS,
                       url: str | None = None) -> list[RunRequest]:
    """Claim at most `limit` rows for `worker` (its free run slots), oldest first: due pending
    rows, and rows a dead worker held (see module docstring). Of several executors racing for a
    row exactly one gets it (PostgreSQL: row locks, SKIP LOCKED; SQLite: one writer at a time)."""
    if limit <= 0:
        return []
    now = utcnow()
    with session_scope(url) as session:
        due = list(session.scalars(
            select(RunRequest.incident_id).where(_claimable(worker, stale_after))
            .order_by(RunRequest.created_at).limit(limit).with_for_update(skip_locked=True, of=RunRequest)))
        if not due:
            return []
        won = list(session.scalars(
            update(RunRequest).where(RunRequest.incident_id.in_(due), _claimable(worker, stale_after))
            .values(status="claimed", claimed_by=worker, claimed_at=now, attempts=RunRequest.attempts + 1)
            .returning(RunRequest.incident_id).execution_options(synchronize_session=False)))
        if not won:
            return []
        return list(session.scalars(select(RunRequest).where(RunRequest.incident_id.in_(won))
                                    .order_by(RunRequest.created_at)))


def _held_by(worker: str, incident_id: str) -> ColumnElement[bool]:
    return (RunRequest.incident_id == incident_id) & (RunRequest.claimed_by == worker) & (RunRequest.status == "claimed")


def release_run_request(incident_id: str, error: str, retry_in: float, *, worker: str,
                        url: str | None = None) -> None:
    """Give a claimed row back to pending, to be tried again in `retry_in` seconds."""
    with session_scope(url) as session:
        session.execute(update(RunRequest).where(_held_by(worker, incident_id))
                        .values(status="pending", last_error=error[:2000], claimed_by=None, claimed_at=None,
                                next_attempt_at=utcnow() + timedelta(seconds=retry_in)))


def note_run_error(incident_id: str, error: str, *, worker: str, url: str | None = None) -> None:
    """Why a claimed row's run is not created yet (the holder keeps trying)."""
    with session_scope(url) as session:
        session.execute(update(RunRequest).where(_held_by(worker, incident_id)).values(last_error=error[:2000]))


def mark_run_started(incident_id: str, flow_run_id: str, *, worker: str, url: str | None = None) -> bool:
    """A slot of `worker` begins the run now. False (nothing changed) if the claim was lost."""
    with session_scope(url) as session:
        won = _changed(session.execute(update(RunRequest).where(_held_by(worker, incident_id))
                                       .values(status="started", flow_run_id=flow_run_id, started_at=utcnow(),
                                               last_error=None)))
        if won:
            _attach_flow_run(session, incident_id, flow_run_id)
        return bool(won)


def mark_run_elsewhere(incident_id: str, flow_run_id: str, status: str, *, worker: str,
                       url: str | None = None) -> bool:
    """The run is not this executor's to run: `scheduled` (handed to Prefect's workers by the
    deployment executor) or `started` (Prefect shows it running, paused … somewhere). Fenced."""
    assert status in ("scheduled", "started")
    values: dict[str, Any] = {"status": status, "flow_run_id": flow_run_id, "last_error": None}
    if status == "started":
        values["started_at"] = func.coalesce(RunRequest.started_at, utcnow())
    with session_scope(url) as session:
        won = _changed(session.execute(update(RunRequest).where(_held_by(worker, incident_id)).values(**values)))
        if won:
            _attach_flow_run(session, incident_id, flow_run_id)
        return bool(won)


def mark_run_finished(incident_id: str, flow_run_id: str | None = None, *, url: str | None = None) -> bool:
    """The run ended, whatever its state (the incident's run_state says which)."""
    with session_scope(url) as session:
        values: dict[str, Any] = {"status": "finished", "finished_at": utcnow()}
        if flow_run_id:
            values["flow_run_id"] = func.coalesce(RunRequest.flow_run_id, flow_run_id)
        won = _changed(session.execute(update(RunRequest).where(RunRequest.incident_id == incident_id,
                                                                RunRequest.finished_at.is_(None))
                                       .values(**values)))
        if won and flow_run_id:
            _attach_flow_run(session, incident_id, flow_run_id)
        return bool(won)


def requeue_for_resume(incident_id: str, flow_run_id: str, *, url: str | None = None) -> bool:
    """The incident's run ended (crashed, failed, cancelled) and is to go on in the same flow run:
    its finished row becomes pending again, for whichever executor claims it first. False if the
    row is not that run's (another run was asked for since, or the run did not come from the outbox)."""
    with session_scope(url) as session:
        requeued = bool(_changed(session.execute(
            update(RunRequest).where(RunRequest.incident_id == incident_id, RunRequest.flow_run_id == flow_run_id,
                                     RunRequest.status == "finished")
            .values(status="pending", claimed_by=None, claimed_at=None, started_at=None, finished_at=None,
                    next_attempt_at=utcnow(), last_error=None))))
        if requeued:
            announce_claimable(session)
        return requeued


def is_resumable(incident_id: str, flow_run_id: str, *, url: str | None = None) -> bool:
    """Whether requeue_for_resume would find this run's finished row."""
    row = run_request(incident_id, url=url)
    return row is not None and row.flow_run_id == flow_run_id and row.status == "finished"


def _changed(result: Any) -> int:
    """Rows an UPDATE or DELETE changed."""
    return cast(CursorResult[Any], result).rowcount


def _attach_flow_run(session: Any, incident_id: str, flow_run_id: str) -> None:
    session.execute(update(Incident).where(Incident.id == incident_id, Incident.flow_run_id.is_(None))
                    .values(flow_run_id=flow_run_id))


def unfinished_runs(*, excluding: AbstractSet[str] = frozenset(), url: str | None = None) -> list[RunRequest]:
    """Rows handed to a flow run (`started`, `scheduled`) that are not finished, but those of `excluding`."""
    with session_scope(url) as session:
        return [row for row in session.scalars(
            select(RunRequest).where(RunRequest.status.in_(("started", "scheduled")), RunRequest.finished_at.is_(None),
                                     RunRequest.flow_run_id.is_not(None)))
                if row.incident_id not in excluding]


def run_request(incident_id: str, *, url: str | None = None) -> RunRequest | None:
    with session_scope(url) as session:
        return session.get(RunRequest, incident_id)


def pending_run_requests(*, url: str | None = None) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(RunRequest)
                              .where(RunRequest.status.in_(("pending", "claimed")))) or 0
