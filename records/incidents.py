"""The incident service: open incidents, move them through their lifecycle,
append timeline events and remember which side effects already happened."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from firebreak.errors import Conflict, NotFound
from records import audit
from records.db import read_scope, session_scope
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


@contextmanager
def _within(session: Session | None) -> Iterator[Session]:
    """The caller's transaction (`session`, e.g. an acknowledgement's: one commit for both), or a new one."""
    if session is not None:
        yield session
        return
    with session_scope() as new:
        yield new


class InvalidTransition(Conflict, ValueError):
    """The incident's status cannot move to the one asked for (it never goes back)."""


_log = logging.getLogger("firebreak.records.incidents")

#: Who wants to know when an incident's timeline grows (the live incident view, reports.live_view):
#: called with the ids of the incidents appended to, in the committing thread, once the transaction
#: that appended has committed. In-process only; other processes' appends are seen by polling
#: `last_seq`. Listeners must be quick (the live view only sets a flag) and never raise.
_change_listeners: list[Callable[[frozenset[str]], None]] = []
_CHANGED = "firebreak.incidents.changed"


def on_change(listener: Callable[[frozenset[str]], None]) -> Callable[[], None]:
    """Call `listener(incident ids)` after each commit that appended to those incidents' timelines;
    returns the function that stops it."""
    _change_listeners.append(listener)

    def remove() -> None:
        if listener in _change_listeners:
            _change_listeners.remove(listener)
    return remove


@sa_event.listens_for(Session, "after_commit")
def _tell_listeners(session: Session) -> None:
    changed = session.info.pop(_CHANGED, None)
    if not changed:
        return
    for listener in list(_change_listeners):
        try:
            listener(frozenset(changed))
        except Exception as exc:  # noqa: BLE001  (a listener's problem is never the writer's)
            _log.warning("incident change listener failed: %s: %s", type(exc).__name__, exc)


@sa_event.listens_for(Session, "after_rollback")
def _forget_changes(session: Session) -> None:
    session.info.pop(_CHANGED, None)


def last_seq(incident_id: str) -> int:
    """The sequence number of the incident's newest timeline event (0 if none): a cheap way for
    another process to notice that something happened."""
    with read_scope() as session:
        return session.scalar(select(func.max(TimelineEvent.seq)).where(TimelineEvent.incident_id == incident_id)) or 0


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
    with read_scope() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise IncidentNotFound(f"no incident {incident_id!r}")
        return incident


def incident_of_flow_run(flow_run_id: str) -> str | None:
    """The incident this flow run is (or was last) attached to, if any."""
    with read_scope() as session:
        return session.scalars(select(Incident.id).where(Incident.flow_run_id == flow_run_id)).first()


def list_incidents(limit: int = 50) -> list[Incident]:
    with read_scope() as session:
        return list(session.scalars(select(Incident).order_by(Incident.created_at.desc()).limit(limit)))


def attach_run(incident_id: str, flow_run_id: str | None, actor: str = "firebreak") -> Incident:
    """Attach a (new) runbook run to an existing incident; the incident keeps its history."""
    with session_scope() as session:
        incident = _locked(session, incident_id)
        previous, previous_state = incident.flow_run_id, incident.run_state
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
            summary=("Runbook run resumed: the steps this flow run finished before stand, the rest run now"
                     if previous == flow_run_id and previous_state != RunState.running.value
                     else "Runbook run attached"
                     + (f" (previous run {previous})" if previous and previous != flow_run_id else "")),
            flow_run_id=flow_run_id,
        )
        return incident


def transition(incident_id: str, status: IncidentStatus | str, *, actor: str, reason: str = "",
               step_id: str | None = None, at: datetime | None = None, imply: bool = True,
               data: dict[str, Any] | None = None, session: Session | None = None) -> Incident:
    """Move an incident forward in its lifecycle. Moving to the current status is a no-op
    (so a retried step is harmless); moving backwards is refused.

    imply: the milestones skipped over (acknowledged, mitigated… on the way to resolved) are set
    to the same instant. A person closing an incident that was never acknowledged or resolved
    (a false alarm) passes False: only the status moves and the milestones stay as they were,
    so the report does not claim an acknowledgement or a resolution nobody made."""
    target = IncidentStatus(status)
    at = at or utcnow()
    with _within(session) as session:
        incident = _locked(session, incident_id)
        current = IncidentStatus(incident.status)
        if STATUS_ORDER.index(target) < STATUS_ORDER.index(current):
            raise InvalidTransition(f"{incident_id} is {current.value}; it cannot go back to {target.value}")
        if target == current:
            return incident
        skipped = STATUS_ORDER[STATUS_ORDER.index(current) + 1 : STATUS_ORDER.index(target)]
        implied = skipped if imply else []
        for milestone in implied:
            setattr(incident, MILESTONE_COLUMN[milestone], at)
        setattr(incident, MILESTONE_COLUMN[target], at)
        incident.status = target.value
        summary = f"Status {current.value} → {target.value}"
        if implied:
            summary += f" (implies {', '.join(s.value for s in implied)})"
        elif skipped:
            summary += f" (never {', '.join(s.value for s in skipped)})"
        if reason:
            summary += f": {reason}"
        _append(session, incident_id, phase=EventPhase.note, status=target.value, actor=actor,
                summary=summary, step_id=step_id, at=at,
                data={"from": current.value, "to": target.value, "implied": [s.value for s in implied],
                      **(data or {})})
        return incident


def level_of(incident_id: str) -> str:
    """The incident's response level now (a run reads it before each step: an operator or a
    `set_level` step may have changed it)."""
    with read_scope() as session:
        level = session.scalar(select(Incident.level).where(Incident.id == incident_id))
        if level is None:
            raise IncidentNotFound(f"no incident {incident_id!r}")
        return level


def change_level(incident_id: str, level: str, *, actor: str, reason: str = "", step_id: str | None = None,
                 flow_run_id: str | None = None, data: dict[str, Any] | None = None) -> tuple[Incident, str]:
    """Set the incident's response level; returns the incident and the level it had. The same
    level again is a no-op (no event)."""
    with session_scope() as session:
        incident = _locked(session, incident_id)
        previous = incident.level
        if previous == level:
            return incident, previous
        incident.level = level
        _append(session, incident_id, phase=EventPhase.note, status="level-changed", actor=actor,
                summary=f"Level {previous} → {level}" + (f": {reason}" if reason else ""), step_id=step_id,
                flow_run_id=flow_run_id, data={"from": previous, "to": level, **(data or {})})
        return incident, previous


def hand_over_command(incident_id: str, to_contact: str, *, actor: str, summary: str,
                      data: dict[str, Any] | None = None) -> tuple[Incident, str | None]:
    """Record `to_contact` (a contact id) as the incident commander; returns the incident and the
    commander recorded before (None: the level's commander role on duty)."""
    with session_scope() as session:
        incident = _locked(session, incident_id)
        previous = incident.commander
        incident.commander = to_contact
        _append(session, incident_id, phase=EventPhase.note, status="command-handed-over", actor=actor,
                summary=summary, data={"from": previous, "to": to_contact, **(data or {})})
        return incident, previous


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
    with read_scope() as session:
        return list(session.scalars(select(Incident).where(
            Incident.run_state.in_([RunState.running.value, RunState.pending.value]))))


def append_event(incident_id: str, *, guard: Callable[[Session], None] | None = None,
                 session: Session | None = None, **fields: Any) -> TimelineEvent:
    """Append one event to the incident's timeline (in `session`'s transaction when given).

    guard(session) runs in the same transaction, after the incident is locked and before the
    event is written, and may raise to refuse it (records.run_locks.fence: a step's intent is
    written only while its run still holds the incident's run lock at its generation)."""
    with _within(session) as session:
        _locked(session, incident_id)
        if guard is not None:
            guard(session)
        return _append(session, incident_id, **fields)


def events(incident_id: str) -> list[TimelineEvent]:
    with read_scope() as session:
        return list(session.scalars(select(TimelineEvent).where(TimelineEvent.incident_id == incident_id)
                                    .order_by(TimelineEvent.seq)))


def notifications(incident_id: str) -> list[Notification]:
    with read_scope() as session:
        return list(session.scalars(select(Notification).where(Notification.incident_id == incident_id)
                                    .order_by(Notification.id)))


def succeeded_outcome(incident_id: str, idempotency_key: str) -> TimelineEvent | None:
    """The recorded success of a side effect with this key, if it already happened."""
    with read_scope() as session:
        return session.scalars(
            select(TimelineEvent)
            .where(TimelineEvent.incident_id == incident_id,
                   TimelineEvent.idempotency_key == idempotency_key,
                   TimelineEvent.phase == EventPhase.outcome.value,
                   TimelineEvent.status == "succeeded")
            .order_by(TimelineEvent.seq.desc())
            .limit(1)
        ).first()


def succeeded_in_flow_run(incident_id: str, step_id: str, flow_run_id: str) -> TimelineEvent | None:
    """The recorded success of this step by this very flow run (an earlier attempt of it: a flow
    retry, or a resume after its process died), reads included."""
    with read_scope() as session:
        return session.scalars(
            select(TimelineEvent)
            .where(TimelineEvent.incident_id == incident_id,
                   TimelineEvent.step_id == step_id,
                   TimelineEvent.flow_run_id == flow_run_id,
                   TimelineEvent.phase == EventPhase.outcome.value,
                   TimelineEvent.status == "succeeded")
            .order_by(TimelineEvent.seq.desc())
            .limit(1)
        ).first()


def resumes_of(incident_id: str, flow_run_id: str) -> int:
    """How often an operator resumed this flow run (its `resume-requested` events)."""
    with read_scope() as session:
        return session.scalar(
            select(func.count()).select_from(TimelineEvent)
            .where(TimelineEvent.incident_id == incident_id, TimelineEvent.flow_run_id == flow_run_id,
                   TimelineEvent.status == "resume-requested")) or 0


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
    session.info.setdefault(_CHANGED, set()).add(incident_id)  # told to on_change listeners after commit
    return event
