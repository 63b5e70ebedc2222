"""No incident ends silently: raise the alarm when a runbook run fails, aborts or crashes.

This is the one place that does it, for every end that leaves an incident with no run
driving it and nobody told:

- the engine (flows.engine), when a step's `abort` policy or a failed escalation ends the run;
- the flow-run hooks (flows.hooks), when the run fails or crashes outside the steps;
- reconcile (flows.reconcile), when it records a dead run as crashed, or an end Prefect knows
  of and the incident does not.

Who is paged is the runbook's `on_run_failure` (Runbook.run_failure_paging: by default whoever
the response level engages, plus the scenario lead when the runbook declares that role). The
page is the `run_failed` message event (notifications/templates, zh and en): what failed, and
the manual checklist, every step that did not run or did not succeed with its title and
description. It goes through the notify action itself (Apprise per contact, each delivery
recorded, acknowledgement links), run in this process, not as a Prefect task: a hook or a
reconcile has no flow to submit tasks to.

Idempotency: the page is the pseudo-step `run_failed__<flow run id>` of the incident, so its
key is (incident, flow run): a flow retry, the hook after the engine, or a second reconcile of
the same run end finds the recorded page and does not send it again; a new run of the same
incident that fails pages afresh.

The checklist is read from the timeline, the record every caller shares, so the engine, a hook
and a reconcile after a SIGKILL all describe the same run end the same way.

`raise_alarm` never raises: a hook or a reconcile must not fail because paging did. A page that
could not be sent is recorded on the timeline (status `alarm-failed`) and logged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from firebreak.errors import ConfigInvalid, NotFound
from records import incidents
from records.models import EventPhase, Incident, RunState, TimelineEvent
from runbooks.schema import Runbook, RunFailurePaging
from runbooks.templating import render_value
from tasks.base import StepContext
from tasks.catalog import ACTIONS, load_runbook
from tasks.notify import NobodyAcknowledged

ALARM_STEP_PREFIX = "run_failed__"
ALARM_TITLE = "Run-failure alarm"
#: Seconds the page may take when it does not wait for acknowledgements (each contact is paged
#: concurrently, a channel tried twice with a 10 s send timeout, then the next channel).
PAGE_SECONDS = 120.0
DESCRIPTION_LIMIT = 300

_log = logging.getLogger("firebreak.run_failure")


@dataclass(frozen=True)
class StepState:
    """How one runbook step ended in the run, as the timeline records it."""

    id: str
    title: str
    state: str  # succeeded | failed | not_run | skipped | interrupted
    why: str = ""
    error: str | None = None
    output: Any = None
    description: str = ""


@dataclass(frozen=True)
class Alarm:
    """What raising the alarm did."""

    step_id: str
    delivered: int = 0
    failed: int = 0
    reused: bool = False
    error: str | None = None
    unanswered: bool = False  # paged through every escalation tier, and nobody acknowledged
    checklist: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        if self.error:
            return (f"paging the responsible roles FAILED ({self.error}; {self.delivered} page(s) delivered): "
                    "page them by hand")
        if self.unanswered:
            return f"the responsible roles were paged ({self.delivered} page(s) delivered) and nobody acknowledged"
        earlier = " earlier" if self.reused else ""
        return f"the responsible roles were paged{earlier} ({self.delivered} page(s) delivered)"


def alarm_step_id(flow_run_id: str | None, resumes: int = 0) -> str:
    """One alarm per end of a flow run: its retries end it once, but each resume by an operator
    (flows.operator_actions.resume) gives it a new end to page about."""
    return f"{ALARM_STEP_PREFIX}{flow_run_id or 'no-flow-run'}" + (f"__resume-{resumes}" if resumes else "")


def raise_alarm(incident_id: str, *, outcome: RunState | str, reason: str, flow_run_id: str | None,
                runbook: Runbook | str | None = None, wait_for_acknowledgement: bool = False,
                actor: str = "firebreak") -> Alarm:
    """Page the incident's responsible roles that its run `outcome` (failed, crashed) and why.

    runbook: the definition, or its id or path (a hook knows the run's `runbook` parameter);
    the incident's runbook id is tried otherwise, and without any, the level's responders are paged.
    wait_for_acknowledgement: follow `on_run_failure.escalation` (the engine, whose run is still
    alive and holding the incident); hooks and reconcile page the first tier only and say so."""
    step_id = alarm_step_id(flow_run_id)
    try:
        step_id = alarm_step_id(flow_run_id, incidents.resumes_of(incident_id, flow_run_id) if flow_run_id else 0)
        return _raise(incident_id, RunState(outcome).value, reason, flow_run_id, runbook, wait_for_acknowledgement,
                      actor, step_id)
    except Exception as exc:  # noqa: BLE001  never out of a hook or a reconcile: any failure becomes the alarm's recorded error
        error = f"{type(exc).__name__}: {exc}"
        _failed(incident_id, step_id, flow_run_id, actor, error)
        return Alarm(step_id, error=error)


def _raise(incident_id: str, outcome: str, reason: str, flow_run_id: str | None, runbook_ref: Runbook | str | None,
           wait: bool, actor: str, step_id: str) -> Alarm:
    incident = incidents.get_incident(incident_id)
    runbook = _runbook(runbook_ref, incident)
    paging = runbook.run_failure_paging() if runbook else RunFailurePaging(by_level=True)
    states = step_states(incident, runbook, flow_run_id)
    todo = [s for s in states if s.state != "succeeded"]

    escalation, timeout, note = _escalation(paging, wait)
    # No run generation (a hook or reconcile holds no lease): the step id names the flow run already,
    # so the engine, a hook and reconcile all key the same run end alike.
    context = StepContext(incident_id=incident_id, incident_uid=incident.uid,
                          runbook_id=runbook.id if runbook else incident.runbook_id,
                          step_id=step_id, step_title=ALARM_TITLE, action="notify", level=incident.level,
                          drill=incident.drill, timeout=timeout, flow_run_id=flow_run_id)
    already = incidents.succeeded_outcome(incident_id, context.idempotency_key) is not None
    audience = ", ".join(paging.notify + (["the responders of level " + incident.level] if paging.by_level else []))
    if not already:
        incidents.append_event(
            incident_id, phase=EventPhase.note, status="alarm", actor=actor, step_id=step_id, flow_run_id=flow_run_id,
            summary=f"Run {outcome}; incident still {incident.status}: paging {audience}"
                    f" with {len(todo)} step(s) to do by hand{note}",
            data={"outcome": outcome, "reason": reason, "to": paging.notify, "by_level": paging.by_level,
                  "escalation": escalation, "checklist": [s.id for s in todo]})
    arguments = {
        "to": paging.notify, "by_level": paging.by_level, "event": "run_failed", "escalation": escalation,
        "title": runbook.title if runbook else incident.title, "message": reason or f"the runbook run {outcome}",
        "details": {
            "outcome": outcome, "status": incident.status,
            "runbook_title_zh": (runbook.title_zh if runbook else None) or "",
            "failed": [{"id": s.id, "title": s.title, "title_zh": _zh(runbook, s.id, "title"), "error": s.error or ""}
                       for s in states if s.state == "failed"],
            "checklist": [{"id": s.id, "title": s.title, "description": s.description, "state": s.state,
                           "why": s.why, "title_zh": _zh(runbook, s.id, "title"),
                           "description_zh": _zh(runbook, s.id, "description")} for s in todo],
        },
    }
    checklist = tuple(s.id for s in todo)
    try:
        ACTIONS["notify"].run_in_flow(context, arguments)
    except NobodyAcknowledged as exc:  # every tier was paged: delivered, just not answered
        delivered, failed = _pages(incident_id, step_id)
        incidents.append_event(incident_id, phase=EventPhase.note, status="alarm-unanswered", actor=actor,
                               step_id=step_id, flow_run_id=flow_run_id, error=str(exc),
                               summary="Nobody acknowledged the run-failure alarm through its escalation policy")
        _logger().error("%s: nobody acknowledged the run-failure alarm: %s", incident_id, exc)
        return Alarm(step_id, delivered, failed, unanswered=True, checklist=checklist)
    except Exception as exc:  # noqa: BLE001  recorded as the alarm step's failed outcome by the action; say what it means (a hook must not raise)
        delivered, failed = _pages(incident_id, step_id)
        error = f"{type(exc).__name__}: {exc}"
        _failed(incident_id, step_id, flow_run_id, actor, error)
        return Alarm(step_id, delivered, failed, error=error, checklist=checklist)
    delivered, failed = _pages(incident_id, step_id)
    _logger().warning("%s: run %s; %s paged (%s page(s) delivered%s)", incident_id, outcome, audience, delivered,
                      " earlier" if already else "")
    return Alarm(step_id, delivered, failed, reused=already, checklist=checklist)


def _pages(incident_id: str, step_id: str) -> tuple[int, int]:
    """(delivered, not delivered) pages of the alarm, from the delivery records (a page is
    delivered if any of its channels delivered it)."""
    pages: dict[str, bool] = {}
    for row in incidents.notifications(incident_id):
        if row.step_id == step_id:
            key = row.page_key or row.idempotency_key
            pages[key] = pages.get(key, False) or row.status == "delivered"
    delivered = sum(pages.values())
    return delivered, len(pages) - delivered


def _escalation(paging: RunFailurePaging, wait: bool) -> tuple[str | None, float, str]:
    """(policy to follow, the page's timeout, a note for the timeline)."""
    if paging.escalation is None:
        return None, PAGE_SECONDS, ""
    if not wait:
        return None, PAGE_SECONDS, (f"; escalation policy {paging.escalation!r} is not followed (the run has ended, "
                                    "so nothing waits for an acknowledgement): if nobody answers, escalate by hand")
    from firebreak.settings import get_settings
    from notifications.escalation import load_policies

    policy = load_policies(get_settings().escalation_file).get(paging.escalation)
    if policy is None:
        return None, PAGE_SECONDS, f"; unknown escalation policy {paging.escalation!r}: not followed"
    return paging.escalation, policy.total_seconds() + PAGE_SECONDS, f"; escalating by policy {paging.escalation!r}"


def _runbook(ref: Runbook | str | None, incident: Incident) -> Runbook | None:
    if isinstance(ref, Runbook):
        return ref
    for candidate in (ref, incident.runbook_id):
        if not candidate:
            continue
        try:
            runbook = load_runbook(candidate).runbook
        except (ConfigInvalid, NotFound):  # RunbookInvalid, RunbookNotFound: removed or broken since the run
            continue
        if runbook.id == incident.runbook_id:
            return runbook
    return None  # removed or changed since the run: the timeline still says which steps ran


def step_states(incident: Incident, runbook: Runbook | None, flow_run_id: str | None) -> list[StepState]:
    """How each step of the run ended, from the timeline (this flow run's events only, when known),
    in runbook order; steps never started are `not_run`, started and never ended `interrupted`."""
    by_step: dict[str, list[TimelineEvent]] = {}
    for event in incidents.events(incident.id):
        if not event.step_id or event.step_id.endswith("__escalation") or event.step_id.startswith(ALARM_STEP_PREFIX):
            continue  # escalations of failed steps and alarms are not runbook steps
        if flow_run_id is not None and event.flow_run_id != flow_run_id:
            continue
        by_step.setdefault(event.step_id, []).append(event)
    steps = [(s.id, s.display_title, s.description or "") for s in runbook.steps] if runbook else \
        [(step_id, step_id.replace("_", " "), "") for step_id in by_step]
    ended: list[StepState] = []
    for step_id, title, description in steps:
        state, why, error, output = "not_run", "", None, None
        for event in by_step.get(step_id, []):
            if event.phase == EventPhase.intent.value:
                state, why, error = "interrupted", "", None
            elif event.phase == EventPhase.outcome.value:
                state = "succeeded" if event.status == "succeeded" else "failed"
                error = event.error if state == "failed" else None
                output = (event.data or {}).get("output")
            elif event.status == "reused":
                state, output = "succeeded", (event.data or {}).get("output")
            elif event.status == "skipped":
                why = event.summary.partition(": skipped (")[2].removesuffix(")")
                state = "not_run" if why.startswith("run aborted") else "skipped"
        ended.append(StepState(step_id, title, state, why, error, output, description))
    if runbook is None:
        return ended
    context = _template_context(incident, runbook, ended)
    described = []
    for s in ended:
        if s.state == "succeeded":
            described.append(s)
            continue
        # The author's words for a person, then what the action would have done (e.g. `POST …/failover`).
        action = _describe(runbook, s.id, context)
        text = f"{s.description} ({action})" if s.description and action else s.description or action
        text = text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"
        described.append(StepState(s.id, s.title, s.state, s.why, s.error, s.output, text))
    return described


def _zh(runbook: Runbook | None, step_id: str, field: str) -> str:
    """A step's Chinese title or description, for the zh page ("" where the runbook has none)."""
    try:
        step = runbook.step(step_id) if runbook else None
    except KeyError:
        return ""
    return (getattr(step, f"{field}_zh", None) or "") if step else ""


def _template_context(incident: Incident, runbook: Runbook, states: list[StepState]) -> dict[str, Any]:
    engine_status = {"succeeded": "succeeded", "failed": "failed", "skipped": "skipped"}
    return {
        "params": incident.parameters or {}, "level": incident.level,
        "incident": {"id": incident.id, "level": incident.level, "drill": incident.drill, "title": incident.title,
                     "summary": incident.summary or ""},
        "runbook": {"id": runbook.id, "version": runbook.version, "title": runbook.title},
        "steps": {s.id: {"status": engine_status[s.state], "output": s.output, "error": s.error}
                  for s in states if s.state in engine_status},
    }


def _describe(runbook: Runbook, step_id: str, context: dict[str, Any]) -> str:
    """What the step would have done, in its action's words (e.g. `POST http://…/failover`), as far
    as its arguments can be filled in from what the run recorded; empty if they cannot."""
    step = runbook.step(step_id)
    spec = ACTIONS.get(step.action)
    if spec is None:
        return ""
    try:
        text = spec.describe(spec.input_model.model_validate(render_value(step.with_, context)))
    except Exception:  # noqa: BLE001  best-effort text for the alarm: templates on recorded data may fail any way; empty says so
        return ""
    return " ".join(str(text).split())


def _failed(incident_id: str, step_id: str, flow_run_id: str | None, actor: str, error: str) -> None:
    _logger().error("%s: the run-failure alarm could not page the responsible roles: %s", incident_id, error)
    try:
        incidents.append_event(incident_id, phase=EventPhase.note, status="alarm-failed", actor=actor,
                               step_id=step_id, flow_run_id=flow_run_id, error=error,
                               summary="The run-failure alarm could not page the responsible roles: page them by hand")
    except Exception:  # noqa: BLE001  already the failure path of a hook that must never raise; logged instead
        _logger().exception("%s: could not record the failed run-failure alarm either", incident_id)


def _logger() -> Any:
    try:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        return get_run_logger()
    except MissingContextError:  # outside a flow run (reconcile from the CLI, a hook after the run context ended)
        return _log
