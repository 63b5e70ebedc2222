"""Flow-run state hooks: whatever ends a run, the incident records it.

The engine records normal completion and step-policy failures itself; these
hooks catch the rest (exceptions outside steps, crashes, cancellation) so an
incident is never left "running".
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from records import incidents
from records.db import session_scope
from records.models import Incident, RunState
from reports.publish import publish_report


def _incident_of(flow_run: Any) -> str | None:
    with session_scope() as session:
        return session.scalars(select(Incident.id).where(Incident.flow_run_id == str(flow_run.id))).first()


def _mark(state_value: RunState, flow_run: Any, state: Any) -> None:
    incident_id = _incident_of(flow_run)
    if incident_id is None:
        return  # the run failed before it opened an incident
    incident = incidents.get_incident(incident_id)
    if incident.run_state in (RunState.running.value, RunState.pending.value):
        incidents.set_run_state(incident_id, state_value, error=state.message or state.name)
        # The engine reports the ends it records itself; these ends get theirs here.
        publish_report(incident_id, str(flow_run.id))


def on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    _mark(RunState.failed, flow_run, state)


def on_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    _mark(RunState.crashed, flow_run, state)


def on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    _mark(RunState.cancelled, flow_run, state)


RUN_HOOKS: dict[str, Any] = {"on_failure": [on_failure], "on_crashed": [on_crashed], "on_cancellation": [on_cancellation]}
