"""What an operator can do to an incident by hand: one function per lifecycle action.

    acknowledge · resolve · close (with a reason) · note · change the level · hand over command ·
    run the runbook again · resume a run that died · cancel the run

The three ways in call these and nothing else: the CLI (`firebreak incident <action> INC-… --by …`,
firebreak/cli/commands/incident.py), the Prefect deployments with forms (flows/lifecycle.py,
`incident-<action>`) and the intake's authenticated `POST /v1/incidents/{id}/{action}`
(intake/operator_http.py). So every path checks, records and tells alike:

- **Who:** `by` must be a person in the contacts directory (notifications.command.find_operator:
  contact id, name, or the forms' `name (id)`); anything else is refused before anything changes.
- **Recorded:** every action is on the incident's hash-chained timeline with who did it (actor
  `<via>:<contact id>`, the name in the summary) and stored as an operator_actions row
  (records.operator_actions). A `request_key` (a lifecycle flow run's id, an API client's
  `Idempotency-Key`) makes a request that arrives twice act once: the repeat gets the first answer.
- **Live view:** afterwards the incident's live view in Prefect is published (reports.live_view);
  a run still driving the incident also picks the change up within a second.

Changing the level re-routes paging by notifications/level_routing.yaml: the roles the new level
engages that the old one did not are paged at once (the pseudo-step `level_change__<event>`,
recorded like any page). A run still going reads the new level before its next step. Re-running
creates a flow run of the runbook's deployment on the incident (the deployments `firebreak up`
serves); resuming puts the incident's ended flow run back to Scheduled, so the same run goes on
where it stopped (its executor or deployment runs it again); cancelling asks Prefect to cancel the incident's flow run (Cancelling), which the runner
or worker executing it carries out (a run executed in-process notices it itself: flows.engine),
and the run's end is then recorded by the flow-run hooks.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from firebreak.errors import Conflict, InputInvalid, NotFound
from notifications.acknowledgement.service import acknowledge_incident
from notifications.command import commander_of, find_operator
from notifications.config import load_config
from notifications.contacts import Contact
from records import incidents, operator_actions, run_outbox
from records.models import EventPhase, Incident, IncidentStatus, RunState, utcnow
from reports.live_view import publish_live_view
from runbooks.schema import Level

LOGGER = logging.getLogger("firebreak.operator_actions")

#: Runbooks with an entry flow and deployment of their own; any other runs through `run-runbook`.
SEED_DEPLOYMENTS = frozenset({"system-outage", "network-congestion", "staffing-shortage"})
LEVEL_PAGE_SECONDS = 120.0


class ActionRefused(InputInvalid, ValueError):
    """The action is not possible as asked (no reason to close, an unknown level, …)."""


class ActionConflict(Conflict, RuntimeError):
    """The incident is not in a state that allows the action (a run still drives it, no run to cancel…)."""


class DeploymentMissing(NotFound, LookupError):
    """The runbook's deployment is not on the Prefect server (nothing serves the deployments)."""


class ActionResult(BaseModel):
    incident_id: str
    action: str
    by: str  # contact id
    by_name: str
    via: str
    at: datetime
    summary: str
    status: str
    level: str
    details: dict[str, Any] = {}
    #: True when the same request (request_key) was already done: nothing was done again.
    repeated: bool = False


def _act(action: str, incident_id: str, by: str, via: str, reason: str | None, request_key: str | None,
         body: Callable[[Incident, Contact, str], tuple[str, dict[str, Any]]]) -> ActionResult:
    if via not in operator_actions.VIA:
        raise ActionRefused(f"unknown path {via!r}; expected one of {', '.join(operator_actions.VIA)}")
    operator = find_operator(by)  # UnknownOperator before anything is looked up or changed
    earlier = operator_actions.done_before(request_key)
    if earlier is not None:
        return ActionResult.model_validate({**earlier.result, "repeated": True})
    incident = incidents.get_incident(incident_id)  # IncidentNotFound
    actor = f"{via}:{operator.id}"
    summary, details = body(incident, operator, actor)
    now = incidents.get_incident(incident.id)
    result = ActionResult(incident_id=incident.id, action=action, by=operator.id, by_name=operator.name, via=via,
                          at=utcnow(), summary=summary, status=now.status, level=now.level, details=details)
    operator_actions.record(incident.id, action=action, by=operator.id, via=via, reason=reason,
                            result=result.model_dump(mode="json"), request_key=request_key)
    publish_live_view(incident.id)  # never raises
    return result


def _text(value: str | None, what: str, *, required: bool = False, limit: int = 2000) -> str:
    text = " ".join((value or "").split()) if what != "note" else (value or "").strip()
    if required and not text:
        raise ActionRefused(f"{what} is required")
    if len(text) > limit:
        raise ActionRefused(f"{what} is longer than {limit} characters")
    return text


# --- the actions ---------------------------------------------------------------------------------


def acknowledge(incident_id: str, *, by: str, via: str, comment: str | None = None,
                request_key: str | None = None) -> ActionResult:
    """Acknowledge: stops escalation of the incident's pages (notifications.acknowledgement)."""
    comment = _text(comment, "comment")

    def body(incident: Incident, operator: Contact, _actor: str) -> tuple[str, dict[str, Any]]:
        result = acknowledge_incident(incident.id, by=operator.name, via=via, comment=comment or None,
                                      contact_id=operator.id)
        if result.first:
            return f"Acknowledged by {operator.name}; escalation stops", {"first": True}
        return (f"Acknowledged again by {operator.name}; already acknowledged by {result.first_by} via "
                f"{result.first_via}", {"first": False, "first_by": result.first_by})

    return _act("acknowledge", incident_id, by, via, comment or None, request_key, body)


def resolve(incident_id: str, *, by: str, via: str, reason: str, request_key: str | None = None) -> ActionResult:
    """Resolve: the service is restored. Milestones nobody reached are left empty (not implied)."""
    reason = _text(reason, "reason", required=True)

    def body(incident: Incident, operator: Contact, actor: str) -> tuple[str, dict[str, Any]]:
        before = incident.status
        if before == IncidentStatus.resolved.value:
            raise ActionConflict(f"{incident.id} is already resolved")
        incidents.transition(incident.id, IncidentStatus.resolved, actor=actor, imply=False,
                             reason=f"resolved by {operator.name}: {reason}",
                             data={"by": operator.id, "via": via, "reason": reason})
        return f"Resolved by {operator.name}: {reason}", {"from": before}

    return _act("resolve", incident_id, by, via, reason, request_key, body)


def close(incident_id: str, *, by: str, via: str, reason: str, request_key: str | None = None) -> ActionResult:
    """Close, with a reason (from any open status: a false alarm left `triggered` closes too)."""
    reason = _text(reason, "reason", required=True)

    def body(incident: Incident, operator: Contact, actor: str) -> tuple[str, dict[str, Any]]:
        before = incident.status
        if before == IncidentStatus.closed.value:
            raise ActionConflict(f"{incident.id} is already closed")
        incidents.transition(incident.id, IncidentStatus.closed, actor=actor, imply=False,
                             reason=f"closed by {operator.name}: {reason}",
                             data={"by": operator.id, "via": via, "reason": reason})
        still = incident.run_state in (RunState.running.value, RunState.pending.value)
        return (f"Closed by {operator.name}: {reason}" + (" (its run is still going; cancel it if it should stop)"
                                                          if still else ""), {"from": before})

    return _act("close", incident_id, by, via, reason, request_key, body)


def note(incident_id: str, *, by: str, via: str, text: str, request_key: str | None = None) -> ActionResult:
    """Add a note to the timeline."""
    text = _text(text, "note", required=True, limit=4000)

    def body(incident: Incident, operator: Contact, actor: str) -> tuple[str, dict[str, Any]]:
        event = incidents.append_event(incident.id, phase=EventPhase.note, status="operator-note", actor=actor,
                                       summary=f"Note by {operator.name}: {text}",
                                       data={"by": operator.id, "via": via, "text": text})
        return f"Note added by {operator.name}", {"seq": event.seq}

    return _act("note", incident_id, by, via, text, request_key, body)


def change_level(incident_id: str, *, by: str, via: str, level: str, reason: str,
                 request_key: str | None = None) -> ActionResult:
    """Set the response level; page the roles the new level engages that the old one did not."""
    try:
        wanted = Level(level).value
    except ValueError:
        raise ActionRefused(f"level must be I, II or III, got {level!r}") from None
    reason = _text(reason, "reason", required=True)

    def body(incident: Incident, operator: Contact, actor: str) -> tuple[str, dict[str, Any]]:
        if incident.status == IncidentStatus.closed.value:
            raise ActionConflict(f"{incident.id} is closed; its level no longer changes")
        changed, previous = incidents.change_level(incident.id, wanted, actor=actor,
                                                   reason=f"changed by {operator.name}: {reason}",
                                                   flow_run_id=incident.flow_run_id,
                                                   data={"by": operator.id, "via": via, "reason": reason})
        if previous == wanted:
            raise ActionConflict(f"{incident.id} is already level {wanted}")
        routing = load_config().routing
        newly = routing.newly_engaged(incident.runbook_id, previous, wanted)
        details: dict[str, Any] = {"from": previous, "to": wanted, "paged_roles": newly}
        if not newly:
            return (f"Level {previous} → {wanted} by {operator.name}: {reason}; nobody newly engaged", details)
        details |= _page_newly_engaged(changed, previous, wanted, newly, operator, reason, actor)
        paged = f"paged {', '.join(newly)}" + (f" ({details['page_error']})" if details.get("page_error") else "")
        return f"Level {previous} → {wanted} by {operator.name}: {reason}; {paged}", details

    return _act("level", incident_id, by, via, reason, request_key, body)


def _page_newly_engaged(incident: Incident, previous: str, level: str, roles: list[str], operator: Contact,
                        reason: str, actor: str) -> dict[str, Any]:
    """Page `roles` through the notify action (a delivery per contact channel, recorded, with an
    acknowledgement link), as the pseudo-step `level_change__<seq>` of the level-change event."""
    from tasks.base import StepContext
    from tasks.catalog import ACTIONS

    seq = incidents.last_seq(incident.id)
    context = StepContext(incident_id=incident.id, incident_uid=incident.uid, runbook_id=incident.runbook_id,
                          step_id=f"level_change__{seq}", step_title=f"Level {previous} → {level}",
                          action="notify", level=level, drill=incident.drill, timeout=LEVEL_PAGE_SECONDS,
                          flow_run_id=incident.flow_run_id)
    arguments = {
        "to": roles, "event": "triggered",
        "title": f"Now level {level}: {incident.title}", "title_zh": f"现为 {level} 级：{incident.title}",
        "message": f"{operator.name} raised {incident.id} from level {previous} to {level}: {reason}. "
                   f"The new level engages you.",
        "message_zh": f"{operator.name} 已将 {incident.id} 从 {previous} 级调整为 {level} 级：{reason}。"
                      f"新的响应级别需要您参与。",
    }
    try:
        output = ACTIONS["notify"].run_in_flow(context, arguments)
    except Exception as exc:  # noqa: BLE001  (the level changed; that nobody could be paged is recorded)
        error = f"{type(exc).__name__}: {exc}"
        incidents.append_event(incident.id, phase=EventPhase.note, status="level-page-failed", actor=actor,
                               step_id=context.step_id, error=error, flow_run_id=incident.flow_run_id,
                               summary=f"The roles level {level} newly engages ({', '.join(roles)}) could not "
                                       "all be paged: page them by hand")
        return {"page_error": error}
    return {"delivered": output.get("delivered", 0), "failed": output.get("failed", 0)}


def _page_new_commander(incident: Incident, previous: str, successor: Contact, operator: Contact,
                        note: str | None, actor: str) -> dict[str, Any]:
    """Page the contact who now commands, through the notify action (recorded, with an acknowledgement
    link), as the pseudo-step `handover__<seq>` of the handover event."""
    from tasks.base import StepContext
    from tasks.catalog import ACTIONS

    seq = incidents.last_seq(incident.id)
    context = StepContext(incident_id=incident.id, incident_uid=incident.uid, runbook_id=incident.runbook_id,
                          step_id=f"handover__{seq}", step_title=f"Command handed to {successor.name}",
                          action="notify", level=incident.level, drill=incident.drill, timeout=LEVEL_PAGE_SECONDS,
                          flow_run_id=incident.flow_run_id)
    arguments = {
        "contacts": [successor.id], "event": "status_update",
        "title": f"You now command {incident.id}: {incident.title}",
        "title_zh": f"您现在指挥 {incident.id}：{incident.title}",
        "message": f"{operator.name} handed command of {incident.id} (level {incident.level}) from {previous} to you"
                   + (f": {note}" if note else "."),
        "message_zh": f"{operator.name} 已将 {incident.id}（{incident.level} 级）的指挥权从 {previous} 移交给您"
                      + (f"：{note}" if note else "。"),
    }
    try:
        output = ACTIONS["notify"].run_in_flow(context, arguments)
    except Exception as exc:  # noqa: BLE001  (command changed hands; that the successor was not told is recorded)
        error = f"{type(exc).__name__}: {exc}"
        incidents.append_event(incident.id, phase=EventPhase.note, status="handover-page-failed", actor=actor,
                               step_id=context.step_id, error=error, flow_run_id=incident.flow_run_id,
                               summary=f"{successor.name} now commands but could not be paged: tell them by hand")
        return {"page_error": error}
    return {"delivered": output.get("delivered", 0), "failed": output.get("failed", 0)}


def hand_over(incident_id: str, *, by: str, via: str, to: str, note: str | None = None,
              request_key: str | None = None) -> ActionResult:
    """Hand command of the incident to another contact."""
    note = _text(note, "note")

    def body(incident: Incident, operator: Contact, actor: str) -> tuple[str, dict[str, Any]]:
        successor = find_operator(to)
        current = commander_of(incident)
        if current.contact_id == successor.id:
            raise ActionConflict(f"{successor.name} already commands {incident.id}")
        summary = (f"Command handed over from {current.name} to {successor.name} by {operator.name}"
                   + (f": {note}" if note else ""))
        changed, _previous = incidents.hand_over_command(incident.id, successor.id, actor=actor, summary=summary,
                                              data={"by": operator.id, "via": via, "previous": current.contact_id,
                                                    "note": note or None})
        details: dict[str, Any] = {"from": current.contact_id, "to": successor.id}
        # The new commander learns it from a page, not from the timeline (a handover nobody was told of
        # leaves the incident without a commander who knows).
        details |= _page_new_commander(changed, current.name, successor, operator, note, actor)
        paged = "paged" if not details.get("page_error") else f"NOT paged ({details['page_error']})"
        return f"{summary}; {successor.name} {paged}", details

    return _act("handover", incident_id, by, via, note or None, request_key, body)


def rerun(incident_id: str, *, by: str, via: str, reason: str | None = None, request_key: str | None = None,
          runbook: str | None = None) -> ActionResult:
    """Run the incident's runbook (or `runbook`) again on it, from its Prefect deployment."""
    reason = _text(reason, "reason")

    def body(incident: Incident, operator: Contact, actor: str) -> tuple[str, dict[str, Any]]:
        if incident.run_state in (RunState.running.value, RunState.pending.value):
            raise ActionConflict(f"a run still drives {incident.id} (run {incident.run_state}, flow run "
                                 f"{incident.flow_run_id}); cancel it first")
        if incident.status == IncidentStatus.closed.value:
            raise ActionConflict(f"{incident.id} is closed; open a new incident instead")
        chosen = runbook or incident.runbook_id
        flow_run = _create_run(incident, chosen, operator)
        summary = (f"Runbook {chosen} run again by {operator.name}" + (f": {reason}" if reason else "")
                   + f" (flow run {flow_run['id']})")
        incidents.append_event(incident.id, phase=EventPhase.note, status="rerun-requested", actor=actor,
                               summary=summary, data={"by": operator.id, "via": via, "runbook": chosen,
                                                      "requested_flow_run": flow_run["id"]})
        return summary, {"flow_run_id": flow_run["id"], "deployment": flow_run["deployment"],
                         "flow_run_url": flow_run["url"]}

    return _act("rerun", incident_id, by, via, reason or None, request_key, body)


def resume(incident_id: str, *, by: str, via: str, reason: str | None = None,
           request_key: str | None = None) -> ActionResult:
    """Resume the incident's run that ended without finishing (crashed, failed, cancelled): the same
    flow run goes on, so what it already did stands (its pages, its side effects, its reads and its
    approvals) and only the steps it had not finished run; `rerun` instead starts a new run afresh."""
    reason = _text(reason, "reason")

    def body(incident: Incident, operator: Contact, actor: str) -> tuple[str, dict[str, Any]]:
        if incident.status == IncidentStatus.closed.value:
            raise ActionConflict(f"{incident.id} is closed; open a new incident instead")
        if not incident.flow_run_id:
            raise ActionConflict(f"{incident.id} has no run to resume")
        if incident.run_state in (RunState.running.value, RunState.pending.value):
            raise ActionConflict(f"a run still drives {incident.id} (run {incident.run_state}, flow run "
                                 f"{incident.flow_run_id}); if its process died, reconcile records that within a "
                                 "minute and then it can be resumed")
        if incident.run_state == RunState.completed.value:
            raise ActionConflict(f"the run of {incident.id} completed: it took every step it could; `rerun` runs "
                                 "the runbook afresh")
        how = _resume_in_prefect(incident, f"resumed by {operator.name}" + (f": {reason}" if reason else ""))
        summary = (f"Run resumed by {operator.name}" + (f": {reason}" if reason else "")
                   + f" (flow run {incident.flow_run_id}, was {incident.run_state}; {how})")
        incidents.append_event(incident.id, phase=EventPhase.note, status="resume-requested", actor=actor,
                               summary=summary, flow_run_id=incident.flow_run_id,
                               data={"by": operator.id, "via": via, "was": incident.run_state})
        return summary, {"flow_run_id": incident.flow_run_id, "was": incident.run_state, "runs_on": how}

    return _act("resume", incident_id, by, via, reason or None, request_key, body)


def _resume_in_prefect(incident: Incident, message: str) -> str:
    """Put the ended flow run back to Scheduled (AwaitingRetry, what Prefect's own Retry does) and
    hand it to whoever runs it: the outbox's executors if it came from there, else its deployment's
    runner or worker. Returns which."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.exceptions import ObjectNotFound
    from prefect.states import AwaitingRetry

    assert incident.flow_run_id is not None
    with get_client(sync_client=True) as client:
        try:
            flow_run = client.read_flow_run(UUID(incident.flow_run_id))
        except ObjectNotFound:
            raise ActionConflict(f"flow run {incident.flow_run_id} is not on this Prefect server; `rerun` "
                                 "starts a new run") from None
        if flow_run.state is None or not flow_run.state.is_final():
            state = flow_run.state.type.value if flow_run.state else "UNKNOWN"
            raise ActionConflict(f"Prefect still shows flow run {incident.flow_run_id} {state}; reconcile judges "
                                 "it first (a dead run within a minute)")
        from_outbox = run_outbox.is_resumable(incident.id, incident.flow_run_id)
        if not from_outbox and flow_run.deployment_id is None:
            raise ActionConflict(f"flow run {incident.flow_run_id} was started directly (no deployment, not from "
                                 "the outbox): nothing here can run it again; `rerun` starts a new run")
        result: Any = client.set_flow_run_state(flow_run.id, AwaitingRetry(message=message), force=True)
        if result.status != SetStateStatus.ACCEPT:
            raise ActionConflict(f"Prefect did not accept resuming flow run {incident.flow_run_id} "
                                 f"({result.status.value})")
    # After Prefect shows it Scheduled: an executor claiming the row sooner would find it ended.
    if from_outbox and run_outbox.requeue_for_resume(incident.id, incident.flow_run_id):
        return "queued for the run executors"
    return "its deployment's runner or worker picks it up"


def _create_run(incident: Incident, runbook: str, operator: Contact) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from tasks.notify import run_link

    seed = runbook in SEED_DEPLOYMENTS
    name = f"{runbook}/{runbook}" if seed else "run-runbook/run-runbook"
    common = {"level": incident.level, "summary": incident.summary or "", "drill": incident.drill,
              "incident_id": incident.id, "source": "operator"}
    parameters = ({"parameters": incident.parameters or {}, **common} if seed
                  else {"runbook": runbook, "parameters": incident.parameters or {}, **common})
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise DeploymentMissing(f"deployment {name} is not on the Prefect server: `firebreak up` serves the "
                                    "deployments (or `prefect deploy --all` with a worker)") from None
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, tags=["firebreak", "rerun", incident.id],
            name=f"{incident.id} · {runbook} (again, by {operator.id})")
    return {"id": str(flow_run.id), "deployment": name, "url": run_link(str(flow_run.id))}


def cancel_run(incident_id: str, *, by: str, via: str, reason: str, request_key: str | None = None) -> ActionResult:
    """Ask Prefect to cancel the incident's flow run (Cancelling): its runner or worker stops it, and the
    flow-run hooks record the run cancelled (a cancellation pages nobody; the incident needs attention)."""
    reason = _text(reason, "reason", required=True)

    def body(incident: Incident, operator: Contact, actor: str) -> tuple[str, dict[str, Any]]:
        if not incident.flow_run_id:
            raise ActionConflict(f"{incident.id} has no run to cancel")
        state = _cancel(incident.flow_run_id, f"cancelled by {operator.name}: {reason}")
        summary = f"Run cancelled by {operator.name}: {reason} (flow run {incident.flow_run_id} was {state})"
        incidents.append_event(incident.id, phase=EventPhase.note, status="run-cancel-requested", actor=actor,
                               summary=summary, flow_run_id=incident.flow_run_id,
                               data={"by": operator.id, "via": via, "reason": reason, "prefect_state": state})
        return summary, {"flow_run_id": incident.flow_run_id, "prefect_state": state}

    return _act("cancel", incident_id, by, via, reason, request_key, body)


def _cancel(flow_run_id: str, message: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Cancelled, Cancelling

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
        state = flow_run.state.type.value if flow_run.state else "UNKNOWN"
        if flow_run.state is not None and flow_run.state.is_final():
            raise ActionConflict(f"flow run {flow_run_id} already ended ({state})")
        # Not started yet: nothing runs it, so it is cancelled at once; else its runner stops it.
        target: State[Any] = Cancelled(message=message) if state in ("SCHEDULED", "PENDING") else Cancelling(message=message)
        result = client.set_flow_run_state(flow_run_id, target, force=True)
        if result.status != SetStateStatus.ACCEPT:
            raise ActionConflict(f"Prefect did not accept cancelling flow run {flow_run_id} ({result.status.value})")
    return state


#: The actions by the name the surfaces use (CLI subcommand, deployment `incident-<name>`, API path).
ACTIONS: dict[str, Callable[..., ActionResult]] = {
    "acknowledge": acknowledge, "resolve": resolve, "close": close, "note": note, "level": change_level,
    "handover": hand_over, "rerun": rerun, "resume": resume, "cancel": cancel_run,
}
