"""Acknowledgements and escalation state, stored beside the incident record.

One acknowledgement row per acknowledger and incident (`ack_key`: the link's contact, or
`<via>:<by>`): a repeat by the same acknowledger renews its `last_at` and may add a bounded
note, and never adds a row. `effective` says the acknowledgement stopped something: it was
the incident's first, or it acknowledged pages nobody had acknowledged yet. Acknowledgement is
per page: an escalating page stops on an acknowledgement given (or renewed) after the page was
first sent, or on a monitor's resolve received after it (escalation_stop); an older
acknowledgement of the incident never stops a newer page.
Escalation tiers are recorded as they are paged, so a resumed run knows which
tiers it already paged and when, and continues from there.

What acknowledging means (validation, the status change, the timeline) is
notifications.acknowledgement.service; this module only stores it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, and_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from records.alert_ingest import Alert
from records.db import read_scope, session_scope
from records.incidents import IncidentNotFound
from records.models import Base, Incident, IncidentStatus, Notification, TimelineEvent, utcnow

#: How an acknowledgement can arrive (issue 3 §5).
ACK_PATHS = ("ui", "link", "cli", "monitor", "api")
#: A later comment of the same acknowledger is kept as a note: at most this many, this long each.
MAX_NOTES = 5
NOTE_CHARS = 1000
#: What ends an approval gate's wait, on the timeline (tasks.approval): its approvers' page stops then.
GATE_ENDS = ("approved", "rejected", "approval-timed-out", "approval-withdrawn")


class Acknowledgement(Base):
    __tablename__ = "acknowledgements"
    __table_args__ = (Index("ix_acknowledgements_incident", "incident_id"),
                      UniqueConstraint("incident_id", "ack_key", name="uq_acknowledgements_ack_key"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    by: Mapped[str] = mapped_column(String(120))
    via: Mapped[str] = mapped_column(String(20))
    contact_id: Mapped[str | None] = mapped_column(String(120))
    comment: Mapped[str | None] = mapped_column(Text)
    effective: Mapped[bool] = mapped_column(default=False)  # it stopped something (see the module docstring)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    #: One key per acknowledger and incident: `contact:<id>` (a link's contact), else `<via>:<by>`.
    #: NULL on rows written before revision 0007 (one row per acknowledgement then).
    ack_key: Mapped[str | None] = mapped_column(String(200))
    #: When this acknowledger last acknowledged (a repeat renews it: it acknowledges pages sent since).
    last_at: Mapped[datetime | None]
    #: Later comments of the same acknowledger: [{"at": iso, "comment": text}], at most MAX_NOTES.
    notes: Mapped[list[Any] | None] = mapped_column(default=list)


class EscalationTier(Base):
    """One tier of one notify step's escalation, recorded when its pages go out."""

    __tablename__ = "escalation_tiers"
    __table_args__ = (UniqueConstraint("incident_id", "step_key", "cycle", "tier", name="uq_escalation_tiers_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    step_id: Mapped[str] = mapped_column(String(100))
    #: The notify step's idempotency key (tasks.base.StepContext.idempotency_key: incident, runbook,
    #: step, run generation): a retry or resume of the same run continues these tiers; a new run's
    #: escalation starts its own.
    step_key: Mapped[str] = mapped_column(String(300))
    policy: Mapped[str | None] = mapped_column(String(100))
    cycle: Mapped[int] = mapped_column(Integer, default=0)  # 0 = first pass, then one per policy repeat
    tier: Mapped[int] = mapped_column(Integer, default=1)  # 1 = the step's own audience
    roles: Mapped[str] = mapped_column(Text)
    paged_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class RecordedAcknowledgement:
    """What storing one acknowledgement found."""

    #: True if it stopped something: the incident's first acknowledgement, or one that acknowledged pages
    #: nobody had acknowledged yet (pages sent since the last acknowledgement).
    effective: bool
    #: When not effective: who acknowledged first, and how.
    first_by: str | None
    first_via: str | None
    #: The incident's status when the acknowledgement was stored.
    incident_status: str
    #: True when this acknowledger had acknowledged the incident before (no new row was written).
    repeat: bool = False
    #: The comment was kept as a note of the earlier acknowledgement (a repeat's comment).
    noted: bool = False
    #: The comment was not kept: the acknowledgement already has MAX_NOTES notes.
    note_dropped: bool = False
    #: Pages this acknowledgement marked acknowledged.
    pages: int = 0


def ack_key(*, by: str, via: str, contact_id: str | None) -> str:
    """Who acknowledges, as one key per incident: a link's contact, else the path and the name given."""
    return f"contact:{contact_id}" if contact_id else f"{via}:{by}"[:200]


def record_acknowledgement(incident_id: str, *, by: str, via: str, contact_id: str | None, comment: str | None,
                           at: datetime,
                           then: Callable[[Session, Incident, RecordedAcknowledgement], Any] | None = None,
                           ) -> RecordedAcknowledgement:
    """Store an acknowledgement and mark the incident's pages not yet acknowledged as acknowledged.

    A repeat by the same acknowledger (ack_key) writes no new row: it renews `last_at` and keeps a
    comment as a note (at most MAX_NOTES). `then(session, incident, recorded)` runs in the SAME
    transaction (the status change and the timeline event of notifications.acknowledgement.service):
    if it raises, nothing of the acknowledgement is stored.

    Raises records.incidents.IncidentNotFound (nothing is stored) for an unknown incident.
    """
    key = ack_key(by=by, via=via, contact_id=contact_id)
    with session_scope() as session:
        # Locking the incident row serialises concurrent acknowledgements (FOR UPDATE on
        # PostgreSQL; SQLite's BEGIN IMMEDIATE serialises every writer), so exactly one is first.
        incident = session.scalars(select(Incident).where(Incident.id == incident_id).with_for_update()).first()
        if incident is None:
            raise IncidentNotFound(f"no incident {incident_id!r}")
        earlier = session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id)
                                  .order_by(Acknowledgement.id).limit(1)).first()
        mine = session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id,
                                                             Acknowledgement.ack_key == key)).first()
        pages = cast(CursorResult[Any], session.execute(update(Notification)
                                # "sending": the page is being answered right now; a failure clears it again.
                                .where(Notification.incident_id == incident_id,
                                       Notification.status.in_(("delivered", "sending")),
                                       Notification.acknowledged_at.is_(None))
                                .values(acknowledged_at=at, acknowledged_by=by))).rowcount or 0
        effective = earlier is None or pages > 0
        noted = dropped = False
        if mine is None:
            session.add(Acknowledgement(incident_id=incident_id, by=by, via=via, contact_id=contact_id,
                                        comment=comment, effective=effective, at=at, ack_key=key, last_at=at,
                                        notes=[]))
        else:
            if effective:
                mine.last_at = at  # it acknowledges the pages sent since: newer escalations stop on it
            if comment:
                notes = list(mine.notes or [])
                if len(notes) < MAX_NOTES:
                    mine.notes = notes + [{"at": at.isoformat(), "comment": comment[:NOTE_CHARS]}]
                    noted = True
                else:
                    dropped = True
        first_by, first_via = (earlier.by, earlier.via) if earlier else (None, None)
        recorded = RecordedAcknowledgement(effective=effective, first_by=first_by, first_via=first_via,
                                           incident_status=incident.status, repeat=mine is not None, noted=noted,
                                           note_dropped=dropped, pages=pages)
        session.flush()
        if then is not None:
            then(session, incident, recorded)
        return recorded


@dataclass(frozen=True)
class EscalationStop:
    """Why an escalating page stops before its next tier."""

    kind: str  # acknowledged | monitor-resolved | incident-resolved | incident-closed | gate-decided
    by: str
    via: str
    summary: str


def escalation_stop(incident_id: str, since: datetime, *, gate_step: str | None = None,
                    flow_run_id: str | None = None) -> EscalationStop | None:
    """Whether a page first sent at `since` should stop escalating, and why (one transaction):
    an acknowledgement given or renewed since then; a monitor's resolve received since then; the
    incident resolved or closed; or, for an approval gate's page (`gate_step`, in `flow_run_id`),
    the gate decided, timed out or withdrawn."""
    with session_scope() as session:
        ack = session.scalars(select(Acknowledgement).where(
            Acknowledgement.incident_id == incident_id,
            or_(Acknowledgement.last_at >= since,
                and_(Acknowledgement.last_at.is_(None), Acknowledgement.at >= since)))
            .order_by(Acknowledgement.id).limit(1)).first()
        if ack is not None:
            return EscalationStop("acknowledged", ack.by, ack.via, f"acknowledged by {ack.by} via {ack.via}")
        resolve = session.scalars(select(Alert).where(Alert.incident_id == incident_id, Alert.status == "resolved",
                                                      Alert.received_at >= since)
                                  .order_by(Alert.id).limit(1)).first()
        if resolve is not None:
            return EscalationStop("monitor-resolved", f"monitor:{resolve.source}", "monitor",
                                  f"monitor resolved ({resolve.source}: {resolve.summary[:200]})")
        status = session.scalar(select(Incident.status).where(Incident.id == incident_id))
        if status in (IncidentStatus.resolved.value, IncidentStatus.closed.value):
            return EscalationStop(f"incident-{status}", f"incident {status}", "status", f"incident {status}")
        if gate_step is not None:
            ended = session.scalars(select(TimelineEvent).where(
                TimelineEvent.incident_id == incident_id, TimelineEvent.step_id == gate_step,
                TimelineEvent.status.in_(GATE_ENDS), TimelineEvent.flow_run_id == flow_run_id,
                TimelineEvent.at >= since).order_by(TimelineEvent.seq).limit(1)).first()
            if ended is not None:
                return EscalationStop("gate-decided", ended.actor, "approval",
                                      f"the gate {gate_step!r} ended: {ended.status}")
        return None


def first_acknowledgement(incident_id: str) -> Acknowledgement | None:
    with read_scope() as session:
        return session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id)
                               .order_by(Acknowledgement.id).limit(1)).first()


def list_acknowledgements(incident_id: str) -> list[Acknowledgement]:
    with read_scope() as session:
        return list(session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id)
                                    .order_by(Acknowledgement.id)))


def paged_tiers(incident_id: str, step_id: str, step_key: str | None = None) -> list[EscalationTier]:
    """The tiers paged for this step (of every run), or only under `step_key` (one run's escalation)."""
    conditions = [EscalationTier.incident_id == incident_id, EscalationTier.step_id == step_id]
    if step_key is not None:
        conditions.append(EscalationTier.step_key == step_key)
    with read_scope() as session:
        return list(session.scalars(select(EscalationTier).where(*conditions)
                                    .order_by(EscalationTier.id)))


def record_tier(*, incident_id: str, step_id: str, policy: str | None, cycle: int, tier: int, roles: list[str],
                delivered: int, failed: int, step_key: str | None = None) -> EscalationTier:
    """Record that a tier was paged; a tier recorded earlier under the same step_key (a retry or
    resume of the same run) keeps its first paged_at."""
    step_key = step_key or f"{incident_id}:{step_id}"
    for _ in range(2):
        try:
            with session_scope() as session:
                row = session.scalars(select(EscalationTier).where(
                    EscalationTier.incident_id == incident_id, EscalationTier.step_key == step_key,
                    EscalationTier.cycle == cycle, EscalationTier.tier == tier).with_for_update()).first()
                if row is None:
                    row = EscalationTier(incident_id=incident_id, step_id=step_id, step_key=step_key, policy=policy,
                                         cycle=cycle, tier=tier, roles=", ".join(roles), paged_at=utcnow())
                    session.add(row)
                row.delivered, row.failed = delivered, failed
                session.flush()
                return row
        except IntegrityError:
            continue
    raise RuntimeError(f"could not record escalation tier {tier} of {incident_id}:{step_id}")
