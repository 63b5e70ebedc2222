"""Everything the records database holds about one incident, read in one place.

Tables that other concerns own (alerts, acknowledgements, escalation tiers) are
read when their migrations have run on the database, and their columns with
getattr, so a report works on a database that predates them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect, select

from records import audit
from records.acknowledgements import Acknowledgement, EscalationTier
from records.alert_ingest import Alert
from records.audit import Verification
from records.audit_anchor import variable_name
from records.db import read_scope
from records.deliveries import DeliveryAttempt
from records.incidents import IncidentNotFound
from records.models import Incident, Notification, TimelineEvent
from records.reviews import IncidentReview, review_mismatches


@dataclass
class IncidentRecord:
    incident: Incident
    events: list[TimelineEvent]
    notifications: list[Notification]
    reviews: list[IncidentReview]
    verification: Verification
    review_problems: list[str]
    alerts: list[Any] = field(default_factory=list)
    acknowledgements: list[Any] = field(default_factory=list)
    escalation_tiers: list[Any] = field(default_factory=list)
    #: Every delivery try (records.deliveries.DeliveryAttempt), in the order they ended.
    delivery_attempts: list[Any] = field(default_factory=list)
    #: The incident's global seal number and the Prefect Variable its published heads are anchored in.
    seal_number: int | None = None
    anchor_variable: str = ""

    @property
    def review(self) -> IncidentReview | None:
        return self.reviews[-1] if self.reviews else None


def _optional_rows(session: Any, model: Any, incident_id: str, order: str) -> list[Any]:
    if not inspect(session.connection()).has_table(model.__tablename__):
        return []  # its migration has not run on this database yet
    return list(session.scalars(select(model).where(model.incident_id == incident_id)
                                .order_by(getattr(model, order))))


def load_record(incident_id: str) -> IncidentRecord:
    with read_scope() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise IncidentNotFound(f"no incident {incident_id!r}")
        events = list(session.scalars(select(TimelineEvent).where(TimelineEvent.incident_id == incident_id)
                                      .order_by(TimelineEvent.seq)))
        notifications = list(session.scalars(select(Notification).where(Notification.incident_id == incident_id)
                                             .order_by(Notification.id)))
        reviews = list(session.scalars(select(IncidentReview).where(IncidentReview.incident_id == incident_id)
                                       .order_by(IncidentReview.revision)))
        evidence = audit.load_evidence(session, incident_id)
        alerts = _optional_rows(session, Alert, incident_id, "id")
        acknowledgements = _optional_rows(session, Acknowledgement, incident_id, "id")
        tiers = _optional_rows(session, EscalationTier, incident_id, "id")
        attempts = _optional_rows(session, DeliveryAttempt, incident_id, "id")
    verification = audit.check(evidence, audit.current_key())
    return IncidentRecord(incident, events, notifications, reviews, verification,
                          review_mismatches(incident_id) if reviews else [], alerts, acknowledgements, tiers,
                          attempts, evidence.seal.number if evidence.seal else None,
                          variable_name(incident.uid) if incident.uid else "")


#: Signed acknowledgement links in stored messages are bearer credentials (anyone holding
#: one can acknowledge as that contact); an archive outside the database must not carry them.
_ACK_TOKEN = re.compile(r"(/ack/)[A-Za-z0-9._%~-]+")


def _without_ack_tokens(row: dict[str, Any]) -> dict[str, Any]:
    return {key: _ACK_TOKEN.sub(r"\1[redacted]", value) if isinstance(value, str) else value
            for key, value in row.items()}


def export_document(incident_id: str) -> dict[str, Any]:
    """The complete raw record as JSON-ready data, for archiving outside the database."""
    record = load_record(incident_id)

    def columns(row: Any) -> dict[str, Any]:
        out = {}
        for column in row.__table__.columns:
            value = getattr(row, column.key)
            out[column.key] = value.isoformat() if hasattr(value, "isoformat") else value
        return out

    return {
        "format": "firebreak-incident-export/1",
        "incident": columns(record.incident),
        "alerts": [columns(a) for a in record.alerts],
        "events": [columns(e) for e in record.events],
        "notifications": [_without_ack_tokens(columns(n)) for n in record.notifications],
        "delivery_attempts": [columns(a) for a in record.delivery_attempts],
        "acknowledgements": [columns(a) for a in record.acknowledgements],
        "escalation_tiers": [columns(t) for t in record.escalation_tiers],
        "decisions": [columns(e) for e in record.events if e.status in ("approved", "rejected")
                      or "decision" in (e.data or {})],
        "reviews": [columns(r) for r in record.reviews],
        "audit": {
            "algorithm": "sha256(prev_hash + canonical JSON of the event)",
            "hashed_fields": list(audit.HASHED_FIELDS),
            "genesis": audit.GENESIS,
            "head_seq": record.verification.head_seq,
            "head_hash": record.verification.head_hash,
            "seal_number": record.seal_number,
            "anchor": f"Prefect Variable {record.anchor_variable}" if record.anchor_variable else None,
            "intact": record.verification.intact,
            "broken": None if (broken := record.verification.broken) is None else {  # None: intact
                "problem": broken.problem, "seq": broken.seq, "detail": broken.detail},
        },
    }
