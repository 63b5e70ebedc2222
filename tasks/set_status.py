"""`set_status`: move the incident forward in its lifecycle."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from records import incidents
from records.models import IncidentStatus
from tasks.base import Attempt, action


class SetStatusInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: IncidentStatus
    reason: str = ""


@action("set_status", SetStatusInput, describe=lambda inp: f"set incident status to {inp.status.value}",
        reuse="incident")  # idempotent (a status never goes back): once per incident, runbook and step
def set_status(inp: SetStatusInput, attempt: Attempt) -> dict[str, str]:
    ctx = attempt.context
    try:
        incident = incidents.transition(ctx.incident_id, inp.status, actor=ctx.actor, reason=inp.reason,
                                        step_id=ctx.step_id)
    except incidents.InvalidTransition:
        # A person moved it further meanwhile (resolved or closed it by hand: flows.operator_actions):
        # the runbook's own status step has nothing left to do and must not fail the run.
        incident = incidents.get_incident(ctx.incident_id)
        return {"status": incident.status, "note": f"already {incident.status}; not moved back to {inp.status.value}"}
    return {"status": incident.status}
