"""One runbook run at a time per incident, decided by the database.

A Prefect deployment concurrency limit is released while a run is paused (for
an approval), so it cannot stop a second run of the same incident from
starting then. This lock is a row per incident: the holder renews it while it
lives (paused or not); another run finds it held and refuses to start; a holder
that died (no renewal for `stale_after` seconds) loses it to the next run.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from firebreak.background import repeating
from records.db import session_scope
from records.incidents import IncidentNotFound
from records.models import Base, Incident, utcnow

RENEW_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0


class IncidentRunLock(Base):
    __tablename__ = "incident_run_locks"

    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))  # the flow run id holding it
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    renewed_at: Mapped[datetime] = mapped_column(default=utcnow)


class IncidentBusy(RuntimeError):
    """Another run of this incident is alive (running or paused)."""

    def __init__(self, incident_id: str, holder: str):
        super().__init__(f"incident {incident_id} already has a runbook run in progress (flow run {holder}, "
                         f"running or paused); a second run does not start")
        self.incident_id = incident_id
        self.holder = holder


def acquire(incident_id: str, holder: str, *, stale_after: float = STALE_AFTER_SECONDS) -> None:
    """Take the incident's lock for `holder`, or raise IncidentBusy. Re-entrant for the same holder
    (a flow retry or a resumed run of the same flow run)."""
    now = utcnow()
    with session_scope() as session:
        while True:
            row = session.scalars(select(IncidentRunLock).where(IncidentRunLock.incident_id == incident_id)
                                  .with_for_update()).first()
            if row is None:
                try:
                    with session.begin_nested():
                        session.add(IncidentRunLock(incident_id=incident_id, holder=holder, acquired_at=now,
                                                    renewed_at=now))
                    return
                except IntegrityError:
                    # A concurrent run inserted it (lock and judge that row), or there is no such incident.
                    if session.get(Incident, incident_id) is None:
                        raise IncidentNotFound(f"no incident {incident_id!r}") from None
                    continue
            if row.holder != holder and row.renewed_at > now - timedelta(seconds=stale_after):
                raise IncidentBusy(incident_id, row.holder)
            if row.holder != holder:  # taking over from a holder that died
                row.holder, row.acquired_at = holder, now
            row.renewed_at = now
            return


def renew(incident_id: str, holder: str) -> None:
    with session_scope() as session:
        session.execute(update(IncidentRunLock)
                        .where(IncidentRunLock.incident_id == incident_id, IncidentRunLock.holder == holder)
                        .values(renewed_at=utcnow()))


def release(incident_id: str, holder: str) -> None:
    with session_scope() as session:
        session.execute(delete(IncidentRunLock)
                        .where(IncidentRunLock.incident_id == incident_id, IncidentRunLock.holder == holder))


@contextmanager
def held(incident_id: str, holder: str, *, every: float = RENEW_SECONDS) -> Iterator[None]:
    """Hold the lock for the body's duration, renewing it in the background (also while paused)."""
    acquire(incident_id, holder)
    try:
        with repeating(lambda: renew(incident_id, holder), every, f"run-lock-{incident_id}", now=False):
            yield
    finally:
        release(incident_id, holder)
