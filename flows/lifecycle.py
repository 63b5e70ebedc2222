"""Lifecycle actions as Prefect flows, one deployment each (prefect.yaml, served by `firebreak up`):
an operator runs the incident from the Prefect UI with these forms (Deployments → incident-… →
Run → Custom run).

    incident-acknowledge · incident-resolve · incident-close · incident-note · incident-level ·
    incident-handover · incident-rerun · incident-resume · incident-cancel-run

Each calls its function in flows.operator_actions, as the CLI and the intake do. "Who" is a list of
the contacts in the contacts directory (a name that is no contact cannot be chosen, and is refused
if sent through the API); the flow run's id is the request key, so a retried flow run acts once.
"""
# No `from __future__ import annotations`: Prefect reads these annotations to build the UI forms.
from enum import Enum
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run
from pydantic import Field

from flows import operator_actions
from flows.operator_actions import ActionResult


def _operator_type() -> Any:
    """The contacts as a list to choose from (`李伟 Li Wei (li-wei)`); plain text if the directory
    cannot be read (the action then names the problem)."""
    try:
        from notifications.command import operator_labels

        labels = operator_labels()
    except Exception:  # noqa: BLE001  (a broken contacts file must not hide every form)
        return str
    return Enum("Contact", {label: label for label in labels}, type=str)


Contact = _operator_type()

IncidentId = Annotated[str, Field(pattern=r"^INC-\d{4}-\d{4,}$", min_length=1,
                                  description="The incident, e.g. INC-2026-0001 (its live view is the artifact "
                                              "incident-inc-2026-0001).")]


class Level(str, Enum):
    """I major: everyone takes part, the commander-in-chief leads · II general: a task group and the
    scenario lead · III small: the department concerned handles it."""

    I = "I"  # noqa: E741
    II = "II"
    III = "III"


def _who(value: Any) -> str:
    return value.value if isinstance(value, Enum) else str(value)


def _request_key(action: str) -> str | None:
    run_id = current_flow_run.id
    return f"prefect:{run_id}:{action}" if run_id else None


def _done(result: ActionResult) -> ActionResult:
    get_run_logger().info("%s: %s%s", result.incident_id, result.summary,
                          " (already done by this request)" if result.repeated else "")
    return result


@flow(name="incident-acknowledge", description="Acknowledge an incident: escalation of its pages stops, and who "
                                               "acknowledged is on the timeline.")
def acknowledge(incident_id: IncidentId, by: Contact, comment: str = "") -> ActionResult:  # type: ignore[valid-type]
    """Acknowledge an incident.

    Args:
        incident_id: The incident, e.g. INC-2026-0001.
        by: Who acknowledges (the contacts directory).
        comment: Optional: what you are doing about it.
    """
    return _done(operator_actions.acknowledge(incident_id, by=_who(by), via="ui", comment=comment,
                                              request_key=_request_key("acknowledge")))


@flow(name="incident-resolve", description="Resolve an incident: the service is back. Pages stop escalating.")
def resolve(incident_id: IncidentId, by: Contact, reason: str) -> ActionResult:  # type: ignore[valid-type]
    """Resolve an incident.

    Args:
        incident_id: The incident, e.g. INC-2026-0001.
        by: Who resolves it (the contacts directory).
        reason: How it was resolved, e.g. "failed over to the standby; health checks pass".
    """
    return _done(operator_actions.resolve(incident_id, by=_who(by), via="ui", reason=reason,
                                          request_key=_request_key("resolve")))


@flow(name="incident-close", description="Close an incident, with a reason. Works from any open status (a false "
                                         "alarm left triggered closes too).")
def close(incident_id: IncidentId, by: Contact, reason: str) -> ActionResult:  # type: ignore[valid-type]
    """Close an incident.

    Args:
        incident_id: The incident, e.g. INC-2026-0001.
        by: Who closes it (the contacts directory).
        reason: Why it can be closed, e.g. "resolved and responders stood down" or "false alarm".
    """
    return _done(operator_actions.close(incident_id, by=_who(by), via="ui", reason=reason,
                                        request_key=_request_key("close")))


@flow(name="incident-note", description="Add a note to an incident's timeline.")
def note(incident_id: IncidentId, by: Contact, note: str) -> ActionResult:  # type: ignore[valid-type]
    """Add a note.

    Args:
        incident_id: The incident, e.g. INC-2026-0001.
        by: Who writes the note (the contacts directory).
        note: The note, as it should appear on the timeline.
    """
    return _done(operator_actions.note(incident_id, by=_who(by), via="ui", text=note,
                                       request_key=_request_key("note")))


@flow(name="incident-level", description="Change an incident's response level. The roles the new level engages "
                                         "(level_routing.yaml) that the old one did not are paged at once.")
def change_level(incident_id: IncidentId, by: Contact, level: Level, reason: str) -> ActionResult:  # type: ignore[valid-type]
    """Change the response level.

    Args:
        incident_id: The incident, e.g. INC-2026-0001.
        by: Who decides (the contacts directory).
        level: The new level. I: major, everyone takes part and the commander-in-chief leads. II: general, a task group and the scenario lead. III: small, the department concerned.
        reason: Why, e.g. "10,000 customers affected now".
    """
    return _done(operator_actions.change_level(incident_id, by=_who(by), via="ui", level=level.value,
                                               reason=reason, request_key=_request_key("level")))


@flow(name="incident-handover", description="Hand over command of an incident to another person.")
def hand_over(incident_id: IncidentId, by: Contact, to: Contact, note: str = "") -> ActionResult:  # type: ignore[valid-type]
    """Hand over command.

    Args:
        incident_id: The incident, e.g. INC-2026-0001.
        by: Who hands over (the contacts directory).
        to: Who commands from now on.
        note: Optional: what the new commander should know.
    """
    return _done(operator_actions.hand_over(incident_id, by=_who(by), via="ui", to=_who(to), note=note,
                                            request_key=_request_key("handover")))


@flow(name="incident-rerun", description="Run an incident's runbook again on the same incident (when no run "
                                         "drives it any more).")
def rerun(incident_id: IncidentId, by: Contact, reason: str = "") -> ActionResult:  # type: ignore[valid-type]
    """Run the runbook again.

    Args:
        incident_id: The incident, e.g. INC-2026-0001.
        by: Who starts it (the contacts directory).
        reason: Optional: why it runs again.
    """
    return _done(operator_actions.rerun(incident_id, by=_who(by), via="ui", reason=reason,
                                        request_key=_request_key("rerun")))


@flow(name="incident-resume", description="Resume an incident's run that crashed, failed or was cancelled: the "
                                          "same run goes on where it stopped; what it already did stands.")
def resume(incident_id: IncidentId, by: Contact, reason: str = "") -> ActionResult:  # type: ignore[valid-type]
    """Resume the run.

    Args:
        incident_id: The incident, e.g. INC-2026-0001.
        by: Who resumes it (the contacts directory).
        reason: Optional: why it can go on now.
    """
    return _done(operator_actions.resume(incident_id, by=_who(by), via="ui", reason=reason,
                                         request_key=_request_key("resume")))


@flow(name="incident-cancel-run", description="Cancel the runbook run of an incident. Nobody is paged; the "
                                              "incident stays open and shows as needing attention.")
def cancel_run(incident_id: IncidentId, by: Contact, reason: str) -> ActionResult:  # type: ignore[valid-type]
    """Cancel the run.

    Args:
        incident_id: The incident, e.g. INC-2026-0001.
        by: Who cancels it (the contacts directory).
        reason: Why it must stop.
    """
    return _done(operator_actions.cancel_run(incident_id, by=_who(by), via="ui", reason=reason,
                                             request_key=_request_key("cancel")))


LIFECYCLE_FLOWS = {"acknowledge": acknowledge, "resolve": resolve, "close": close, "note": note,
                   "level": change_level, "handover": hand_over, "rerun": rerun, "resume": resume,
                   "cancel": cancel_run}
