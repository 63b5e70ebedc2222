"""What operators did to incidents by hand: one row per lifecycle action (acknowledge, resolve,
close, note, level change, handover, re-run, run cancellation), beside the timeline event that
tells the story.

The row says who (a contact id from the contacts directory), how (`via`: cli | ui | api) and
when; `request_key` makes an action asked for twice act once: a retried Prefect flow run of a
lifecycle deployment, or an API client resending with the same `Idempotency-Key`, gets the first
answer back. What each action means is flows.operator_actions; this module only stores it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from records.db import session_scope
from records.models import Base, utcnow

#: The lifecycle actions an operator can take.
ACTIONS = ("acknowledge", "resolve", "close", "note", "level", "handover", "rerun", "resume", "cancel")
#: How an operator's action can arrive.
VIA = ("cli", "ui", "api")


class OperatorAction(Base):
    __tablename__ = "operator_actions"
    __table_args__ = (UniqueConstraint("request_key", name="uq_operator_actions_request_key"),
                      Index("ix_operator_actions_incident", "incident_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    action: Mapped[str] = mapped_column(String(20))
    by: Mapped[str] = mapped_column(String(120))  # contact id
    via: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)
    #: What the action did (the service's result, JSON), returned again for a repeated request_key.
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    request_key: Mapped[str | None] = mapped_column(String(200))


def done_before(request_key: str | None) -> OperatorAction | None:
    """The action already recorded under `request_key`, if any."""
    if not request_key:
        return None
    with session_scope() as session:
        return session.scalars(select(OperatorAction).where(OperatorAction.request_key == request_key)).first()


def record(incident_id: str, *, action: str, by: str, via: str, reason: str | None, result: dict[str, Any],
           request_key: str | None = None, at: datetime | None = None) -> OperatorAction:
    """Store one action; if another request with the same key was stored meanwhile, that one is returned."""
    if action not in ACTIONS:
        raise ValueError(f"unknown operator action {action!r}")
    if via not in VIA:
        raise ValueError(f"unknown operator path {via!r}")
    try:
        with session_scope() as session:
            row = OperatorAction(incident_id=incident_id, action=action, by=by, via=via, at=at or utcnow(),
                                 reason=reason, result=result, request_key=request_key)
            session.add(row)
            session.flush()
            return row
    except IntegrityError:
        existing = done_before(request_key)
        if existing is None:
            raise
        return existing


def of_incident(incident_id: str) -> list[OperatorAction]:
    with session_scope() as session:
        return list(session.scalars(select(OperatorAction).where(OperatorAction.incident_id == incident_id)
                                    .order_by(OperatorAction.id)))
