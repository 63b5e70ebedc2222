"""`approval`: a gate where a person decides before a risky step, in the Prefect UI.

The flow pauses (`pause_flow_run(wait_for_input=…)`); the UI shows what is
about to happen and why, and a form: approve or reject, a comment, and who
decides (the open-source Prefect server has no user accounts, so the approver
names themself; the name, time and comment go on the timeline).
A resume through the API (`resume_flow_run(flow_run_id, run_input={...})`)
works the same way.

Who decides is a person from the contacts directory: the form offers the contacts
as a list (`赵刚 Zhao Gang (zhao-gang)`), the gate's approvers first (_approver_field).
The answer is resolved with notifications.command.find_operator (a label, a contact
id, a name or the Latin part of one), and the timeline records the contact as the
directory names them (`approver`, `approver_id`, `approver_verified: true`). A name
that is no contact (free text sent through the API, or typed into the form's "not a
contact" choice) is not refused: the decision still counts (an approval goes ahead,
a rejection refuses the step) and is recorded with the name as given, marked
unverified (`approver_verified: false`, `approver_unverified: not-a-contact`, and
`Zhao Min (unverified: not a contact)` as the actor and in the summary), so the
record says who answered and that the directory does not know them. Refusing it
instead would leave a person who decided in an emergency with no decision at all,
and a gate that waits until its timeout policy decides for them. Likewise, if the
contacts directory cannot be read, the decision counts and is marked unverified
(`approver_unverified: directory-unreadable`).

The approvers are asked at once: the moment the gate starts waiting, its
`approvers` (roles) are paged (message event `approval_needed`, zh/en) with
what is about to happen, why, the deadline (UTC and FIREBREAK_LOCAL_TIMEZONE)
and the link to the paused run in the Prefect UI; with `escalation:` that page
follows the policy until the gate is decided (or someone acknowledges it).
`approvers` defaults to `escalate_to`, else to the runbook's command roles
(runbooks.roles.COMMAND_ROLES it declares); runbooks.validate refuses a gate
that has none.

If nobody answers within `timeout` seconds, the step's `on_timeout` policy
applies: `proceed` (carry on, recorded as not decided), `abort` (the step
fails; with the step's default `on_failure: abort` the run stops), or
`escalate` (page `escalate_to`, then wait one more `timeout`; still nothing
means abort). The approvers are told what the timeout did.

A gate whose run stops while it waits (a step aborted the run, the run lost its
incident's run lock, or the run was cancelled: tasks.run_stop) is withdrawn:
the run leaves its Paused state, so the form no longer accepts a decision (a
later `resume_flow_run` is refused by Prefect), a decision that raced the
withdrawal is refused and recorded, and `approval-withdrawn` is on the timeline.
The wait is pause_flow_run's (tasks.approval._pause mirrors it) with that one
difference: Prefect's own wait would only end at the timeout.

Drills run unattended (`make demo`), so a gate's `in_drill` policy says what a
drill does: `ask` (pause as usual), `approve` or `reject` (decided at once and
recorded as decided by the drill policy).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from prefect.input import RunInput  # what makes the Prefect UI show a form for the paused run
from pydantic import BaseModel, ConfigDict, Field, JsonValue, create_model, model_validator

from firebreak.errors import FirebreakError, StepFailed
from firebreak.settings import get_settings
from firebreak.yaml_lines import Path_
from notifications.command import UnknownOperator, find_operator, operator_label
from notifications.contacts import Directory, load_directory
from notifications.escalation import EscalationInvalid, load_policies
from records import incidents
from records.models import EventPhase, utcnow
from runbooks.roles import COMMAND_ROLES
from runbooks.schema import Runbook, Step
from runbooks.templating import is_template
from runbooks.validate import Report, check_role
from tasks import run_stop
from tasks.base import Attempt, StepContext, action
from tasks.notify import notify as notify_action
from tasks.run_stop import RunStopping

#: How often a waiting gate asks Prefect whether its run was resumed (a stop request wakes it at once).
POLL_SECONDS = 1.0
#: Seconds the approvers' page may take beyond its escalation policy (delivery, retries).
PAGE_SECONDS = 120.0
#: The pause Prefect is told about outlives the gate's own timeout by this much. The gate decides the
#: timeout itself (its policy then runs and the run goes back to Running); the server's pause-expiry
#: service fails a run whose pause has expired, and would otherwise race that hand-back (seen on a
#: loaded machine: a 1 s gate's run failed as "never resumed" while its policy was proceeding).
SERVER_PAUSE_MARGIN_SECONDS = 60


class ApprovalInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, description="what is about to happen if approved")
    reason: str = Field(min_length=1, description="why it is proposed")
    timeout: int = Field(default=900, ge=1, le=7 * 86400, description="seconds to wait for a decision")
    on_timeout: Literal["proceed", "abort", "escalate"] = "abort"
    escalate_to: list[str] = Field(default_factory=list, description="roles paged when on_timeout is escalate")
    in_drill: Literal["ask", "approve", "reject"] = "ask"
    approvers: list[str] | None = Field(default=None, min_length=1,
                                        description="roles asked for the decision, paged the moment the gate waits "
                                                    "(default: escalate_to, else the runbook's command roles)")
    escalation: str | None = Field(default=None, description="escalation policy (notifications/escalation.yaml) the "
                                                             "approvers' page follows until the gate is decided")
    #: Chinese twins of `action` and `reason`, for the pages to Chinese-speaking approvers
    action_zh: str | None = None
    reason_zh: str | None = None

    @model_validator(mode="after")
    def _escalation_target(self) -> ApprovalInput:
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise ValueError("on_timeout 'escalate' needs escalate_to: the roles to page")
        return self


class ApprovalDecision(RunInput):
    """The operator's answer. Each gate pauses with a subclass whose `approver` offers the contacts
    (_form); any text is accepted here and resolved to a contact when the answer is read (_identify)."""

    decision: Literal["approve", "reject"] = Field(description="approve: go ahead; reject: do not")
    approver: str = Field(min_length=1, max_length=120, description="your name (recorded on the incident timeline)")
    comment: str = Field(default="", max_length=2000, description="why (recorded on the incident timeline)")


class ApprovalOutput(BaseModel):
    decision: Literal["approved", "rejected", "proceeded-on-timeout"]
    #: The contact's name as in the directory, or the name as given when it is no contact
    approver: str
    comment: str
    decided_at: str
    waited_seconds: float
    approver_id: str | None = None
    #: Why the approver is unverified (UNVERIFIED), or None: a contact (or nobody: a drill policy, a timeout)
    approver_unverified: str | None = None


#: Why an approver is marked unverified, and how the timeline says it.
UNVERIFIED = {"not-a-contact": "not a contact", "directory-unreadable": "the contacts directory could not be read"}


@dataclass(frozen=True)
class Approver:
    """Who answered a gate: a contact (contact_id set), or a name the directory does not know."""

    name: str
    contact_id: str | None = None
    unverified: str | None = None  # a key of UNVERIFIED

    @property
    def shown(self) -> str:
        """`钱丽 Qian Li`, or `Zhao Min (unverified: not a contact)`; at most 120 characters (an event's actor)."""
        if self.unverified is None:
            return self.name[:120]
        mark = f" (unverified: {UNVERIFIED[self.unverified]})"
        return self.name[:120 - len(mark)] + mark

    def data(self) -> dict[str, Any]:
        recorded: dict[str, Any] = {"approver": self.name, "approver_id": self.contact_id,
                                    "approver_verified": self.unverified is None}
        if self.unverified is not None:
            recorded["approver_unverified"] = self.unverified
        return recorded


def _directory() -> Directory:
    return load_directory(get_settings().contacts_file)


def _identify(text: str) -> Approver:
    """The contact an answer names (a form label, an id, a name or its Latin part), else the text as given,
    marked unverified."""
    try:
        directory = _directory()
    except Exception:  # noqa: BLE001  (a broken contacts file must not lose a decision)
        return Approver(text, unverified="directory-unreadable")
    try:
        contact = find_operator(text, directory)
    except UnknownOperator:
        return Approver(text, unverified="not-a-contact")
    return Approver(contact.name, contact.id)


def approver_choices(directory: Directory, roles: list[str]) -> list[str]:
    """The contacts as the form offers them: whoever holds one of `roles` (the gate's approvers, in that
    order), then everyone else in directory order.

    Everyone, not only the approvers: the roles say who is paged, not who may decide. Command can be handed
    over to any contact (incident-handover), a deputy may answer for an approver who is out, and a gate
    whose approvers nobody holds must still be decidable; a form that listed only the approvers would push
    those people into the free-text choice, which is recorded as unverified. Listing the approvers first
    keeps the usual answer at the top."""
    first = [c for role in roles for c in directory.for_role(role)]
    rest = [c for c in directory.contacts if c not in first]
    return list(dict.fromkeys(operator_label(c) for c in first + rest))


def _approver_field(roles: list[str]) -> Any:
    """The form's `approver`: a list of the contacts (`enum`; the Prefect UI shows a select), or, as the
    second choice of an `anyOf`, any name, recorded as unverified. Both in the schema because Prefect's
    server checks a resume's input against the saved schema: with the list alone, an answer through the
    API that is not one of the labels (a contact id, a name) would be refused before the gate sees it.
    None when the contacts cannot be read (the form then takes free text; _identify marks it)."""
    try:
        labels = approver_choices(_directory(), roles)
    except Exception:  # noqa: BLE001  (a broken contacts file must not hide the form)
        return None
    if not labels:
        return None
    asked = f" ({', '.join(roles)} first)" if roles else ""
    choices: list[JsonValue] = [*labels]
    return Field(min_length=1, max_length=120,
                 description=f"who decides: choose yourself from the contacts{asked}; a name that is not a "
                             "contact is recorded as unverified",
                 json_schema_extra={"anyOf": [{"type": "string", "enum": choices, "title": "a contact"},
                                              {"type": "string", "title": "not a contact (recorded as unverified)"}]})


def _form(roles: list[str], description: str) -> type[ApprovalDecision]:
    """This gate's form: ApprovalDecision with the contacts to choose from, and the prompt shown above it."""
    field = _approver_field(roles)
    form = ApprovalDecision if field is None else \
        create_model("ApprovalDecision", __base__=ApprovalDecision, approver=(str, field))
    return form.with_initial_data(description=description)


class ApprovalRejected(StepFailed, RuntimeError):
    """The approver (or a drill's policy) rejected the action."""


class ApprovalTimedOut(StepFailed, TimeoutError):
    """No decision came within the gate's timeout (and its escalation, if any); the step is refused."""


class ApprovalWithdrawn(RunStopping):
    """The run stopped while the gate waited: the gate was withdrawn and accepts no decision."""


class _Withdrawn(FirebreakError):
    """Raised out of the wait: why the gate was withdrawn, and a decision that raced the withdrawal."""

    def __init__(self, reason: str, late_answer: Any = None):
        super().__init__(reason)
        self.reason = reason
        self.late_answer = late_answer


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
    """Record the decision; an unverified approver's decision counts like any other (module docstring)."""
    verb = "approved" if answer.decision == "approve" else "rejected"
    at = utcnow().isoformat()
    who = _identify(answer.approver)
    _record(ctx, attempt, verb, f"{ctx.step_title}: {verb} by {who.shown}"
            + (f": {answer.comment}" if answer.comment else ""), actor=who.shown,
            decision=verb, **who.data(), comment=answer.comment, decided_at=at)
    if verb == "rejected":
        raise ApprovalRejected(f"rejected by {who.shown}" + (f": {answer.comment}" if answer.comment else ""))
    return ApprovalOutput(decision="approved", approver=who.name, comment=answer.comment, decided_at=at,
                          waited_seconds=round(time.monotonic() - started, 3), approver_id=who.contact_id,
                          approver_unverified=who.unverified)


def _wait(ctx: StepContext, inp: ApprovalInput, escalated: bool, approvers: list[str]) -> Any:
    """Pause this flow run until someone answers; None on timeout; _Withdrawn if the run stops meanwhile."""
    # Escalated, the roles just paged (escalate_to) are the likeliest to answer: they come first.
    roles = list(dict.fromkeys([*inp.escalate_to, *approvers] if escalated else [*approvers, *inp.escalate_to]))
    form = _form(roles, _prompt(ctx, inp, escalated))
    answer = _pause(ctx, form, inp.timeout, _pause_key(ctx.step_id, escalated))
    if answer is None:
        _back_to_running(ctx.flow_run_id)
    return answer


def _pause(ctx: StepContext, form: Any, timeout: int, key: str) -> Any:
    """What `pause_flow_run(wait_for_input=form, timeout=timeout, key=key)` does (propose Paused with the
    form's keyset, save the form's schema, wait for Running and read the answer), except that the wait
    also ends, with _Withdrawn, when the run is stopping (tasks.run_stop) or its flow run has ended or is
    being cancelled; Prefect's own wait would go on until the timeout. None on timeout."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import Abort
    from prefect.input import keyset_from_paused_state
    from prefect.input.run_input import run_input_subclass_from_type
    from prefect.states import Paused, State
    from prefect.utilities.engine import propose_state_sync

    flow_context = FlowRunContext.get()
    if flow_context is None or flow_context.flow_run is None:
        raise RuntimeError("an approval gate can only wait inside a flow run")
    flow_run_id = flow_context.flow_run.id
    form = run_input_subclass_from_type(form)
    proposed: State[Any] = Paused(timeout_seconds=timeout + SERVER_PAUSE_MARGIN_SECONDS, reschedule=False,
                                  pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = keyset  # type: ignore[assignment]  # as Prefect's pause does
    with get_client(sync_client=True) as client:
        try:
            state = propose_state_sync(client=client, state=proposed, flow_run_id=flow_run_id)
        except Abort as exc:
            raise RuntimeError(f"Flow run cannot be paused: {exc}") from exc
        if state.is_running():  # this pause was answered before (a retry of the same flow run)
            return form.load(keyset, flow_run_id=flow_run_id)
        if not state.is_paused():
            raise RuntimeError(f"Flow run cannot be paused. Received non-paused state from API: {state}")
        deadline = time.monotonic() + timeout  # from the pause, not from after the form is saved
        form.save(keyset, flow_run_id=flow_run_id)  # the UI shows the form from now on
        while True:
            stopping = run_stop.wait(ctx.flow_run_id, min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
            now: State[Any] | None = client.read_flow_run(flow_run_id).state
            if now is not None and now.is_running():
                answer = form.load(keyset, flow_run_id=flow_run_id)
                if stopping is not None:
                    raise _Withdrawn(stopping, answer)
                return answer
            if stopping is None and now is not None and (now.is_final() or now.is_cancelling()):
                stopping = f"the flow run is {(now.name or now.type.value).lower()}"
                run_stop.request(ctx.flow_run_id, stopping)  # the engine stops the rest of the run too
            if stopping is not None:
                raise _Withdrawn(stopping, _leave_pause(client, flow_run_id, form, keyset))
            if time.monotonic() >= deadline:
                return None


def _leave_pause(client: Any, flow_run_id: Any, form: Any, keyset: Any) -> Any:
    """Take a withdrawn gate's run out of Paused (the form disappears from the UI and Prefect refuses a
    later resume); returns a decision that was sent in the meantime, if any, so it can be refused."""
    from prefect.input.actions import read_flow_run_input
    from prefect.states import Running

    state = client.read_flow_run(flow_run_id).state
    if state is not None and state.is_paused():
        client.set_flow_run_state(flow_run_id, Running(), force=True)
    try:
        value = read_flow_run_input(keyset["response"], flow_run_id=flow_run_id)
        return form(**value) if value else None  # type: ignore[arg-type]  # sync: no coroutine
    except Exception:  # noqa: BLE001  (an unreadable late answer is refused all the same)
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
        state = client.read_flow_run(UUID(flow_run_id)).state
        if state is not None and state.is_paused():
            client.set_flow_run_state(flow_run_id, Running(), force=True)


def _escalate(ctx: StepContext, inp: ApprovalInput) -> None:
    notify = notify_action.as_task.with_options(task_run_name=f"{ctx.step_id}-approval-escalation",
                                                retries=2, retry_delay_seconds=[1, 2])
    context = ctx.model_copy(update={"step_id": f"{ctx.step_id}__approval_escalation",
                                     "step_title": f"Overdue approval: {ctx.step_title}", "action": "notify"})
    future = notify.submit(context, {"to": inp.escalate_to, "title": f"Approval overdue: {ctx.step_title}",
                                     "message": f"Nobody has decided within {inp.timeout}s.\nAbout to happen: "
                                                f"{inp.action}\nWhy: {inp.reason}\nApprove or reject it in the "
                                                f"Prefect UI (the paused run).",
                                     # a Chinese-speaking approver is asked in Chinese (the action and reason
                                     # are the runbook's own words, shown as written)
                                     "title_zh": f"审批超时：{_title_zh(ctx)}",
                                     "message_zh": f"{inp.timeout} 秒内无人决定。\n将要执行：{inp.action_zh or inp.action}\n原因："
                                                   f"{inp.reason_zh or inp.reason}\n请在 Prefect 界面（已暂停的运行）中批准或驳回。"})
    future.wait()


def _runbook(ctx: StepContext) -> Runbook | None:
    """The gate's runbook: by id, or by the run's `runbook` parameter (an ad-hoc file run by path)."""
    from prefect.context import FlowRunContext

    from tasks.catalog import load_runbook  # tasks.catalog imports this module

    references = [ctx.runbook_id]
    flow_context = FlowRunContext.get()
    parameter = (flow_context.parameters or {}).get("runbook") if flow_context is not None else None
    if isinstance(parameter, str):
        references.append(parameter)
    for reference in references:
        try:
            runbook = load_runbook(reference).runbook
        except Exception:  # noqa: BLE001  (not found, or invalid since the run started)
            continue
        if runbook.id == ctx.runbook_id:
            return runbook
    return None


def _title_zh(ctx: StepContext) -> str:
    runbook = _runbook(ctx)
    try:
        return runbook.step(ctx.step_id).title_in("zh") if runbook else ctx.step_title
    except KeyError:  # a step renamed since
        return ctx.step_title


def default_approvers(inp: ApprovalInput, runbook_roles: list[str]) -> list[str]:
    """Who decides: `approvers`; else the roles the gate escalates to (they decide when nobody else
    does, so they are asked from the start); else the command roles the runbook declares."""
    if inp.approvers:
        return list(inp.approvers)
    if inp.escalate_to:
        return list(inp.escalate_to)
    return [role for role in COMMAND_ROLES if role in runbook_roles]


def _deadline(seconds: float) -> tuple[str, str]:
    """The decision deadline in UTC and in FIREBREAK_LOCAL_TIMEZONE."""
    at = utcnow() + timedelta(seconds=seconds)
    zone = get_settings().local_timezone
    try:
        local = at.astimezone(ZoneInfo(zone))
    except Exception:  # noqa: BLE001  (an unknown zone name: UTC only)
        return f"{at:%Y-%m-%d %H:%M:%S} UTC", f"{at:%Y-%m-%d %H:%M:%S} UTC"
    return f"{at:%Y-%m-%d %H:%M:%S} UTC", f"{local:%Y-%m-%d %H:%M:%S} {zone}"


def _page_seconds(policy: str | None) -> float:
    if not policy:
        return PAGE_SECONDS
    found = load_policies(get_settings().escalation_file).get(policy)
    return (found.total_seconds() if found else 0.0) + PAGE_SECONDS


def _ask(ctx: StepContext, attempt: Attempt, inp: ApprovalInput, approvers: list[str]) -> Any:
    """Page the approvers the moment the gate waits (event approval_needed): what, why, by when, and the
    link to the paused run. Not waited for: with `escalation` it escalates until the gate is decided
    (NotifyInput.answers_gate) or someone acknowledges it. Returns the page's task future, or None."""
    if not approvers:
        _record(ctx, attempt, "approvers-unknown", f"{ctx.step_title}: nobody was paged: the gate names no "
                "approvers and its runbook cannot be read for its command roles", actor=ctx.actor)
        return None
    deadline_utc, deadline_local = _deadline(inp.timeout)
    notify = notify_action.as_task.with_options(task_run_name=f"{ctx.step_id}-approval-needed",
                                                retries=2, retry_delay_seconds=[1, 2])
    context = ctx.model_copy(update={"step_id": f"{ctx.step_id}__approval_needed", "action": "notify",
                                     "timeout": _page_seconds(inp.escalation)})
    return notify.submit(context, {
        "to": approvers, "event": "approval_needed", "escalation": inp.escalation, "answers_gate": ctx.step_id,
        "title": ctx.step_title, "title_zh": _title_zh(ctx),
        "message": "The runbook waits for your decision before it goes on.",
        "message_zh": "预案正在等待您的决定。",
        "details": {"action": inp.action, "reason": inp.reason, "action_zh": inp.action_zh or inp.action,
                    "reason_zh": inp.reason_zh or inp.reason, "deadline_utc": deadline_utc,
                    "deadline_local": deadline_local, "timeout": inp.timeout, "on_timeout": inp.on_timeout,
                    "escalate_to": inp.escalate_to},
    })


def _tell_timeout(ctx: StepContext, inp: ApprovalInput, approvers: list[str], proceeded: bool, waited: int) -> None:
    """Tell the approvers what the timeout did: no decision came, and the run proceeded, or the step was refused."""
    if not approvers:
        return
    notify = notify_action.as_task.with_options(task_run_name=f"{ctx.step_id}-approval-timeout",
                                                retries=2, retry_delay_seconds=[1, 2])
    context = ctx.model_copy(update={"step_id": f"{ctx.step_id}__approval_timeout", "action": "notify",
                                     "timeout": PAGE_SECONDS})
    if proceeded:
        did, did_zh = (f"the runbook proceeded without a decision (on_timeout: proceed): {inp.action}",
                       f"预案已在无人决定的情况下继续执行：{inp.action_zh or inp.action}")
    else:
        did, did_zh = (f"the step was refused (on_timeout: {inp.on_timeout}); not done: {inp.action}",
                       f"该步骤已被拒绝，未执行：{inp.action_zh or inp.action}")
    future = notify.submit(context, {
        "to": approvers, "event": "status_update",
        "title": f"No decision: {ctx.step_title}", "title_zh": f"无人决定：{_title_zh(ctx)}",
        "message": f"Nobody decided within {waited}s; {did}.",
        "message_zh": f"{waited} 秒内无人决定；{did_zh}。",
    })
    future.wait()


def _withdrawn(ctx: StepContext, attempt: Attempt, withdrawn: _Withdrawn) -> ApprovalWithdrawn:
    late = withdrawn.late_answer
    refused = ""
    if late is not None and getattr(late, "decision", None):
        refused = (f"; a decision ({late.decision} by {late.approver}) arrived as it was withdrawn and is refused")
    _record(ctx, attempt, "approval-withdrawn", f"{ctx.step_title}: withdrawn ({withdrawn.reason}); the form no "
            f"longer accepts a decision{refused}", actor=ctx.actor, reason=withdrawn.reason,
            refused_decision=({"decision": late.decision, "approver": late.approver, "comment": late.comment}
                              if refused else None))
    return ApprovalWithdrawn(f"withdrawn: {withdrawn.reason}")


def _check_step(step: Step, at: Path_, runbook: Runbook, problem: Report) -> None:
    """Validating a runbook: the gate's approvers and escalation roles are declared, its page's escalation
    policy exists, and somebody can be asked (approvers, escalate_to, or a command role of the runbook)."""
    arguments = step.with_
    for field in ("approvers", "escalate_to"):
        roles = arguments.get(field)
        if isinstance(roles, list):
            for n, role in enumerate(roles):
                if isinstance(role, str) and not is_template(role):
                    check_role(role, runbook, at + ("with", field, n), problem)
    if not arguments.get("approvers") and not arguments.get("escalate_to") \
            and not any(role in runbook.roles for role in COMMAND_ROLES):
        problem(at + ("with",), "an approval gate pages its approvers when it starts waiting: give `approvers` "
                                f"(roles), or `escalate_to`, or declare a command role ({', '.join(COMMAND_ROLES)})")
    name = arguments.get("escalation")
    if isinstance(name, str) and not is_template(name):
        try:
            policies = load_policies(get_settings().escalation_file)
        except EscalationInvalid as exc:
            problem(at + ("with", "escalation"), f"escalation policies cannot be read: {exc}")
            return
        if name not in policies:
            problem(at + ("with", "escalation"), f"unknown escalation policy {name!r}; defined: {', '.join(policies)}")


# reuse="run": a decision holds for the run that asked (a flow retry of it, like Prefect's own pause key,
# finds it); a new run of the incident asks again.
@action("approval", ApprovalInput, describe=_describe, in_flow=True, reuse="run", check_step=_check_step)
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

    runbook = _runbook(ctx)
    approvers = default_approvers(inp, runbook.roles if runbook else [])
    _record(ctx, attempt, "awaiting-approval", f"{ctx.step_title}: waiting for approval: {inp.action}",
            actor=ctx.actor, action=inp.action, reason=inp.reason, timeout=inp.timeout, on_timeout=inp.on_timeout,
            approvers=approvers)
    _ask(ctx, attempt, inp, approvers)
    try:
        answer = _wait(ctx, inp, escalated=False, approvers=approvers)
        if answer is not None:
            return _decided(ctx, attempt, answer, started)

        if inp.on_timeout == "proceed":
            at = utcnow().isoformat()
            _record(ctx, attempt, "approval-timed-out", f"{ctx.step_title}: nobody decided within {inp.timeout}s; "
                    "proceeding by policy (on_timeout: proceed)", actor=ctx.actor, decision="proceeded-on-timeout")
            _tell_timeout(ctx, inp, approvers, proceeded=True, waited=inp.timeout)
            return ApprovalOutput(decision="proceeded-on-timeout", approver="", comment="", decided_at=at,
                                  waited_seconds=round(time.monotonic() - started, 3))
        if inp.on_timeout == "escalate":
            _record(ctx, attempt, "approval-escalated", f"{ctx.step_title}: nobody decided within {inp.timeout}s; "
                    f"paging {', '.join(inp.escalate_to)} and waiting {inp.timeout}s more", actor=ctx.actor)
            _escalate(ctx, inp)
            answer = _wait(ctx, inp, escalated=True, approvers=approvers)
            if answer is not None:
                return _decided(ctx, attempt, answer, started)
    except _Withdrawn as withdrawn:
        raise _withdrawn(ctx, attempt, withdrawn) from None
    _record(ctx, attempt, "approval-timed-out", f"{ctx.step_title}: nobody decided in time; refused "
            f"(on_timeout: {inp.on_timeout})", actor=ctx.actor, decision="refused-on-timeout")
    waited = inp.timeout * (2 if inp.on_timeout == "escalate" else 1)
    _tell_timeout(ctx, inp, approvers, proceeded=False, waited=waited)
    raise ApprovalTimedOut(f"no decision within {inp.timeout}s" + (" after escalation" if inp.on_timeout == "escalate" else ""))
