"""Acknowledgements and escalation state, stored beside the incident record.

An acknowledgement row is written for every acknowledgement, including repeats
(`effective` is true only for the first one, the one that stopped escalation).
Escalation tiers are recorded as they are paged, so a resumed run knows which
tiers it already paged and when, and continues from there.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from records.db import session_scope
from records.models import Base, utcnow

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
    __table_args__ = (UniqueConstraint("incident_id", "step_id", "cycle", "tier", name="uq_escalation_tiers_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    step_id: Mapped[str] = mapped_column(String(100))
    policy: Mapped[str | None] = mapped_column(String(100))
    cycle: Mapped[int] = mapped_column(Integer, default=0)  # 0 = first pass, then one per policy repeat
    tier: Mapped[int] = mapped_column(Integer, default=1)  # 1 = the step's own audience
    roles: Mapped[str] = mapped_column(Text)
    paged_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)


def first_acknowledgement(incident_id: str) -> Acknowledgement | None:
    with session_scope() as session:
        return session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id)
                               .order_by(Acknowledgement.id).limit(1)).first()


def list_acknowledgements(incident_id: str) -> list[Acknowledgement]:
    with session_scope() as session:
        return list(session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id)
                                    .order_by(Acknowledgement.id)))


def paged_tiers(incident_id: str, step_id: str) -> list[EscalationTier]:
    with session_scope() as session:
        return list(session.scalars(select(EscalationTier)
                                    .where(EscalationTier.incident_id == incident_id, EscalationTier.step_id == step_id)
                                    .order_by(EscalationTier.cycle, EscalationTier.tier)))


def record_tier(*, incident_id: str, step_id: str, policy: str | None, cycle: int, tier: int, roles: list[str],
                delivered: int, failed: int) -> EscalationTier:
    """Record that a tier was paged; a tier recorded earlier (a retry or resume) keeps its first paged_at."""
    for _ in range(2):
        try:
            with session_scope() as session:
                row = session.scalars(select(EscalationTier).where(
                    EscalationTier.incident_id == incident_id, EscalationTier.step_id == step_id,
                    EscalationTier.cycle == cycle, EscalationTier.tier == tier).with_for_update()).first()
                if row is None:
                    row = EscalationTier(incident_id=incident_id, step_id=step_id, policy=policy, cycle=cycle,
                                         tier=tier, roles=", ".join(roles), paged_at=utcnow())
                    session.add(row)
                row.delivered, row.failed = delivered, failed
                session.flush()
                return row
        except IntegrityError:
            continue
    raise RuntimeError(f"could not record escalation tier {tier} of {incident_id}:{step_id}")
