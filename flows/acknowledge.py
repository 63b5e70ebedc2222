"""`acknowledge-incident`: acknowledge an incident from the Prefect UI.

This replaces a pause_flow_run(wait_for_input=…) form inside the runbook run:
escalation runs inside the notify task, and a paused flow would stop every other
step of the runbook (the outage runbook must keep failing over while it pages).
The operator instead runs this small flow from its deployment's form; escalation
sees the acknowledgement in the records and stops.
"""
# No `from __future__ import annotations`: Prefect reads the annotations to build the UI form.
from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from notifications.acknowledgement.service import COMMENT_CHARS, AcknowledgementResult, acknowledge_incident


class AcknowledgementForm(BaseModel):
    incident_id: str = Field(pattern=r"^INC-\d{4}-\d{4,}$", description="The incident to acknowledge, e.g. INC-2026-0001")
    by: str = Field(min_length=1, max_length=120, description="Who acknowledges")
    comment: str | None = Field(default=None, max_length=COMMENT_CHARS, description="Optional comment for the timeline")


@flow(name="acknowledge-incident", description="Acknowledge an incident: stops escalation and records who, when and how.")
def acknowledge(form: AcknowledgementForm) -> AcknowledgementResult:
    result = acknowledge_incident(form.incident_id, by=form.by, via="ui", comment=form.comment)
    get_run_logger().info("%s acknowledged by %s (%s)", result.incident_id, result.by,
                          "escalation stopped" if result.first else f"already acknowledged by {result.first_by}")
    return result
