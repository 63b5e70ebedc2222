"""Incidents built for the report tests: facts recorded at chosen instants, as the report reads them."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from records import incidents
from records.acknowledgements import record_acknowledgement
from records.db import session_scope
from records.models import EventPhase, IncidentStatus, Notification
from reports import render
from reports.incident_record import load_record
from reports.live_view import artifact_key


def acknowledge_at(incident_id: str, contact: str, by: str, via: str, at: datetime) -> None:
    """An acknowledgement at a fixed moment, stored as notifications.acknowledgement.service stores one
    (the service itself stamps the current time): the row, and the status change by `via:by`."""
    stored = record_acknowledgement(incident_id, by=by, via=via, contact_id=contact, comment=None, at=at)
    if stored.effective and stored.incident_status == "triggered":
        incidents.transition(incident_id, IncidentStatus.acknowledged, actor=f"{via}:{by}",
                             reason=f"acknowledged by {by} via {via}", at=at)
    else:
        incidents.append_event(incident_id, phase=EventPhase.note, actor=f"{via}:{by}", at=at,
                               status="acknowledged" if stored.effective else "ack-repeated",
                               summary=f"Acknowledged by {by} via {via}", data={"by": by, "via": via})


class Outage:
    """A system-outage incident written event by event at fixed offsets from its opening."""

    def __init__(self, *, level: str = "II", runbook: str = "system-outage", source: str = "drill"):
        self.incident = incidents.open_incident(runbook_id=runbook, runbook_version="1.0", title="Chat down",
                                                level=level, source=source, drill=source == "drill",
                                                parameters={"service_url": "http://sim"})
        self.id = self.incident.id
        self.t0 = self.incident.triggered_at
        self.actor = f"runbook:{runbook}"

    def at(self, **offset: float) -> datetime:
        return self.t0 + timedelta(**offset)

    def step(self, step_id: str, action: str, start: timedelta, end: timedelta, status: str = "succeeded",
             output: object = None, error: str | None = None, data: dict | None = None) -> int:
        """Intent and outcome of one attempt; returns the outcome's seq."""
        incidents.append_event(self.id, phase=EventPhase.intent, status="started", actor=self.actor, step_id=step_id,
                               action=action, summary=f"{step_id}: start", at=self.t0 + start)
        recorded = data if data is not None else ({"output": output} if output is not None else {})
        return incidents.append_event(self.id, phase=EventPhase.outcome, status=status, actor=self.actor,
                                      step_id=step_id, action=action, summary=f"{step_id}: {status}", error=error,
                                      data=recorded, at=self.t0 + end).seq

    def status(self, status: IncidentStatus, actor: str | None = None, reason: str = "", **offset: float) -> int:
        incidents.transition(self.id, status, actor=actor or self.actor, reason=reason, at=self.at(**offset))
        return incidents.events(self.id)[-1].seq

    def page(self, contact: str, role: str, sent: datetime | None, step: str = "page_technical_support") -> None:
        with session_scope() as session:
            session.add(Notification(incident_id=self.id, step_id=step, contact=contact, role=role,
                                     channel=f"json://127.0.0.1/inbox/{contact}",
                                     idempotency_key=f"{self.id}:{step}:{contact}", attempts=1,
                                     status="delivered" if sent else "failed", title="t", body="b", drill=True,
                                     created_at=self.t0, sent_at=sent))
        if sent is not None:  # as tasks.notify records each delivery on the timeline
            incidents.append_event(self.id, phase=EventPhase.note, status="delivered", actor=self.actor,
                                   step_id=step, action="notify", at=sent,
                                   summary=f"notify {contact} ({role}) via json://…: delivered",
                                   data={"contact": contact, "tier": 1, "cycle": 0})

    def view(self, lang: str = "en") -> dict:
        return render.build_view(load_record(self.id), lang)

    def markdown(self, lang: str = "en") -> str:
        return render.render(load_record(self.id), lang).markdown


def artifact_versions(incident_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(incident_id)])),
                                     sort=ArtifactSort.CREATED_DESC)


def latest(incident_id: str) -> str:
    versions = artifact_versions(incident_id)
    return versions[0].data if versions else ""
