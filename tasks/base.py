"""How an action becomes a Prefect task that writes the timeline.

Every attempt records an *intent* event before it acts and an *outcome* event
after. An action with a side effect first looks for a recorded success of the
same idempotency key (incident, step): a flow retry or a resumed run returns
that recorded output instead of acting twice.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run as current_task_run
from pydantic import BaseModel, ConfigDict, ValidationError

from records import incidents
from records.models import EventPhase

InputT = TypeVar("InputT", bound=BaseModel)


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

    @property
    def idempotency_key(self) -> str:
        return f"{self.incident_id}:{self.step_id}"

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

    def sleep(self, seconds: float) -> None:
        """Sleep in short slices, and stop at the attempt's deadline with a TimeoutError."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if time.monotonic() >= self.deadline:
                raise TimeoutError(f"step timed out after {self.context.timeout:g}s")
            time.sleep(min(left, 0.05, max(self.remaining(), 0.001)))


class StepInputError(ValueError):
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

    def run_in_flow(self, context: StepContext, arguments: dict[str, Any]) -> Any:
        """Run an in-flow action in the calling flow, recording intent and outcome."""
        return _execute(self, context, arguments)


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
) -> Callable[[Callable[[InputT, Attempt], Any]], Action[InputT]]:
    """Register `function(input, attempt) -> output` as the runbook action `name`.

    expression_fields maps arguments that are Jinja2 expressions evaluated by the
    action itself (e.g. a poll condition) to the names they may use.

    in_flow: the action runs in the flow run instead of as a task, because it
    needs what only a flow can do (pause_flow_run for an operator's input). The
    engine runs it in a thread of its own with the flow's context, one in-flow
    action at a time (a flow run has one Paused state), so keep such actions to gates.
    """

    def register(function: Callable[[InputT, Attempt], Any]) -> Action[InputT]:
        if name in ACTIONS:
            raise RuntimeError(f"action {name!r} registered twice")
        side_effect_of = side_effect if callable(side_effect) else (lambda _inp, _v=side_effect: _v)

        def run_step(context: StepContext, arguments: dict[str, Any]) -> Any:
            return _execute(ACTIONS[name], context, arguments)

        run_step.__name__ = name.replace(".", "_")
        prefect_task = None if in_flow else task(
            run_step,
            name=name,
            cache_policy=NO_CACHE,
            persist_result=False,
            retry_condition_fn=_retry_unless_input_error,
        )
        registered = Action(name, input_model, function, describe, side_effect_of, dict(expression_fields or {}),
                            prefect_task)
        ACTIONS[name] = registered
        return registered

    return register


def _retry_unless_input_error(_task: Any, _task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except StepInputError:
        return False
    except BaseException:
        return True
    return True


def _execute(action: Action[Any], context: StepContext, arguments: dict[str, Any]) -> Any:
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
    if key is not None:
        done = incidents.succeeded_outcome(context.incident_id, key)
        if done is not None:
            incidents.append_event(context.incident_id, phase=EventPhase.note, status="reused",
                                   summary=f"{context.step_title}: already done at event #{done.seq}; not repeated",
                                   idempotency_key=key, data={"output": done.data.get("output")}, **common)
            return done.data.get("output")

    description = action.describe(parsed)
    retry_note = f" (retry {attempt_number - 1})" if attempt_number > 1 else ""
    incidents.append_event(context.incident_id, phase=EventPhase.intent, status="started",
                           summary=f"{context.step_title}: {description}{retry_note}", idempotency_key=key, **common)
    attempt = Attempt(context=context, number=attempt_number, deadline=time.monotonic() + context.timeout)
    try:
        output = action.function(parsed, attempt)
    except BaseException as exc:
        # BaseException: Prefect's timeout and cancellation arrive as exceptions
        # raised into this thread, and the timeline must still show the attempt ended.
        if time.monotonic() >= attempt.deadline:
            error = f"timed out after {context.timeout:g}s ({type(exc).__name__})"
        else:
            error = f"{type(exc).__name__}: {exc}"
        incidents.append_event(context.incident_id, phase=EventPhase.outcome, status="failed",
                               summary=f"{context.step_title}: failed{retry_note}",
                               error=error, idempotency_key=key, **common)
        raise
    if isinstance(output, BaseModel):
        output = output.model_dump(mode="json", by_alias=True)
    incidents.append_event(context.incident_id, phase=EventPhase.outcome, status="succeeded",
                           summary=f"{context.step_title}: done{retry_note}", idempotency_key=key,
                           data={"output": output}, **common)
    return output
