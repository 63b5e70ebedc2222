"""Acknowledge an incident: one function behind every path (Prefect UI, signed link, CLI, monitor).

An acknowledgement stops the escalation of every page sent before it (notify steps poll for
it: acknowledgement is per page, so an older acknowledgement never stops a newer page), marks
the pages not yet acknowledged as acknowledged, and moves a still-`triggered` incident to
`acknowledged`. The acknowledgement, its status change and its timeline event are written in
ONE transaction. One row per acknowledger (a link's contact, or the name given on another
path): the same acknowledger again writes no new row; a comment then becomes a bounded note
(records.acknowledgements.MAX_NOTES, COMMENT_CHARS). Another person's acknowledgement that
stops nothing is recorded as a repeat. The rows are stored by records.acknowledgements.

An acknowledgement that arrives after the incident's head was published (its report
written at the run's end) moves that head: the new head is anchored in Prefect
again (records.audit_anchor), so `audit verify` shows the published one as
"extended since", not as broken.
"""
from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy.orm import Session

from firebreak.errors import InputInvalid
from records import incidents
from records.acknowledgements import ACK_PATHS, NOTE_CHARS, RecordedAcknowledgement, record_acknowledgement
from records.audit_anchor import anchor_if_published
from records.models import EventPhase, Incident, IncidentStatus, utcnow

#: The longest comment an acknowledgement takes (a link's form, the CLI, the Prefect UI).
COMMENT_CHARS = NOTE_CHARS


class AcknowledgementInvalid(InputInvalid, ValueError):
    """An acknowledgement without a usable `by`, or by a path that does not exist (`via`)."""


#: Control characters other than tab, line feed and carriage return. NUL in particular: a PostgreSQL
#: text column cannot hold it, so a link's comment carrying one would fail the store (a 500), not be refused.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as an acknowledgement's text, or None."""
    if _CONTROL.search(value):
        return "contains a control character (such as NUL, \\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (e.g. from a command line's undecodable bytes)
        return "contains a lone surrogate, which is not Unicode text"
    return None


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
    #: The same acknowledger had acknowledged before (no new record); `noted`: its comment was kept as a
    #: note; `note_dropped`: it was not (the acknowledgement already has the most notes it keeps).
    repeat: bool = False
    noted: bool = False
    note_dropped: bool = False


def acknowledge_incident(incident_id: str, *, by: str, via: str, comment: str | None = None,
                         contact_id: str | None = None) -> AcknowledgementResult:
    """Record who acknowledged `incident_id`, when and how (via: ui | link | cli | monitor).

    Raises records.incidents.IncidentNotFound for an unknown incident and
    AcknowledgementInvalid for a bad `by`/`via`/`comment`. Nothing is stored unless all of it is
    (the acknowledgement, the status change and the timeline event share one transaction).
    """
    by = (by or "").strip()
    if not by:
        raise AcknowledgementInvalid("an acknowledgement needs the name of who acknowledges (by)")
    if len(by) > 120:
        raise AcknowledgementInvalid("`by` is longer than 120 characters")
    if (problem := _text_problem(by)) is not None:
        raise AcknowledgementInvalid(f"`by` {problem}")
    if via not in ACK_PATHS:
        raise AcknowledgementInvalid(f"unknown acknowledgement path {via!r}; expected one of {', '.join(ACK_PATHS)}")
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > COMMENT_CHARS:
        raise AcknowledgementInvalid(f"the comment is {len(comment)} characters long; at most {COMMENT_CHARS}")
    if comment is not None and (problem := _text_problem(comment)) is not None:
        raise AcknowledgementInvalid(f"the comment {problem}")
    now = utcnow()
    actor = f"{via}:{by}"
    note = f" — {comment}" if comment else ""
    outcome: dict[str, str] = {}

    def timeline(session: Session, incident: Incident, stored: RecordedAcknowledgement) -> None:
        """In the acknowledgement's own transaction: the status change and what the timeline says."""
        status = stored.incident_status
        data = {"by": by, "via": via, "comment": comment, "contact": contact_id}
        if stored.effective and status == IncidentStatus.triggered.value:
            status = incidents.transition(incident_id, IncidentStatus.acknowledged, actor=actor,
                                          reason=f"acknowledged by {by} via {via}{note}", at=now,
                                          session=session).status
        elif stored.effective:
            what = f"{stored.pages} page(s) sent since" if stored.repeat else f"incident already {status}"
            incidents.append_event(incident_id, session=session, phase=EventPhase.note, status="acknowledged",
                                   actor=actor, at=now, summary=f"Acknowledged by {by} via {via} ({what}){note}",
                                   data=data)
        elif stored.noted:
            incidents.append_event(incident_id, session=session, phase=EventPhase.note, status="ack-note",
                                   actor=actor, at=now, summary=f"Note from {by} (acknowledged earlier): {comment}",
                                   data=data)
        elif not stored.repeat:
            incidents.append_event(incident_id, session=session, phase=EventPhase.note, status="ack-repeated",
                                   actor=actor, at=now,
                                   summary=f"Acknowledged again by {by} via {via}; already acknowledged by "
                                           f"{stored.first_by} via {stored.first_via}, nothing changed{note}",
                                   data=data)
        # The same acknowledger again with nothing new (or a note over the limit): no event, no row.
        outcome["status"] = status

    stored = record_acknowledgement(incident_id, by=by, via=via, contact_id=contact_id, comment=comment, at=now,
                                    then=timeline)
    anchor_if_published(incident_id)  # best effort; only once a head was published
    return AcknowledgementResult(incident_id=incident_id, by=by, via=via, at=now, comment=comment,
                                 first=stored.effective, first_by=stored.first_by, first_via=stored.first_via,
                                 incident_status=outcome["status"], repeat=stored.repeat, noted=stored.noted,
                                 note_dropped=stored.note_dropped)
