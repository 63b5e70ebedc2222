"""Acknowledge an incident: one function behind every path (Prefect UI, signed link, CLI, monitor).

The first acknowledgement stops escalation (notify steps poll for it), marks the
pages sent so far as acknowledged, and moves a still-`triggered` incident to
`acknowledged`. A repeated acknowledgement is recorded too, but changes nothing else.
"""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select, update

from records import incidents
from records.acknowledgements import ACK_PATHS, Acknowledgement
from records.db import session_scope
from records.models import EventPhase, Incident, IncidentStatus, Notification, utcnow


class AcknowledgementInvalid(ValueError):
    pass


class AcknowledgementResult(BaseModel):
    incident_id: str
    by: str
    via: str
    at: datetime
    comment: str | None = None
    #: True for the acknowledgement that stopped escalation; False for a repeat.
    first: bool
    #: When `first` is False: who acknowledged first, and how.
    first_by: str | None = None
    first_via: str | None = None
    incident_status: str


def acknowledge_incident(incident_id: str, *, by: str, via: str, comment: str | None = None,
                         contact_id: str | None = None) -> AcknowledgementResult:
    """Record who acknowledged `incident_id`, when and how (via: ui | link | cli | monitor).

    Raises records.incidents.IncidentNotFound for an unknown incident and
    AcknowledgementInvalid for a bad `by`/`via`.
    """
    by = (by or "").strip()
    if not by:
        raise AcknowledgementInvalid("an acknowledgement needs the name of who acknowledges (by)")
    if len(by) > 120:
        raise AcknowledgementInvalid("`by` is longer than 120 characters")
    if via not in ACK_PATHS:
        raise AcknowledgementInvalid(f"unknown acknowledgement path {via!r}; expected one of {', '.join(ACK_PATHS)}")
    comment = (comment or "").strip() or None
    now = utcnow()
    with session_scope() as session:
        # Locking the incident row serialises concurrent acknowledgements (FOR UPDATE on
        # PostgreSQL; SQLite's BEGIN IMMEDIATE serialises every writer), so exactly one is first.
        incident = session.scalars(select(Incident).where(Incident.id == incident_id).with_for_update()).first()
        if incident is None:
            raise incidents.IncidentNotFound(f"no incident {incident_id!r}")
        earlier = session.scalars(select(Acknowledgement).where(Acknowledgement.incident_id == incident_id)
                                  .order_by(Acknowledgement.id).limit(1)).first()
        session.add(Acknowledgement(incident_id=incident_id, by=by, via=via, contact_id=contact_id, comment=comment,
                                    effective=earlier is None, at=now))
        if earlier is None:
            session.execute(update(Notification)
                            # "sending": the page is being answered right now; a failure clears it again.
                            .where(Notification.incident_id == incident_id,
                                   Notification.status.in_(("delivered", "sending")),
                                   Notification.acknowledged_at.is_(None))
                            .values(acknowledged_at=now, acknowledged_by=by))
        status = incident.status
        first_by, first_via = (earlier.by, earlier.via) if earlier else (None, None)

    actor = f"{via}:{by}"
    note = f" — {comment}" if comment else ""
    moved = False
    if earlier is None and status == IncidentStatus.triggered.value:
        try:
            status = incidents.transition(incident_id, IncidentStatus.acknowledged, actor=actor,
                                          reason=f"acknowledged by {by} via {via}{note}", at=now).status
            moved = True
        except incidents.InvalidTransition:  # the runbook moved it further in the meantime
            status = incidents.get_incident(incident_id).status
    if earlier is None and not moved:
        incidents.append_event(incident_id, phase=EventPhase.note, status="acknowledged", actor=actor,
                               summary=f"Acknowledged by {by} via {via} (incident already {status}){note}",
                               data={"by": by, "via": via, "comment": comment})
    elif earlier is not None:
        incidents.append_event(incident_id, phase=EventPhase.note, status="ack-repeated", actor=actor,
                               summary=f"Acknowledged again by {by} via {via}; already acknowledged by "
                                       f"{first_by} via {first_via}, nothing changed{note}",
                               data={"by": by, "via": via, "comment": comment})
    return AcknowledgementResult(incident_id=incident_id, by=by, via=via, at=now, comment=comment,
                                 first=earlier is None, first_by=first_by, first_via=first_via,
                                 incident_status=status)
