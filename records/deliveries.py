"""Delivery records: one row per channel tried for a page.

A page's idempotency key is (incident, step, contact, cycle, tier) — `page_key` —
and each channel tried for it has its own row keyed `<page_key>:ch<index>`. A
page with any delivered row is never sent again, whichever retry or resume asks.

That row is the summary of its channel (status, count of tries, last error). Every
try is also a record of its own, a `delivery_attempts` row (append-only, migration
0006), written in the same transaction that updates the summary
(notifications.delivery.send_and_record): when, which page and contact, which
channel (redacted), the try's number, its outcome and its error (redacted too).

A try cut off before its outcome is recorded (its process killed mid-send) leaves the summary row
`sending`. Reconcile, judging the run dead, records the cut-off try as an attempt of its own, outcome
`interrupted` (record_cut_off_tries); so does the next try of that channel (a task retry, a flow retry,
a resumed run) if reconcile has not, before it counts itself. Either way once, so every try has its row.
Whoever sends that page again sends the same text (`unfinished_text`): the cut-off try may have arrived, so
the record then holds the one text a contact may have received twice, not a second one.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from records.db import read_scope, session_scope
from records.models import Base, Notification, utcnow


class DeliveryAttempt(Base):
    """One try to deliver one page over one channel."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_incident", "incident_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id"))
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    page_key: Mapped[str | None] = mapped_column(String(300))
    contact: Mapped[str] = mapped_column(String(120))
    channel: Mapped[str] = mapped_column(String(300))  # redacted, as on the summary row
    channel_index: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer)  # 1, 2, … per channel row, as its `attempts` counts them
    outcome: Mapped[str] = mapped_column(String(20))  # delivered | failed | interrupted
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    # An interrupted try's end went unrecorded: this is when it was found unfinished, an upper bound.
    finished_at: Mapped[datetime]


#: The error of an interrupted try: nothing is known of how it ended, so the message may have arrived.
INTERRUPTED = ("no outcome was recorded: the process ended (or the step was stopped) during this try, so whether "
               "the message arrived is unknown; recorded when it was found unfinished (by reconcile or the next try)")


def delivered_page(page_key: str) -> Notification | None:
    """The delivered row of this page, if any channel delivered it."""
    with read_scope() as session:
        return session.scalars(select(Notification).where(Notification.page_key == page_key,
                                                          Notification.status == "delivered").limit(1)).first()


def unfinished_text(page_key: str) -> tuple[str, str, datetime] | None:
    """The title, body and start of a try of this page whose outcome was never recorded (its channel row left
    `sending` by a process that ended mid-send), if any: that message may have arrived."""
    with read_scope() as session:
        row = session.scalars(select(Notification).where(Notification.page_key == page_key,
                                                          Notification.status == "sending",
                                                          Notification.attempts > 0)
                              .order_by(Notification.channel_index).limit(1)).first()
        if row is None:
            return None
        return row.title, row.body, row.attempt_started_at or row.created_at


def begin_attempt(*, key: str, incident_id: str, step_id: str, contact: str, role: str | None,
                  channel: str, title: str, body: str, drill: bool, page_key: str | None = None, cycle: int = 0,
                  tier: int = 1, channel_index: int = 0, event: str | None = None,
                  locale: str | None = None) -> Notification:
    """Mark the send as under way and count the attempt; returns the row (check .status)."""
    for _ in range(2):
        try:
            with session_scope() as session:
                row = session.scalars(select(Notification).where(Notification.idempotency_key == key)
                                      .with_for_update()).first()
                if row is None:
                    row = Notification(idempotency_key=key, incident_id=incident_id, step_id=step_id, contact=contact,
                                       role=role, channel=channel, title=title, body=body, drill=drill,
                                       status="sending", attempts=0, created_at=utcnow(), page_key=page_key,
                                       cycle=cycle, tier=tier, channel_index=channel_index, event=event,
                                       locale=locale)
                    session.add(row)
                if row.status == "delivered":
                    return row
                now = utcnow()
                if row.status == "sending" and row.attempts > 0:
                    _record_interrupted(session, row, now)
                row.status = "sending"
                row.attempts += 1
                row.attempt_started_at = now
                row.title, row.body, row.channel = title, body, channel
                session.flush()
                return row
        except IntegrityError:
            continue  # a concurrent first attempt inserted it; take the row it made
    raise RuntimeError(f"could not claim notification {key}")


def record_cut_off_tries(incident_id: str, *, started_before: datetime) -> int:
    """Record as `interrupted` each try of this incident left `sending` that began before `started_before`
    (longer ago than any send can take, so nobody is still making it): reconcile does this for a run it
    judges dead, so the record shows those tries even if the run is never resumed. Returns how many."""
    with session_scope() as session:
        rows = session.scalars(select(Notification).where(Notification.incident_id == incident_id,
                                                          Notification.status == "sending",
                                                          Notification.attempts > 0).with_for_update()).all()
        found_at = utcnow()
        cut_off = [row for row in rows if (row.attempt_started_at or row.created_at or found_at) < started_before]
        return sum(_record_interrupted(session, row, found_at) for row in cut_off)


def _record_interrupted(session: Session, row: Notification, found_at: datetime) -> bool:
    """The try that left `row` sending never finished: its own attempt row, before the next try counts.
    Once per try: reconcile may have recorded it already (record_cut_off_tries)."""
    recorded = session.scalars(select(DeliveryAttempt.id).where(DeliveryAttempt.notification_id == row.id,
                                                                DeliveryAttempt.attempt == row.attempts)).first()
    if recorded is not None:
        return False
    # Rows claimed before migration 0009 have no claim time; their first claim is the nearest known.
    started = row.attempt_started_at or row.created_at or found_at
    # min: the claim was stamped by another process's clock, which may run ahead of this one.
    session.add(DeliveryAttempt(notification_id=row.id, incident_id=row.incident_id, page_key=row.page_key,
                                contact=row.contact, channel=row.channel, channel_index=row.channel_index,
                                attempt=row.attempts, outcome="interrupted", error=INTERRUPTED,
                                started_at=min(started, found_at), finished_at=found_at))
    return True


def finish_attempt(key: str, *, delivered: bool, error: str | None,
                   started_at: datetime | None = None) -> Notification:
    """Record how one try ended: its own delivery_attempts row, and the channel's summary row."""
    with session_scope() as session:
        row = session.scalars(select(Notification).where(Notification.idempotency_key == key).with_for_update()).one()
        row.status = "delivered" if delivered else "failed"
        row.error = error
        now = utcnow()
        if delivered:
            row.sent_at = now
        else:  # an acknowledgement that arrived while this send was under way does not apply to it
            row.acknowledged_at = row.acknowledged_by = None
        session.add(DeliveryAttempt(notification_id=row.id, incident_id=row.incident_id, page_key=row.page_key,
                                    contact=row.contact, channel=row.channel, channel_index=row.channel_index,
                                    attempt=row.attempts, outcome=row.status, error=error,
                                    started_at=started_at or row.attempt_started_at or now, finished_at=now))
        return row


def attempts_of(incident_id: str) -> list[DeliveryAttempt]:
    """Every recorded delivery try of an incident, in the order they ended."""
    with read_scope() as session:
        return list(session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.incident_id == incident_id)
                                    .order_by(DeliveryAttempt.id)))
