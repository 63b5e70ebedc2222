"""`approval`: a gate where a person decides before a risky step, in the Prefect UI.

The flow pauses (`pause_flow_run(wait_for_input=…)`); the UI shows what is
about to happen and why, and a form: approve or reject, a comment, and the
approver's name (the open-source Prefect server has no user accounts, so the
approver names themself; the name, time and comment go on the timeline).
A resume through the API (`resume_flow_run(flow_run_id, run_input={...})`)
works the same way.

If nobody answers within `timeout` seconds, the step's `on_timeout` policy
applies: `proceed` (carry on, recorded as not decided), `abort` (the step
fails; with the step's default `on_failure: abort` the run stops), or
`escalate` (page `escalate_to`, then wait one more `timeout`; still nothing
means abort).

Drills run unattended (`make demo`), so a gate's `in_drill` policy says what a
drill does: `ask` (pause as usual), `approve` or `reject` (decided at once and
recorded as decided by the drill policy).
"""
from __future__ import annotations

import re
import time
from typing import Any, Literal

from prefect.input import RunInput  # what makes the Prefect UI show a form for the paused run
from pydantic import BaseModel, ConfigDict, Field, model_validator

from firebreak.errors import StepFailed
from records import incidents
from records.models import EventPhase, utcnow
from tasks.base import Attempt, StepContext, action
from tasks.notify import notify as notify_action


class ApprovalInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, description="what is about to happen if approved")
    reason: str = Field(min_length=1, description="why it is proposed")
    timeout: int = Field(default=900, ge=1, le=7 * 86400, description="seconds to wait for a decision")
    on_timeout: Literal["proceed", "abort", "escalate"] = "abort"
    escalate_to: list[str] = Field(default_factory=list, description="roles paged when on_timeout is escalate")
    in_drill: Literal["ask", "approve", "reject"] = "ask"

    @model_validator(mode="after")
    def _escalation_target(self) -> ApprovalInput:
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise ValueError("on_timeout 'escalate' needs escalate_to: the roles to page")
        return self


class ApprovalDecision(RunInput):
    """The operator's answer."""

    decision: Literal["approve", "reject"] = Field(description="approve: go ahead; reject: do not")
    approver: str = Field(min_length=1, max_length=120, description="your name (recorded on the incident timeline)")
    comment: str = Field(default="", max_length=2000, description="why (recorded on the incident timeline)")


class ApprovalOutput(BaseModel):
    decision: Literal["approved", "rejected", "proceeded-on-timeout"]
    approver: str
    comment: str
    decided_at: str
    waited_seconds: float


class ApprovalRejected(StepFailed, RuntimeError):
    """The approver (or a drill's policy) rejected the action."""


class ApprovalTimedOut(StepFailed, TimeoutError):
    """No decision came within the gate's timeout (and its escalation, if any); the step is refused."""


def _describe(inp: ApprovalInput) -> str:
    return f"ask for approval: {inp.action} (timeout {inp.timeout}s, then {inp.on_timeout})"


def _prompt(ctx: StepContext, inp: ApprovalInput, escalated: bool) -> str:
    policy = {"proceed": "the runbook proceeds without a decision",
              "abort": "the step is refused",
              "escalate": f"{', '.join(inp.escalate_to)} are paged and it waits once more"}[inp.on_timeout]
    return "\n\n".join([
        f"### Approval needed: {ctx.step_title}" + (" (escalated)" if escalated else ""),
        f"Incident **{ctx.incident_id}**, level **{ctx.level}**, runbook `{ctx.runbook_id}`"
        + (" — **DRILL**" if ctx.drill else ""),
        f"**About to happen:** {inp.action}",
        f"**Why:** {inp.reason}",
        f"If nobody answers within {inp.timeout} s, {'the step is refused' if escalated else policy}.",
    ])


def _record(ctx: StepContext, attempt: Attempt, status: str, summary: str, actor: str, **data: Any) -> None:
    incidents.append_event(ctx.incident_id, phase=EventPhase.note, status=status, actor=actor, summary=summary,
                           step_id=ctx.step_id, action="approval", attempt=attempt.number,
                           flow_run_id=ctx.flow_run_id, data=data)


def _decided(ctx: StepContext, attempt: Attempt, answer: Any, started: float) -> ApprovalOutput:
    verb = "approved" if answer.decision == "approve" else "rejected"
    at = utcnow().isoformat()
    _record(ctx, attempt, verb, f"{ctx.step_title}: {verb} by {answer.approver}"
            + (f": {answer.comment}" if answer.comment else ""), actor=answer.approver[:120],
            decision=verb, approver=answer.approver, comment=answer.comment, decided_at=at)
    if verb == "rejected":
        raise ApprovalRejected(f"rejected by {answer.approver}" + (f": {answer.comment}" if answer.comment else ""))
    return ApprovalOutput(decision="approved", approver=answer.approver, comment=answer.comment, decided_at=at,
                          waited_seconds=round(time.monotonic() - started, 3))


def _wait(ctx: StepContext, inp: ApprovalInput, escalated: bool) -> Any:
    """Pause this flow run until someone answers; None on timeout."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    form = ApprovalDecision.with_initial_data(description=_prompt(ctx, inp, escalated))
    try:
        return pause_flow_run(wait_for_input=form, timeout=inp.timeout, poll_interval=1,
                              key=_pause_key(ctx.step_id, escalated))
    except FlowPauseTimeout:
        _back_to_running(ctx.flow_run_id)
        return None


def _pause_key(step_id: str, escalated: bool) -> str:
    # Prefect keys run inputs by pause key and accepts only lowercase letters, digits and dashes.
    return re.sub(r"[^a-z0-9-]", "-", step_id.lower()) + ("-escalated" if escalated else "")


def _back_to_running(flow_run_id: str | None) -> None:
    """After a pause times out the run is still Paused on the server; the flow carries on
    (its policy decides what next), so it must be Running again: the UI would show it Paused,
    and the server turns a run leaving an expired pause for Completed into Failed ("never
    resumed"). Only from Paused: the gate waits in a thread of its own, and a run that
    meanwhile ended (failed, cancelled) must stay ended."""
    if not flow_run_id:
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and state.is_paused():
            client.set_flow_run_state(flow_run_id, Running(), force=True)


def _escalate(ctx: StepContext, inp: ApprovalInput) -> None:
    notify = notify_action.prefect_task.with_options(task_run_name=f"{ctx.step_id}-approval-escalation",
                                                     retries=2, retry_delay_seconds=[1, 2])
    context = ctx.model_copy(update={"step_id": f"{ctx.step_id}__approval_escalation",
                                     "step_title": f"Overdue approval: {ctx.step_title}", "action": "notify"})
    future = notify.submit(context, {"to": inp.escalate_to, "title": f"Approval overdue: {ctx.step_title}",
                                     "message": f"Nobody has decided within {inp.timeout}s.\nAbout to happen: "
                                                f"{inp.action}\nWhy: {inp.reason}\nApprove or reject it in the "
                                                f"Prefect UI (the paused run)."})
    future.wait()


# reuse="run": a decision holds for the run that asked (a flow retry of it, like Prefect's own pause key,
# finds it); a new run of the incident asks again.
@action("approval", ApprovalInput, describe=_describe, in_flow=True, reuse="run")
def approval(inp: ApprovalInput, attempt: Attempt) -> ApprovalOutput:
    ctx = attempt.context
    started = time.monotonic()
    if ctx.drill and inp.in_drill != "ask":
        at = utcnow().isoformat()
        verb = "approved" if inp.in_drill == "approve" else "rejected"
        _record(ctx, attempt, verb, f"{ctx.step_title}: {verb} by the drill policy (in_drill: {inp.in_drill})",
                actor="drill-policy", decision=verb, approver="drill-policy", comment="", decided_at=at)
        if verb == "rejected":
            raise ApprovalRejected("rejected by the drill policy")
        return ApprovalOutput(decision="approved", approver="drill-policy", comment="", decided_at=at,
                              waited_seconds=0.0)

    _record(ctx, attempt, "awaiting-approval", f"{ctx.step_title}: waiting for approval: {inp.action}",
            actor=ctx.actor, action=inp.action, reason=inp.reason, timeout=inp.timeout, on_timeout=inp.on_timeout)
    answer = _wait(ctx, inp, escalated=False)
    if answer is not None:
        return _decided(ctx, attempt, answer, started)

    if inp.on_timeout == "proceed":
        at = utcnow().isoformat()
        _record(ctx, attempt, "approval-timed-out", f"{ctx.step_title}: nobody decided within {inp.timeout}s; "
                "proceeding by policy (on_timeout: proceed)", actor=ctx.actor, decision="proceeded-on-timeout")
        return ApprovalOutput(decision="proceeded-on-timeout", approver="", comment="", decided_at=at,
                              waited_seconds=round(time.monotonic() - started, 3))
    if inp.on_timeout == "escalate":
        _record(ctx, attempt, "approval-escalated", f"{ctx.step_title}: nobody decided within {inp.timeout}s; "
                f"paging {', '.join(inp.escalate_to)} and waiting {inp.timeout}s more", actor=ctx.actor)
        _escalate(ctx, inp)
        answer = _wait(ctx, inp, escalated=True)
        if answer is not None:
            return _decided(ctx, attempt, answer, started)
    _record(ctx, attempt, "approval-timed-out", f"{ctx.step_title}: nobody decided in time; refused "
            f"(on_timeout: {inp.on_timeout})", actor=ctx.actor, decision="refused-on-timeout")
    raise ApprovalTimedOut(f"no decision within {inp.timeout}s" + (" after escalation" if inp.on_timeout == "escalate" else ""))
