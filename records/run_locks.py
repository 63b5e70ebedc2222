"""One runbook run at a time per incident, decided by the database.

A Prefect deployment concurrency limit is released while a run is paused (for
an approval), so it cannot stop a second run of the same incident from
starting then. This lock is a row per incident: the holder renews it while it
lives (paused or not); another run finds it held and refuses to start; a holder
that died (no renewal for `stale_after` seconds) loses it to the next run.

The lock is a fenced lease. Each holder that takes it over from another raises its
`generation` by one (a retry or resume of the same flow run re-enters with the same
generation); releasing keeps the row, so generations only grow. The holder's `Lease`
knows its generation, and:

- renewing reports whether the lease is still held: it returns the generation or raises
  LeaseLost (taken over, released, or not renewed for longer than the stale time — a
  holder that could not reach the database that long must assume another run took over);
- `fence(lease)` is checked in the same transaction as every step's intent event
  (records.incidents.append_event(guard=…)): the lock row, locked FOR UPDATE, must still
  name this holder and generation, unreleased and fresh, or the intent is refused with
  LeaseLost and the side effect never happens. A stale holder that lost the lease without
  knowing cannot interleave its side effects with the run that took the incident over.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ForeignKey, Integer, String, select, text, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from firebreak.background import repeating
from firebreak.errors import Conflict
from records.db import OUTAGE_PATIENCE_SECONDS, SQLITE_BUSY_TIMEOUT_SECONDS, read_scope, session_scope
from records.incidents import IncidentNotFound
from records.models import Base, Incident, utcnow

RENEW_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0
#: A renewal blocked waiting for the database must fail well before the lease goes stale
#: (records.db); several renewals fit in the stale time even when each waits that long.
assert SQLITE_BUSY_TIMEOUT_SECONDS * 2 < STALE_AFTER_SECONDS - RENEW_SECONDS
#: A run's write waiting out a records outage (records.db.waiting_out_outages) gives up by the time its
#: lease would be lost anyway. The renewals themselves never wait (their thread has no patience set).
assert OUTAGE_PATIENCE_SECONDS <= STALE_AFTER_SECONDS
#: PostgreSQL's equivalent for a renewal waiting on the lock row.
RENEW_LOCK_TIMEOUT_MS = int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)

_log = logging.getLogger("firebreak.run_locks")


class IncidentRunLock(Base):
    __tablename__ = "incident_run_locks"

    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))  # the flow run id holding it
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Fencing token: raised by one each time a new holder takes the lock, so writes made under
    #: an older generation (a holder that lost the lease without knowing) can be refused.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    #: Set when the holder let go; the row stays so the next holder's generation is higher.
    released_at: Mapped[datetime | None]


class IncidentBusy(Conflict, RuntimeError):
    """Another run of this incident is alive (running or paused)."""

    def __init__(self, incident_id: str, holder: str):
        super().__init__(f"incident {incident_id} already has a runbook run in progress (flow run {holder}, "
                         f"running or paused); a second run does not start")
        self.incident_id = incident_id
        self.holder = holder


class LeaseLost(Conflict, RuntimeError):
    """This run no longer holds its incident's run lock (taken over, released, or not renewed in time):
    it must start nothing more, and an intent written under it is refused."""

    def __init__(self, incident_id: str, holder: str, generation: int, reason: str):
        super().__init__(f"run lock of incident {incident_id} lost by flow run {holder} (generation {generation}): "
                         f"{reason}")
        self.incident_id = incident_id
        self.holder = holder
        self.generation = generation
        self.reason = reason


def acquire(incident_id: str, holder: str, *, stale_after: float = STALE_AFTER_SECONDS) -> int:
    """Take the incident's lock for `holder` and return its generation, or raise IncidentBusy.

    Re-entrant for the same holder (a flow retry or a resumed run of the same flow run), which keeps
    its generation; a new holder taking a released lock, or one whose holder died (no renewal for
    `stale_after` seconds), gets the next generation."""
    now = utcnow()
    with session_scope() as session:
        while True:
            row = session.scalars(select(IncidentRunLock).where(IncidentRunLock.incident_id == incident_id)
                                  .with_for_update()).first()
            if row is None:
                try:
                    with session.begin_nested():
                        session.add(IncidentRunLock(incident_id=incident_id, holder=holder, acquired_at=now,
                                                    renewed_at=now, generation=1))
                    return 1
                except IntegrityError:
                    # A concurrent run inserted it (lock and judge that row), or there is no such incident.
                    if session.get(Incident, incident_id) is None:
                        raise IncidentNotFound(f"no incident {incident_id!r}") from None
                    continue
            live = row.released_at is None and row.renewed_at > now - timedelta(seconds=stale_after)
            if row.holder != holder and live:
                raise IncidentBusy(incident_id, row.holder)
            if row.holder != holder:  # a new run, after the last one let go or died: the next generation
                row.holder, row.acquired_at, row.generation = holder, now, row.generation + 1
            row.renewed_at, row.released_at = now, None
            return row.generation


def renew(incident_id: str, holder: str, generation: int) -> int:
    """Renew the lease; returns its generation, or raises LeaseLost if this holder no longer has it."""
    with session_scope() as session:
        if session.get_bind().dialect.name == "postgresql":
            # Fail (and be counted, and retried) rather than wait past the stale time behind the row lock.
            session.execute(text(f"SET LOCAL lock_timeout = {RENEW_LOCK_TIMEOUT_MS}"))
        renewed = session.execute(
            update(IncidentRunLock)
            .where(IncidentRunLock.incident_id == incident_id, IncidentRunLock.holder == holder,
                   IncidentRunLock.generation == generation, IncidentRunLock.released_at.is_(None))
            .values(renewed_at=utcnow()))
        if cast(CursorResult[Any], renewed).rowcount != 1:  # an UPDATE's result is a CursorResult
            raise LeaseLost(incident_id, holder, generation, _why_not_held(session, incident_id, holder, generation))
        return generation


def release(incident_id: str, holder: str, generation: int | None = None) -> None:
    """Let go of the lock (only if this holder, and this generation when given, still has it)."""
    conditions = [IncidentRunLock.incident_id == incident_id, IncidentRunLock.holder == holder,
                  IncidentRunLock.released_at.is_(None)]
    if generation is not None:
        conditions.append(IncidentRunLock.generation == generation)
    with session_scope() as session:
        session.execute(update(IncidentRunLock).where(*conditions).values(released_at=utcnow()))


def check_held(session: Session, incident_id: str, holder: str, generation: int, *,
               stale_after: float = STALE_AFTER_SECONDS) -> None:
    """In the caller's transaction: lock the incident's lock row and raise LeaseLost unless it still
    names this holder and generation, unreleased and renewed within the stale time (a stale lease can
    be taken over the moment this transaction ends, so what it would authorise could interleave)."""
    row = session.scalars(select(IncidentRunLock).where(IncidentRunLock.incident_id == incident_id)
                          .with_for_update()).first()
    if row is None or row.holder != holder or row.generation != generation or row.released_at is not None:
        raise LeaseLost(incident_id, holder, generation, _why_not_held(session, incident_id, holder, generation))
    if row.renewed_at <= utcnow() - timedelta(seconds=stale_after):
        raise LeaseLost(incident_id, holder, generation, f"not renewed since {row.renewed_at.isoformat()} "
                                                         f"(stale after {stale_after:g}s)")


def fence(incident_id: str, holder: str, generation: int) -> Callable[[Session], None]:
    """A guard for records.incidents.append_event: the event is written only under this lease."""
    return lambda session: check_held(session, incident_id, holder, generation)


def current(incident_id: str) -> IncidentRunLock | None:
    with read_scope() as session:
        return session.get(IncidentRunLock, incident_id)


def _why_not_held(session: Session, incident_id: str, holder: str, generation: int) -> str:
    row = session.get(IncidentRunLock, incident_id)
    if row is None:
        return "the incident has no run lock"
    if row.holder != holder or row.generation != generation:
        return f"flow run {row.holder} took it over (generation {row.generation})"
    return "it was released"


@dataclass
class Lease:
    """One holder's lease of one incident's run lock, at one generation.

    `renew()` reports whether it is still held; once lost it stays lost. A lease whose last
    successful renewal is older than the stale time is lost too, even if the database could
    not say so: another run may have taken the incident over meanwhile."""

    incident_id: str
    holder: str
    generation: int
    stale_after: float = STALE_AFTER_SECONDS
    #: Renewals that failed for a reason other than losing the lease (database errors, timeouts).
    failures: int = 0
    last_error: str | None = None
    _renewed: float = field(default_factory=time.monotonic)  # time.monotonic() of the last success
    _lost: str | None = None
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def lost(self) -> str | None:
        """Why the lease is lost, or None while it is held (as far as this holder knows)."""
        with self._mutex:
            if self._lost is None and time.monotonic() - self._renewed > self.stale_after:
                self._lost = (f"not renewed for more than {self.stale_after:g}s ({self.failures} renewal(s) failed"
                              + (f", last: {self.last_error}" if self.last_error else "") + ")")
            return self._lost

    def check(self) -> None:
        """Raise LeaseLost if the lease is lost."""
        reason = self.lost
        if reason is not None:
            raise LeaseLost(self.incident_id, self.holder, self.generation, reason)

    def mark_lost(self, reason: str) -> None:
        with self._mutex:
            self._lost = self._lost or reason

    def renew(self) -> int:
        """Renew in the database; returns the generation, or raises LeaseLost (for good) or the
        database's error (counted; the lease is lost once that has lasted past the stale time)."""
        self.check()
        try:
            generation = renew(self.incident_id, self.holder, self.generation)
        except LeaseLost as exc:
            self.mark_lost(exc.reason)
            raise
        except Exception as exc:
            with self._mutex:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.check()
            raise
        with self._mutex:
            if self._lost is None:
                self._renewed = time.monotonic()
        return generation

    def fence(self) -> Callable[[Session], None]:
        return fence(self.incident_id, self.holder, self.generation)


@contextmanager
def held(incident_id: str, holder: str, *, every: float = RENEW_SECONDS,
         stale_after: float = STALE_AFTER_SECONDS, acquired: tuple[int, float] | None = None) -> Iterator[Lease]:
    """Hold the lock for the body's duration, renewing it in the background (also while paused).
    `acquired`: the holder has just acquired it, (generation, time.monotonic() before it asked), so
    it is not taken again (one write transaction less at every alert-started run's start); the lease
    counts as renewed at that earlier time, never later than the database's record of it.

    Yields the Lease: the body checks `lease.lost` before it starts anything and writes its
    intents under `lease.fence()`. A renewal that fails is logged and counted, not swallowed;
    once the lease is lost, renewing stops (the body finds out from `lease.lost`)."""
    if acquired is None:
        asked = time.monotonic()
        acquired = (acquire(incident_id, holder, stale_after=stale_after), asked)
    lease = Lease(incident_id, holder, acquired[0], stale_after, _renewed=acquired[1])

    def renewal_failed(exc: Exception) -> bool:
        if isinstance(exc, LeaseLost):
            _log.error("%s", exc)
            return True  # lost for good: stop renewing
        _log.warning("run lock of %s (flow run %s, generation %s): renewal %d failed: %s: %s", incident_id, holder,
                     lease.generation, lease.failures, type(exc).__name__, exc)
        return False

    try:
        with repeating(lease.renew, every, f"run-lock-{incident_id}", now=False, on_error=renewal_failed):
            yield lease
    finally:
        release(incident_id, holder, lease.generation)
