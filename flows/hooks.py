"""Flow-run state hooks: whatever ends a run, the incident records it.

The engine records normal completion and step-policy failures itself; these
hooks catch the rest (exceptions outside steps, crashes, cancellation) so an
incident is never left "running". A failure or crash they record also raises the
alarm (flows.run_failure): no incident ends silently. A cancellation is somebody's
decision, so it pages nobody; the incident still shows as needing attention.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from flows import run_failure
from records import incidents
from records.db import session_scope
from records.models import Incident, RunState
from reports.live_view import publish_live_view
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
        if state_value in (RunState.failed, RunState.crashed):
            # Before the end is recorded, as the engine does; raise_alarm never raises.
            runbook = (getattr(flow_run, "parameters", None) or {}).get("runbook")  # run-runbook's id or path
            run_failure.raise_alarm(incident_id, outcome=state_value, reason=state.message or state.name,
                                    flow_run_id=str(flow_run.id), runbook=runbook if isinstance(runbook, str) else None,
                                    actor="firebreak:flow-run-hook")
        incidents.set_run_state(incident_id, state_value, error=state.message or state.name)
        # The engine reports the ends it records itself; these ends get theirs here.
        publish_report(incident_id, str(flow_run.id))
        publish_live_view(incident_id)  # and the live view says how the run ended (and its tags)


def on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    _mark(RunState.failed, flow_run, state)


def on_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    _mark(RunState.crashed, flow_run, state)


def on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    _mark(RunState.cancelled, flow_run, state)


RUN_HOOKS: dict[str, Any] = {"on_failure": [on_failure], "on_crashed": [on_crashed], "on_cancellation": [on_cancellation]}
