"""Delivery records: one row per (incident, step, contact, channel) idempotency key.

A row marked delivered is never sent again, whichever retry or resume asks."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from records.db import session_scope
from records.models import Notification, utcnow


def begin_attempt(*, key: str, incident_id: str, step_id: str, contact: str, role: str | None,
                  channel: str, title: str, body: str, drill: bool) -> Notification:
    """Mark the send as under way and count the attempt; returns the row (check .status)."""
    for _ in range(2):
        try:
            with session_scope() as session:
                row = session.scalars(select(Notification).where(Notification.idempotency_key == key)
                                      .with_for_update()).first()
                if row is None:
                    row = Notification(idempotency_key=key, incident_id=incident_id, step_id=step_id, contact=contact,
                                       role=role, channel=channel, title=title, body=body, drill=drill,
                                       status="sending", attempts=0, created_at=utcnow())
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


def finish_attempt(key: str, *, delivered: bool, error: str | None) -> Notification:
    with session_scope() as session:
        row = session.scalars(select(Notification).where(Notification.idempotency_key == key).with_for_update()).one()
        row.status = "delivered" if delivered else "failed"
        row.error = error
        if delivered:
            row.sent_at = utcnow()
        return row
