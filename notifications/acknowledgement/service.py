"""Acknowledge an incident: one function behind every path (Prefect UI, signed link, CLI, monitor).

The first acknowledgement stops escalation (notify steps poll for it), marks the
pages sent so far as acknowledged, and moves a still-`triggered` incident to
`acknowledged`. A repeated acknowledgement is recorded too, but changes nothing else.
The rows are stored by records.acknowledgements.
"""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from firebreak.errors import InputInvalid
from records import incidents
from records.acknowledgements import ACK_PATHS, record_acknowledgement
from records.models import EventPhase, IncidentStatus, utcnow


class AcknowledgementInvalid(InputInvalid, ValueError):
    """An acknowledgement without a usable `by`, or by a path that does not exist (`via`)."""


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
    stored = record_acknowledgement(incident_id, by=by, via=via, contact_id=contact_id, comment=comment, at=now)
    status, first_by, first_via = stored.incident_status, stored.first_by, stored.first_via

    actor = f"{via}:{by}"
    note = f" — {comment}" if comment else ""
    moved = False
    if stored.effective and status == IncidentStatus.triggered.value:
        try:
            status = incidents.transition(incident_id, IncidentStatus.acknowledged, actor=actor,
                                          reason=f"acknowledged by {by} via {via}{note}", at=now).status
            moved = True
        except incidents.InvalidTransition:  # the runbook moved it further in the meantime
            status = incidents.get_incident(incident_id).status
    if stored.effective and not moved:
        incidents.append_event(incident_id, phase=EventPhase.note, status="acknowledged", actor=actor,
                               summary=f"Acknowledged by {by} via {via} (incident already {status}){note}",
                               data={"by": by, "via": via, "comment": comment})
    elif not stored.effective:
        incidents.append_event(incident_id, phase=EventPhase.note, status="ack-repeated", actor=actor,
                               summary=f"Acknowledged again by {by} via {via}; already acknowledged by "
                                       f"{first_by} via {first_via}, nothing changed{note}",
                               data={"by": by, "via": via, "comment": comment})
    return AcknowledgementResult(incident_id=incident_id, by=by, via=via, at=now, comment=comment,
                                 first=stored.effective, first_by=first_by, first_via=first_via,
                                 incident_status=status)
