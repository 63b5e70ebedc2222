"""Delivery records: one row per channel tried for a page.

A page's idempotency key is (incident, step, contact, cycle, tier) — `page_key` —
and each channel tried for it has its own row keyed `<page_key>:ch<index>`. A
page with any delivered row is never sent again, whichever retry or resume asks.

That row is the summary of its channel (status, count of tries, last error). Every
try is also a record of its own, a `delivery_attempts` row (append-only, migration
0006), written in the same transaction that updates the summary
(notifications.delivery.send_and_record): when, which page and contact, which
channel (redacted), the try's number, its outcome and its error (redacted too).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from records.db import session_scope
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
    outcome: Mapped[str] = mapped_column(String(20))  # delivered | failed
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]


def delivered_page(page_key: str) -> Notification | None:
    """The delivered row of this page, if any channel delivered it."""
    with session_scope() as session:
        return session.scalars(select(Notification).where(Notification.page_key == page_key,
                                                          Notification.status == "delivered").limit(1)).first()


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
                row.status = "sending"
                row.attempts += 1
                row.title, row.body, row.channel = title, body, channel
                session.flush()
                return row
        except IntegrityError:
            continue  # a concurrent first attempt inserted it; take the row it made
    raise RuntimeError(f"could not claim notification {key}")


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
                                    started_at=started_at or now, finished_at=now))
        return row


def attempts_of(incident_id: str) -> list[DeliveryAttempt]:
    """Every recorded delivery try of an incident, in the order they ended."""
    with session_scope() as session:
        return list(session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.incident_id == incident_id)
                                    .order_by(DeliveryAttempt.id)))
