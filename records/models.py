"""SQLAlchemy 2 typed models of the incident record.

Timestamps are stored in UTC (naive UTC on SQLite, timestamptz on PostgreSQL via
the UTCDateTime type) so every backend reads back the same instants.
"""
from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops tzinfo otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class IncidentStatus(str, enum.Enum):
    triggered = "triggered"
    acknowledged = "acknowledged"
    mitigated = "mitigated"
    resolved = "resolved"
    closed = "closed"


#: Lifecycle order; a transition may skip ahead but never go back.
STATUS_ORDER: list[IncidentStatus] = list(IncidentStatus)


class RunState(str, enum.Enum):
    """What the runbook run did, separate from where the incident is in its lifecycle."""

    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    crashed = "crashed"
    cancelled = "cancelled"


#: Run states after which no run drives the incident: if it is still open, it needs a person.
ATTENTION_RUN_STATES = frozenset({RunState.completed.value, RunState.failed.value, RunState.crashed.value,
                                  RunState.cancelled.value})


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # INC-2026-0001
    #: Unique across installations and databases (incident numbers restart with each records
    #: database): what keys sent to other systems carry, so one installation's
    #: `Idempotency-Key` can never find another's answer.
    uid: Mapped[str] = mapped_column(String(32), unique=True, default=lambda: uuid.uuid4().hex)
    runbook_id: Mapped[str] = mapped_column(String(100))
    runbook_version: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(300))
    level: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), default=IncidentStatus.triggered.value)
    run_state: Mapped[str] = mapped_column(String(20), default=RunState.pending.value)
    run_error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20))  # operator | alert | drill | cli
    drill: Mapped[bool] = mapped_column(default=False)
    summary: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    triggered_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    mitigated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    run_ended_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]  # touched while a run is alive; see flows.reconcile
    #: The contact id of the incident commander once command was handed over (migration 0008);
    #: None: whoever the level's commander role has on duty (notifications.level_routing).
    commander: Mapped[str | None] = mapped_column(String(120))

    events: Mapped[list[TimelineEvent]] = relationship(back_populates="incident", order_by="TimelineEvent.seq")
    notifications: Mapped[list[Notification]] = relationship(back_populates="incident", order_by="Notification.id")

    @property
    def attention_reason(self) -> str | None:
        """Why this incident needs a person now, or None. Derived, not stored: the incident is not
        resolved or closed, and no runbook run is driving it any more (its run failed, crashed or was
        cancelled, or completed with the incident still open). The one definition the CLI, the
        incidents API, the report and the engine's final state message all show."""
        if self.status in (IncidentStatus.resolved.value, IncidentStatus.closed.value):
            return None
        if self.run_state not in ATTENTION_RUN_STATES:
            return None  # pending (a run is on its way) or running: something is still working on it
        ended = "completed" if self.run_state == RunState.completed.value else self.run_state
        reason = f"the runbook run {ended} but the incident is still {self.status}"
        if self.run_error:
            first = " ".join(self.run_error.split())
            reason += f" ({first if len(first) <= 200 else first[:199] + '…'})"
        return reason

    @property
    def needs_attention(self) -> bool:
        return self.attention_reason is not None


class EventPhase(str, enum.Enum):
    intent = "intent"
    outcome = "outcome"
    note = "note"


class TimelineEvent(Base):
    """One line of the incident timeline. Append-only: database triggers refuse UPDATE
    and DELETE (migration 0002), and each event is sealed into the incident's hash
    chain (records.audit), so a change made behind the triggers' back still shows."""

    __tablename__ = "timeline_events"
    __table_args__ = (
        UniqueConstraint("incident_id", "seq", name="uq_timeline_events_incident_seq"),
        Index("ix_timeline_events_step", "incident_id", "step_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    seq: Mapped[int] = mapped_column(Integer)  # per-incident order
    step_id: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str | None] = mapped_column(String(60))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    phase: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))  # started|succeeded|failed|skipped|reused|info|...
    actor: Mapped[str] = mapped_column(String(120))
    summary: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(300))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    task_run_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    # sha256(prev_hash + canonical JSON of the event); see records.audit.
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    incident: Mapped[Incident] = relationship(back_populates="events")


class Notification(Base):
    """One delivery attempt-series to one contact channel."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_notifications_idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    step_id: Mapped[str] = mapped_column(String(100))
    contact: Mapped[str] = mapped_column(String(120))
    role: Mapped[str | None] = mapped_column(String(60))
    channel: Mapped[str] = mapped_column(String(300))  # redacted Apprise URL
    idempotency_key: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20))  # sending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    drill: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    # Escalation and rendering (migration 0003). page_key is the idempotency key of the page,
    # (incident, step, contact, cycle, tier), shared by the rows of each channel it tried.
    page_key: Mapped[str | None] = mapped_column(String(300), index=True)
    cycle: Mapped[int] = mapped_column(Integer, default=0)
    tier: Mapped[int] = mapped_column(Integer, default=1)
    channel_index: Mapped[int] = mapped_column(Integer, default=0)
    event: Mapped[str | None] = mapped_column(String(30))  # triggered | escalated | status_update | …
    locale: Mapped[str | None] = mapped_column(String(5))
    acknowledged_by: Mapped[str | None] = mapped_column(String(120))
    # When the current try was claimed (migration 0009): a try whose process ends mid-send leaves only
    # this, and the next try records it as an interrupted delivery attempt that began then.
    attempt_started_at: Mapped[datetime | None]

    incident: Mapped[Incident] = relationship(back_populates="notifications")


class Sequence(Base):
    """Named counters (incident numbers per year) incremented atomically on every backend."""

    __tablename__ = "sequences"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)
