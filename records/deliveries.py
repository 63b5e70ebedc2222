"""Delivery records: one row per channel tried for a page.

A page's idempotency key is (incident, step, contact, cycle, tier) — `page_key` —
and each channel tried for it has its own row keyed `<page_key>:ch<index>`. A
page with any delivered row is never sent again, whichever retry or resume asks.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from records.db import session_scope
from records.models import Notification, utcnow


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


def finish_attempt(key: str, *, delivered: bool, error: str | None) -> Notification:
    with session_scope() as session:
        row = session.scalars(select(Notification).where(Notification.idempotency_key == key).with_for_update()).one()
        row.status = "delivered" if delivered else "failed"
        row.error = error
        if delivered:
            row.sent_at = utcnow()
        else:  # an acknowledgement that arrived while this send was under way does not apply to it
            row.acknowledged_at = row.acknowledged_by = None
        return row
