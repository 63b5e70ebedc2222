"""The incident service: open incidents, move them through their lifecycle,
append timeline events and remember which side effects already happened."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from firebreak.errors import Conflict, NotFound
from records import audit
from records.db import session_scope
from records.models import (
    STATUS_ORDER,
    EventPhase,
    Incident,
    IncidentStatus,
    Notification,
    RunState,
    Sequence,
    TimelineEvent,
    utcnow,
)

MILESTONE_COLUMN = {
    IncidentStatus.acknowledged: "acknowledged_at",
    IncidentStatus.mitigated: "mitigated_at",
    IncidentStatus.resolved: "resolved_at",
    IncidentStatus.closed: "closed_at",
}


class IncidentNotFound(NotFound, LookupError):
    """No incident has this id."""


class InvalidTransition(Conflict, ValueError):
    """The incident's status cannot move to the one asked for (it never goes back)."""


def _next_number(session: Session, name: str) -> int:
    """Atomically increment a named counter; safe across processes on SQLite and PostgreSQL."""
    try:
        with session.begin_nested():
            session.execute(insert(Sequence).values(name=name, value=0))
    except IntegrityError:
        pass  # another writer created it first
    return session.execute(
        update(Sequence).where(Sequence.name == name).values(value=Sequence.value + 1).returning(Sequence.value)
    ).scalar_one()


def open_incident(
    *,
    runbook_id: str,
    runbook_version: str,
    title: str,
    level: str,
    source: str,
    parameters: dict[str, Any],
    drill: bool = False,
    summary: str | None = None,
    flow_run_id: str | None = None,
    actor: str = "firebreak",
) -> Incident:
    now = utcnow()
    with session_scope() as session:
        number = _next_number(session, f"incident-{now.year}")
        incident = Incident(
            id=f"INC-{now.year}-{number:04d}",
            runbook_id=runbook_id,
            runbook_version=runbook_version,
            title=title,
            level=level,
            status=IncidentStatus.triggered.value,
            run_state=RunState.running.value if flow_run_id else RunState.pending.value,
            source=source,
            drill=drill,
            summary=summary,
            parameters=parameters,
            flow_run_id=flow_run_id,
            created_at=now,
            triggered_at=now,
        )
        session.add(incident)
        session.flush()
        _append(
            session,
            incident.id,
            phase=EventPhase.note,
            status="triggered",
            actor=actor,
            summary=f"Incident opened from {source}: {title} (level {level}{', drill' if drill else ''})",
            data={"runbook": runbook_id, "version": runbook_version, "level": level},
            flow_run_id=flow_run_id,
        )
        return incident


def get_incident(incident_id: str) -> Incident:
    with session_scope() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise IncidentNotFound(f"no incident {incident_id!r}")
        return incident


def incident_of_flow_run(flow_run_id: str) -> str | None:
    """The incident this flow run is (or was last) attached to, if any."""
    with session_scope() as session:
        return session.scalars(select(Incident.id).where(Incident.flow_run_id == flow_run_id)).first()


def list_incidents(limit: int = 50) -> list[Incident]:
    with session_scope() as session:
        return list(session.scalars(select(Incident).order_by(Incident.created_at.desc()).limit(limit)))


def attach_run(incident_id: str, flow_run_id: str | None, actor: str = "firebreak") -> Incident:
    """Attach a (new) runbook run to an existing incident; the incident keeps its history."""
    with session_scope() as session:
        incident = _locked(session, incident_id)
        previous = incident.flow_run_id
        incident.flow_run_id = flow_run_id
        incident.run_state = RunState.running.value
        incident.run_error = None
        incident.run_ended_at = None
        _append(
            session,
            incident_id,
            phase=EventPhase.note,
            status="run-attached",
            actor=actor,
            summary="Runbook run attached" + (f" (previous run {previous})" if previous and previous != flow_run_id else ""),
            flow_run_id=flow_run_id,
        )
        return incident


def transition(incident_id: str, status: IncidentStatus | str, *, actor: str, reason: str = "",
               step_id: str | None = None, at: datetime | None = None) -> Incident:
    """Move an incident forward in its lifecycle. Moving to the current status is a no-op
    (so a retried step is harmless); moving backwards is refused."""
    target = IncidentStatus(status)
    at = at or utcnow()
    with session_scope() as session:
        incident = _locked(session, incident_id)
        current = IncidentStatus(incident.status)
        if STATUS_ORDER.index(target) < STATUS_ORDER.index(current):
            raise InvalidTransition(f"{incident_id} is {current.value}; it cannot go back to {target.value}")
        if target == current:
            return incident
        implied = STATUS_ORDER[STATUS_ORDER.index(current) + 1 : STATUS_ORDER.index(target)]
        for skipped in implied:
            setattr(incident, MILESTONE_COLUMN[skipped], at)
        setattr(incident, MILESTONE_COLUMN[target], at)
        incident.status = target.value
        summary = f"Status {current.value} → {target.value}"
        if implied:
            summary += f" (implies {', '.join(s.value for s in implied)})"
        if reason:
            summary += f": {reason}"
        _append(session, incident_id, phase=EventPhase.note, status=target.value, actor=actor,
                summary=summary, step_id=step_id, at=at,
                data={"from": current.value, "to": target.value, "implied": [s.value for s in implied]})
        return incident


def set_run_state(incident_id: str, state: RunState, *, error: str | None = None, actor: str = "firebreak") -> Incident:
    with session_scope() as session:
        incident = _locked(session, incident_id)
        if incident.run_state == state.value and incident.run_error == error:
            return incident
        incident.run_state = state.value
        incident.run_error = error
        if state in (RunState.completed, RunState.failed, RunState.crashed, RunState.cancelled):
            incident.run_ended_at = utcnow()
        _append(session, incident_id, phase=EventPhase.note, status=f"run-{state.value}", actor=actor,
                summary=f"Runbook run {state.value}" + (f": {error}" if error else ""), error=error,
                flow_run_id=incident.flow_run_id)
        return incident


def heartbeat(incident_id: str) -> None:
    """Note that the process running this incident's runbook is alive (no timeline event)."""
    with session_scope() as session:
        session.execute(update(Incident).where(Incident.id == incident_id).values(heartbeat_at=utcnow()))


def open_runs() -> list[Incident]:
    """Incidents whose runbook run has not recorded an end."""
    with session_scope() as session:
        return list(session.scalars(select(Incident).where(
            Incident.run_state.in_([RunState.running.value, RunState.pending.value]))))


def append_event(incident_id: str, *, guard: Callable[[Session], None] | None = None,
                 **fields: Any) -> TimelineEvent:
    """Append one event to the incident's timeline.

    guard(session) runs in the same transaction, after the incident is locked and before the
    event is written, and may raise to refuse it (records.run_locks.fence: a step's intent is
    written only while its run still holds the incident's run lock at its generation)."""
    with session_scope() as session:
        _locked(session, incident_id)
        if guard is not None:
            guard(session)
        return _append(session, incident_id, **fields)


def events(incident_id: str) -> list[TimelineEvent]:
    with session_scope() as session:
        return list(session.scalars(select(TimelineEvent).where(TimelineEvent.incident_id == incident_id)
                                    .order_by(TimelineEvent.seq)))


def notifications(incident_id: str) -> list[Notification]:
    with session_scope() as session:
        return list(session.scalars(select(Notification).where(Notification.incident_id == incident_id)
                                    .order_by(Notification.id)))


def succeeded_outcome(incident_id: str, idempotency_key: str) -> TimelineEvent | None:
    """The recorded success of a side effect with this key, if it already happened."""
    with session_scope() as session:
        return session.scalars(
            select(TimelineEvent)
            .where(TimelineEvent.incident_id == incident_id,
                   TimelineEvent.idempotency_key == idempotency_key,
                   TimelineEvent.phase == EventPhase.outcome.value,
                   TimelineEvent.status == "succeeded")
            .order_by(TimelineEvent.seq.desc())
            .limit(1)
        ).first()


def _locked(session: Session, incident_id: str) -> Incident:
    # FOR UPDATE serialises appends per incident on PostgreSQL; SQLite's
    # BEGIN IMMEDIATE (records.db) already serialises every writer.
    incident = session.scalars(select(Incident).where(Incident.id == incident_id).with_for_update()).first()
    if incident is None:
        raise IncidentNotFound(f"no incident {incident_id!r}")
    return incident


def _append(session: Session, incident_id: str, *, phase: EventPhase | str, status: str, actor: str, summary: str,
            step_id: str | None = None, action: str | None = None, attempt: int = 1, error: str | None = None,
            idempotency_key: str | None = None, data: dict[str, Any] | None = None,
            flow_run_id: str | None = None, task_run_id: str | None = None, at: datetime | None = None) -> TimelineEvent:
    # Callers hold the incident's lock (_locked, or a new incident in this transaction),
    # so the last event read here stays the last: the chain cannot fork.
    last = session.execute(
        select(TimelineEvent.seq, TimelineEvent.hash).where(TimelineEvent.incident_id == incident_id)
        .order_by(TimelineEvent.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (last.seq + 1, last.hash) if last else (1, audit.GENESIS)
    event = TimelineEvent(
        incident_id=incident_id, seq=seq, step_id=step_id, action=action, attempt=attempt,
        phase=EventPhase(phase).value, status=status, actor=actor, summary=summary, error=error,
        idempotency_key=idempotency_key, data=audit.normalise_data(data or {}), flow_run_id=flow_run_id,
        task_run_id=task_run_id, at=at or utcnow(),
    )
    audit.seal(session, event, prev_hash)
    session.add(event)
    session.flush()
    return event
