"""Report flows: regenerate an incident's report, and enter its post-incident review
from a Prefect UI form (the pydantic model below is the form).

The review is a separate flow rather than a pause at the end of the runbook run:
a paused run would hold the incident's run open (and its heartbeat and lock)
until someone typed the review, which may be days later.
"""
# No `from __future__ import annotations`: Prefect reads these annotations to build the UI forms.
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from records.incidents import get_incident
from records.reviews import ReviewInput, enter_review
from reports.publish import publish_report

IncidentId = Annotated[str, Field(pattern=r"^INC-\d{4}-\d{4,}$", description="e.g. INC-2026-0001")]


@flow(name="regenerate-report", description="Render an incident's post-incident report again from the records "
                                            "and republish it as the Prefect artifact report-<incident id>.")
def regenerate_report(incident_id: IncidentId) -> dict[str, str]:
    incident = get_incident(incident_id)
    paths = publish_report(incident.id, incident.flow_run_id)
    if not paths:
        raise RuntimeError(f"the report of {incident.id} could not be rendered; see its timeline")
    get_run_logger().info("report of %s: %s", incident.id, paths.get("en.html"))
    return {name: str(path) for name, path in paths.items()}


@flow(name="review-incident", description="Enter the post-incident review (root cause, lessons, action items "
                                          "with owner and due date); the report is regenerated with it.")
def review_incident(incident_id: IncidentId, review: ReviewInput) -> dict[str, str]:
    incident = get_incident(incident_id)
    row = enter_review(incident.id, review)
    get_run_logger().info("review revision %s stored for %s", row.revision, incident.id)
    paths = publish_report(incident.id, incident.flow_run_id)
    return {"revision": str(row.revision), "sha256": row.sha256, **{k: str(v) for k, v in paths.items()}}
