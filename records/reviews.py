"""Post-incident reviews: root cause, lessons and action items, entered at closure.

A review is never edited in place: entering it again adds a revision (the
database refuses UPDATE and DELETE, migration 0002), the report shows the
latest, and each revision's digest is noted in the incident's hash-chained
timeline so a review changed behind the triggers' back is caught by
`firebreak audit verify`.
"""
from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, mapped_column

from records import incidents
from records.db import session_scope
from records.models import Base, EventPhase, utcnow


class ActionItem(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text: str = Field(min_length=1, description="what will be done")
    owner: str = Field(min_length=1, description="who is accountable")
    due: date = Field(description="due date (YYYY-MM-DD)")


class ReviewInput(BaseModel):
    """What an operator enters at closure (the `review-incident` UI form and `firebreak review`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    root_cause: str = Field(min_length=1, description="what caused the incident")
    lessons: list[str] = Field(default_factory=list, description="lessons learned")
    action_items: list[ActionItem] = Field(default_factory=list, description="corrective actions, each with owner and due date")
    entered_by: str = Field(min_length=1, max_length=120, description="who enters this review")

    @field_validator("lessons")
    @classmethod
    def _no_blank_lessons(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("a lesson cannot be blank")
        return [item.strip() for item in value]

    def digest(self) -> str:
        document = self.model_dump(mode="json")
        return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()).hexdigest()


class IncidentReview(Base):
    __tablename__ = "incident_reviews"
    __table_args__ = (UniqueConstraint("incident_id", "revision", name="uq_incident_reviews_revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id"))
    revision: Mapped[int] = mapped_column(Integer)
    root_cause: Mapped[str] = mapped_column(Text)
    lessons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    action_items: Mapped[list[Any]] = mapped_column(JSON, default=list)
    entered_by: Mapped[str] = mapped_column(String(120))
    entered_at: Mapped[datetime] = mapped_column(default=utcnow)
    sha256: Mapped[str] = mapped_column(String(64))

    def as_input(self) -> ReviewInput:
        return ReviewInput(root_cause=self.root_cause, lessons=self.lessons, action_items=self.action_items,
                           entered_by=self.entered_by)


def enter_review(incident_id: str, review: ReviewInput) -> IncidentReview:
    """Store a new revision of the incident's review and note it in the timeline, in one transaction."""
    with session_scope() as session:
        incidents._locked(session, incident_id)
        revision = session.execute(select(func.coalesce(func.max(IncidentReview.revision), 0))
                                   .where(IncidentReview.incident_id == incident_id)).scalar_one() + 1
        row = IncidentReview(incident_id=incident_id, revision=revision, root_cause=review.root_cause,
                             lessons=list(review.lessons),
                             action_items=[item.model_dump(mode="json") for item in review.action_items],
                             entered_by=review.entered_by, entered_at=utcnow(), sha256=review.digest())
        session.add(row)
        session.flush()
        incidents._append(session, incident_id, phase=EventPhase.note, status="review", actor=review.entered_by,
                          summary=f"Post-incident review entered (revision {revision}): "
                                  f"{len(review.lessons)} lesson(s), {len(review.action_items)} action item(s)",
                          data={"review_revision": revision, "review_sha256": row.sha256})
        return row


def latest_review(incident_id: str) -> IncidentReview | None:
    with session_scope() as session:
        return session.scalars(select(IncidentReview).where(IncidentReview.incident_id == incident_id)
                               .order_by(IncidentReview.revision.desc()).limit(1)).first()


def all_reviews(incident_id: str) -> list[IncidentReview]:
    with session_scope() as session:
        return list(session.scalars(select(IncidentReview).where(IncidentReview.incident_id == incident_id)
                                    .order_by(IncidentReview.revision)))


def review_mismatches(incident_id: str) -> list[str]:
    """Reviews whose stored content no longer matches the digest sealed into the timeline."""
    sealed = {e.data.get("review_revision"): e.data.get("review_sha256")
              for e in incidents.events(incident_id) if e.status == "review"}
    problems = []
    for row in all_reviews(incident_id):
        actual = row.as_input().digest()
        if sealed.get(row.revision) != actual or row.sha256 != actual:
            problems.append(f"review revision {row.revision} does not match the digest sealed in the timeline")
    for revision in sealed:
        if revision not in {row.revision for row in all_reviews(incident_id)}:
            problems.append(f"review revision {revision} is sealed in the timeline but missing")
    return problems
