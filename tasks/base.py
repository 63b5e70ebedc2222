"""How an action becomes a Prefect task that writes the timeline.

Every attempt records an *intent* event before it acts and an *outcome* event
after. An action with a side effect first looks for a recorded success of the
same idempotency key and returns that recorded output instead of acting twice.
What "the same" means is the action's reuse policy (`action(..., reuse=…)`):

- ``incident``: once per incident, runbook and step, across runs. For idempotent
  mutations (a non-GET `http`, `set_status`): a re-run does not fail over twice.
- ``run``: once per incident, runbook, step and *run generation*. A Prefect task
  retry, a flow retry or a resume of the same run reuses it; a new run acts anew.
  For pages (`notify`, and so failure escalations) and approvals: an earlier run's
  page or decision never stands in for this run's.
- ``never``: every attempt acts; nothing recorded is reused.

Whatever the policy but ``never``, a step that already succeeded in this very flow run (a flow
retry, or a resume after its process died) is not run again, reads included: its recorded output
stands, so the steps after it decide as the run first decided.

The run generation is the generation of the incident's run lock this run holds
(records.run_locks): each new run that takes the lock gets a higher one; a retry or
resume of the same flow run re-enters with the same one.

Keys: the timeline records a readable one, ``INC-2026-0001/<runbook>/<step>[/run-<n>]``;
what leaves the process (the HTTP `Idempotency-Key`) is ``firebreak:<incident uid>:
<runbook>:<step>[:run-<n>]``, unique across installations: incident numbers restart
with each records database, and a service that remembers keys must never answer one
installation's request with another's.

While the run holds its incident's run lock (StepContext.lock_holder), each intent is
written under that lease (records.run_locks.fence): a holder that lost the lease has
its intent refused (LeaseLost, recorded) and never acts.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run as current_task_run
from pydantic import BaseModel, ConfigDict, ValidationError

from firebreak.errors import InputInvalid, StepFailed
from records import incidents
from records.db import session_scope
from records.models import EventPhase
from records.run_locks import LeaseLost, check_held, fence
from runbooks.validate import StepCheck
from tasks import run_stop
from tasks.run_stop import RunStopping

InputT = TypeVar("InputT", bound=BaseModel)

#: An action's reuse policy (see the module docstring).
Reuse = Literal["incident", "run", "never"]
REUSE_POLICIES: tuple[str, ...] = ("incident", "run", "never")


class StepContext(BaseModel):
    """What an action knows about the step it runs for."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    runbook_id: str
    step_id: str
    step_title: str
    action: str
    level: str
    drill: bool = False
    timeout: float = 60.0
    flow_run_id: str | None = None
    #: Incident.uid: unique across installations; carried by every key sent to another system.
    incident_uid: str | None = None
    #: The generation of the incident's run lock this run holds (records.run_locks): higher for
    #: each new run of the incident, the same for a retry or resume of one flow run. None outside
    #: a run that holds the lock (a hook's or reconcile's run-failure alarm).
    run_generation: int | None = None
    #: The run lock's holder (the flow run id): with run_generation, the lease intents are fenced by.
    lock_holder: str | None = None
    #: The reuse policy of the action this context is handed to (tasks.base._execute sets it).
    reuse: Reuse = "run"

    def _key_parts(self) -> list[str]:
        parts = [self.runbook_id, self.step_id]
        if self.reuse != "incident" and self.run_generation is not None:
            parts.append(f"run-{self.run_generation}")
        return parts

    @property
    def idempotency_key(self) -> str:
        """The readable key recorded on the timeline: `INC-…/<runbook>/<step>[/run-<generation>]`."""
        return "/".join([self.incident_id, *self._key_parts()])

    @property
    def sent_idempotency_key(self) -> str:
        """The key sent to other systems: `firebreak:<incident uid>:<runbook>:<step>[:run-<generation>]`."""
        uid = self.incident_uid or incidents.get_incident(self.incident_id).uid
        return ":".join(["firebreak", uid, *self._key_parts()])

    @property
    def legacy_idempotency_key(self) -> str:
        """The key side effects were recorded under before keys named the runbook (`INC-…:<step>`)."""
        return f"{self.incident_id}:{self.step_id}"

    @property
    def fenced(self) -> bool:
        return self.lock_holder is not None and self.run_generation is not None

    @property
    def actor(self) -> str:
        return f"runbook:{self.runbook_id}"


@dataclass
class Attempt:
    """One attempt of one step, handed to the action function."""

    context: StepContext
    number: int
    deadline: float  # time.monotonic() value by which the attempt must end

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def check_lease(self) -> None:
        """Raise LeaseLost if the run no longer holds its incident's run lock. For an action that
        acts more than once after its intent (a notify step paging escalation tiers over minutes)."""
        ctx = self.context
        if not ctx.fenced:
            return
        with session_scope() as session:
            check_held(session, ctx.incident_id, ctx.lock_holder, ctx.run_generation)  # type: ignore[arg-type]

    def sleep(self, seconds: float) -> None:
        """Sleep in short slices, and stop at the attempt's deadline with a TimeoutError, or as soon as
        the run is stopping (an abort, a lost lease, a cancellation: tasks.run_stop) with RunStopping."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if time.monotonic() >= self.deadline:
                raise TimeoutError(f"step timed out after {self.context.timeout:g}s")
            run_stop.check(self.context.flow_run_id, f"{self.context.step_title}: stopped waiting")
            remaining = self.remaining()
            # The last stretch before the deadline in one sleep: a timeout Prefect raises into this
            # thread then arrives as the sleep ends, at the deadline, and is recorded as a timeout.
            time.sleep(min(left, remaining if remaining <= 0.1 else 0.05, max(remaining, 0.001)))


class StepInputError(InputInvalid, ValueError):
    """The step's arguments do not fit the action; retrying cannot help."""


@dataclass(frozen=True)
class Action(Generic[InputT]):
    name: str
    input_model: type[InputT]
    function: Callable[[InputT, Attempt], Any]
    describe: Callable[[InputT], str]
    has_side_effect: Callable[[InputT], bool]
    expression_fields: dict[str, frozenset[str]]
    #: None for an action that must run in the flow itself (see `in_flow`).
    prefect_task: Task[..., Any] | None
    #: The action's own checks of a runbook step that names it, run by runbooks.validate.
    check_step: StepCheck | None = None
    #: How a recorded success of its side effect is reused (see the module docstring).
    reuse: Reuse = "run"

    def run_in_flow(self, context: StepContext, arguments: dict[str, Any]) -> Any:
        """Run an in-flow action in the calling flow, recording intent and outcome."""
        return _execute(self, context, arguments)

    @property
    def as_task(self) -> Task[..., Any]:
        """The Prefect task of an action that runs as one (every action but the in-flow ones)."""
        if self.prefect_task is None:
            raise RuntimeError(f"action {self.name!r} runs in the flow itself, not as a Prefect task")
        return self.prefect_task


ACTIONS: dict[str, Action[Any]] = {}


class _DropThreadTimeoutWarning(logging.Filter):
    """Prefect warns on every sync task with a timeout that worker-thread timeouts
    cannot interrupt blocking calls. Actions here never block past their attempt's
    deadline (Attempt.sleep, HTTP timeouts bounded by Attempt.remaining), so the
    warning is noise on every step of every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread" not in record.getMessage()


logging.getLogger("prefect.task_runs").addFilter(_DropThreadTimeoutWarning())


def action(
    name: str,
    input_model: type[InputT],
    *,
    describe: Callable[[InputT], str],
    side_effect: bool | Callable[[InputT], bool] = True,
    expression_fields: dict[str, frozenset[str]] | None = None,
    in_flow: bool = False,
    check_step: StepCheck | None = None,
    reuse: Reuse = "run",
) -> Callable[[Callable[[InputT, Attempt], Any]], Action[InputT]]:
    """Register `function(input, attempt) -> output` as the runbook action `name`.

    expression_fields maps arguments that are Jinja2 expressions evaluated by the
    action itself (e.g. a poll condition) to the names they may use.

    check_step(step, at, runbook, report) checks, when a runbook is validated, what the
    arguments' types cannot say (e.g. that a named policy exists); it reports with
    report(path, message).

    reuse: when a recorded success of the side effect stands in for acting again: "incident"
    (once per incident, runbook and step: idempotent mutations), "run" (once per run generation:
    pages, approvals, notes) or "never" (see the module docstring).

    in_flow: the action runs in the flow run instead of as a task, because it
    needs what only a flow can do (pause_flow_run for an operator's input). The
    engine runs it in a thread of its own with the flow's context, one in-flow
    action at a time (a flow run has one Paused state), so keep such actions to gates.
    """

    def register(function: Callable[[InputT, Attempt], Any]) -> Action[InputT]:
        if name in ACTIONS:
            raise RuntimeError(f"action {name!r} registered twice")
        if reuse not in REUSE_POLICIES:
            raise ValueError(f"action {name!r}: reuse must be one of {', '.join(REUSE_POLICIES)}, got {reuse!r}")
        side_effect_of = side_effect if callable(side_effect) else (lambda _inp, _v=side_effect: _v)

        def run_step(context: StepContext, arguments: dict[str, Any]) -> Any:
            return _execute(ACTIONS[name], context, arguments)

        run_step.__name__ = name.replace(".", "_")
        prefect_task = None if in_flow else task(
            name=name,
            cache_policy=NO_CACHE,
            persist_result=False,
            retry_condition_fn=_retry_unless_input_error,
        )(run_step)
        registered = Action(name, input_model, function, describe, side_effect_of, dict(expression_fields or {}),
                            prefect_task, check_step, reuse)
        ACTIONS[name] = registered
        return registered

    return register


def _retry_unless_input_error(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    # Retrying cannot help: bad arguments, the run lost its incident, or the run is stopping.
    except (StepInputError, LeaseLost, RunStopping):
        return False
    except BaseException:  # noqa: BLE001  result() re-raises the task's own failure, whatever it is: all else is retried
        return True
    return True


def _execute(action: Action[Any], context: StepContext, arguments: dict[str, Any]) -> Any:
    if context.reuse != action.reuse:
        context = context.model_copy(update={"reuse": action.reuse})
    # The attempt's clock starts here, as Prefect's task timeout does, not after the intent is written.
    started = time.monotonic()
    attempt_number = current_task_run.run_count or 1  # 0 outside a task (in-flow actions)
    task_run_id = current_task_run.id
    common = dict(step_id=context.step_id, action=action.name, attempt=attempt_number, actor=context.actor,
                  flow_run_id=context.flow_run_id, task_run_id=task_run_id)
    try:
        parsed = action.input_model.model_validate(arguments)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(arguments)'}: {e['msg']}" for e in exc.errors())
        incidents.append_event(context.incident_id, phase=EventPhase.outcome, status="failed",
                               summary=f"{context.step_title}: arguments rejected", error=reason, **common)
        raise StepInputError(f"step {context.step_id!r} ({action.name}): {reason}") from exc

    key = context.idempotency_key if action.has_side_effect(parsed) else None
    guard = fence(context.incident_id, context.lock_holder, context.run_generation) if context.fenced else None  # type: ignore[arg-type]
    if context.flow_run_id is not None and action.reuse != "never":
        # A resumed flow run (its process died; reconcile recorded it; an operator resumed it) or a flow
        # retry carries on from where it stopped: what this run already did stands, reads included, so
        # its later steps decide on what the run saw then, not on a world its own steps have changed
        # (after a fail-over, a fresh health check would skip everything that follows).
        done = incidents.succeeded_in_flow_run(context.incident_id, context.step_id, context.flow_run_id)
        if done is not None:
            _fenced_append(context, guard, common, phase=EventPhase.note, status="reused",
                           summary=f"{context.step_title}: already done by this run at event #{done.seq}; "
                                   "not repeated", idempotency_key=key, data={"output": done.data.get("output")})
            return done.data.get("output")
    if key is not None and action.reuse != "never":
        done = _recorded_success(context, key)
        if done is not None:
            _fenced_append(context, guard, common, phase=EventPhase.note, status="reused",
                           summary=f"{context.step_title}: already done at event #{done.seq}; not repeated",
                           idempotency_key=key, data={"output": done.data.get("output")})
            return done.data.get("output")

    description = action.describe(parsed)
    retry_note = f" (retry {attempt_number - 1})" if attempt_number > 1 else ""
    stopping = run_stop.reason(context.flow_run_id)
    if stopping is not None:  # e.g. a retry due after the run aborted: it never acts
        incidents.append_event(context.incident_id, phase=EventPhase.note, status="not-started",
                               summary=f"{context.step_title}: not started{retry_note}: the run is stopping "
                                       f"({stopping})", idempotency_key=key, **common)
        raise RunStopping(f"{context.step_title}: not started: the run is stopping ({stopping})")
    # Under the run's lease, in one transaction: a run that lost its incident never acts.
    _fenced_append(context, guard, common, phase=EventPhase.intent, status="started",
                   summary=f"{context.step_title}: {description}{retry_note}", idempotency_key=key)
    attempt = Attempt(context=context, number=attempt_number, deadline=started + context.timeout)
    try:
        output = action.function(parsed, attempt)
    except BaseException as exc:
        # BaseException: Prefect's timeout and cancellation arrive as exceptions
        # raised into this thread, and the timeline must still show the attempt ended.
        # A failure the action decided (a person's rejection, an unmet condition) says what it is, even
        # when it came after the step's own timeout: only an exception raised into the thread by the
        # deadline is a timeout.
        if time.monotonic() >= attempt.deadline and not isinstance(exc, StepFailed):
            error = f"timed out after {context.timeout:g}s ({type(exc).__name__})"
        else:
            error = f"{type(exc).__name__}: {exc}"
        # What the action observed before failing (wait_until's samples), for the report's charts.
        observed = getattr(exc, "data", None)
        incidents.append_event(context.incident_id, phase=EventPhase.outcome, status="failed",
                               summary=f"{context.step_title}: failed{retry_note}",
                               error=error, idempotency_key=key,
                               data={"observed": observed} if isinstance(observed, dict) else None, **common)
        raise
    if isinstance(output, BaseModel):
        output = output.model_dump(mode="json", by_alias=True)
    incidents.append_event(context.incident_id, phase=EventPhase.outcome, status="succeeded",
                           summary=f"{context.step_title}: done{retry_note}", idempotency_key=key,
                           data={"output": output}, **common)
    return output


def _recorded_success(context: StepContext, key: str) -> Any:
    done = incidents.succeeded_outcome(context.incident_id, key)
    if done is None and context.reuse == "incident":
        # Recorded before keys named the runbook: still this side effect if this runbook recorded it.
        legacy = incidents.succeeded_outcome(context.incident_id, context.legacy_idempotency_key)
        if legacy is not None and legacy.actor == context.actor:
            done = legacy
    return done


def _fenced_append(context: StepContext, guard: Callable[[Any], None] | None, common: dict[str, Any],
                   **fields: Any) -> None:
    """Append under the run's lease; if the lease is lost, record the refusal (unfenced: the record
    says what did not happen and why) and raise LeaseLost."""
    try:
        incidents.append_event(context.incident_id, guard=guard, **fields, **common)
    except LeaseLost as exc:
        incidents.append_event(context.incident_id, phase=EventPhase.note, status="intent-refused",
                               summary=f"{context.step_title}: not started: this run no longer holds the incident "
                                       f"({exc.reason})",
                               error=str(exc), idempotency_key=fields.get("idempotency_key"),
                               data={"holder": exc.holder, "generation": exc.generation}, **common)
        raise
