"""Acknowledgements and escalation state, stored beside the incident record.

An acknowledgement row is written for every acknowledgement, including repeats
(`effective` is true only for the first one, the one that stopped escalation).
Escalation tiers are recorded as they are paged, so a resumed run knows which
tiers it already paged and when, and continues from there.

What acknowledging means (validation, the status change, the timeline) is
notifications.acknowledgement.service; this module only stores it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from records.db import session_scope
from records.incidents import IncidentNotFound
from records.models import Base, Incident, Notification, utcnow

#: How an acknowledgement can arrive (issue 3 §5).
ACK_PATHS = ("ui", "link", "cli", "monitor")


class Acknowledgement(Base):
    __tablename__ = "acknowledgements"
    __table_args__ = (Index("ix_acknowledgements_incident", "incident_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    by: Mapped[str] = mapped_column(String(120))
    via: Mapped[str] = mapped_column(String(20))
    contact_id: Mapped[str | None] = mapped_column(String(120))
    comment: Mapped[str | None] = mapped_column(Text)
    effective: Mapped[bool] = mapped_column(default=False)  # the first one; it stopped escalation
    at: Mapped[datetime] = mapped_column(default=utcnow)


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

    #: True for the first acknowledgement of the incident, the one that stops escalation.
    effective: bool
    #: When not effective: who acknowledged first, and how.
    first_by: str | None
    first_via: str | None
    #: The incident's status when the acknowledgement was stored.
    incident_status: str


def record_acknowledgement(incident_id: str, *, by: str, via: str, contact_id: str | None, comment: str | None,
                           at: datetime) -> RecordedAcknowledgement:
    """Store an acknowledgement; the first one also marks the incident's pages so far as acknowledged.

    Raises records.incidents.IncidentNotFound (nothing is stored) for an unknown incident.
    """
    with session_scope() as session:
        # Locking the incident row serialises concurrent acknowledgements (FOR UPDATE on
        # PostgreSQL; SQLite's BEGIN IMMEDIATE serialises every writer), so exactly one is first.
        incident = session.scalars(select(Incident).where(Incident.id == incident_id).with_for_update()).first()
        if incident is None:
            raise IncidentNotFound(f"no incident {incident_id!r}")
        earlier = session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id)
                                  .order_by(Acknowledgement.id).limit(1)).first()
        session.add(Acknowledgement(incident_id=incident_id, by=by, via=via, contact_id=contact_id, comment=comment,
                                    effective=earlier is None, at=at))
        if earlier is None:
            session.execute(update(Notification)
                            # "sending": the page is being answered right now; a failure clears it again.
                            .where(Notification.incident_id == incident_id,
                                   Notification.status.in_(("delivered", "sending")),
                                   Notification.acknowledged_at.is_(None))
                            .values(acknowledged_at=at, acknowledged_by=by))
        first_by, first_via = (earlier.by, earlier.via) if earlier else (None, None)
        return RecordedAcknowledgement(effective=earlier is None, first_by=first_by, first_via=first_via,
                                       incident_status=incident.status)


def first_acknowledgement(incident_id: str) -> Acknowledgement | None:
    with session_scope() as session:
        return session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id)
                               .order_by(Acknowledgement.id).limit(1)).first()


def list_acknowledgements(incident_id: str) -> list[Acknowledgement]:
    with session_scope() as session:
        return list(session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id)
                                    .order_by(Acknowledgement.id)))


def paged_tiers(incident_id: str, step_id: str, step_key: str | None = None) -> list[EscalationTier]:
    """The tiers paged for this step (of every run), or only under `step_key` (one run's escalation)."""
    conditions = [EscalationTier.incident_id == incident_id, EscalationTier.step_id == step_id]
    if step_key is not None:
        conditions.append(EscalationTier.step_key == step_key)
    with session_scope() as session:
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
