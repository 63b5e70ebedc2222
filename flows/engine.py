"""The runbook engine: run any runbook definition as a Prefect task graph.

Steps are submitted as soon as everything they need has finished, with
`wait_for` on those steps' futures so Prefect shows the graph and independent
branches run at the same time. Each step's retries, back-off and timeout map
onto Prefect task options; its failure policy is applied here.

An in-flow action (an approval gate) runs in a thread of its own with the
flow's context, so while it waits for a person only the steps that need it
wait; the rest of the graph keeps starting and finishing.

The run holds its incident's run lock, a fenced lease (records.run_locks), for as long as
it runs; its generation is the run generation every step's context carries (reuse per run,
tasks.base). Each step's intent is written under that lease. If the lease is lost (another
run took the incident over, or it could not be renewed within the stale time), the engine
starts nothing more, records why on the timeline and ends the run failed (RunLeaseLost);
the flow-run hooks then raise the run-failure alarm if no other run has the incident.
"""
from __future__ import annotations

import concurrent.futures
import contextvars
import threading
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import allow_failure, flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled, Completed, State
from pydantic import BaseModel, ValidationError, WithJsonSchema

from firebreak.errors import FirebreakError
from flows import first_pages, forms, run_failure
from flows.heartbeat import heartbeat
from flows.run_options import RUNBOOK_FLOW_OPTIONS
from records import incidents, run_locks
from records.db import waiting_out_outages
from records.models import EventPhase, RunState
from reports.live_view import LiveViewUpdater
from reports.publish import publish_report
from runbooks import library
from runbooks.schema import FailurePolicy, Level, Runbook, Step
from runbooks.templating import EVALUATION_ERRORS, evaluate, render_value
from tasks import run_stop
from tasks.base import StepContext
from tasks.catalog import ACTIONS, load_runbook
from tasks.run_stop import RunStopping


class RunbookFailed(FirebreakError, RuntimeError):
    """The run ended because a step failed under the `abort` policy (or could not start)."""


class RunLeaseLost(RunbookFailed):
    """The run lost its incident's run lock: it started nothing more and ended."""


#: How often the scheduler looks at the lease while it waits for steps to finish.
LEASE_POLL_SECONDS = 0.5
#: How often a run asks Prefect whether it was cancelled. A runner or worker that started the run's
#: process stops it itself; a run executed in-process (the intake's warm executor, a drill) has only
#: this to notice `firebreak incident cancel` or the UI's Cancel.
CANCEL_POLL_SECONDS = 2.0
#: How long after a step's own deadline Prefect's task timeout cancels it (see _start).
PREFECT_TIMEOUT_MARGIN_SECONDS = 5.0
#: How long a run that lost its lease waits for its withdrawn gates to let go before it ends anyway.
GATE_WITHDRAW_SECONDS = 15.0
#: The live view's first publication waits for the run's first page, at most this long: in a burst of
#: new incidents, pages must not queue behind live-view writes to Prefect (issue 13), and a run that
#: pages and ends within it publishes only its final view.
FIRST_VIEW_WAIT_SECONDS = 3.0


class StepResult(BaseModel):
    status: str  # succeeded | failed | skipped
    output: Any = None
    error: str | None = None


class RunSummary(BaseModel):
    incident_id: str
    runbook: str
    level: str
    status: str
    run_state: str
    steps: dict[str, StepResult]
    needs_attention: bool = False  # the run ended with the incident still open (Incident.attention_reason)
    attention_reason: str | None = None


@dataclass
class _Run:
    runbook: Runbook
    incident_id: str
    level: Level
    params: dict[str, Any]
    drill: bool
    flow_run_id: str | None
    results: dict[str, StepResult] = field(default_factory=dict)
    futures: dict[str, PrefectFuture[Any]] = field(default_factory=dict)
    aborted_by: str | None = None
    failures: list[str] = field(default_factory=list)
    incident_uid: str | None = None
    lease: run_locks.Lease | None = None
    #: Why the run is stopping (a step aborted it, it lost its lease, it was cancelled): nothing new
    #: starts, waiting gates are withdrawn, unstarted steps are skipped (tasks.run_stop).
    stopping: str | None = None
    #: When to ask Prefect next whether the run was cancelled (_watch_for_cancellation); not at once,
    #: so the first steps (the first page) start without waiting for it.
    next_cancel_check: float = field(default_factory=lambda: time.monotonic() + CANCEL_POLL_SECONDS)
    #: Escalations of failed steps submitted but not yet tracked by the scheduler (see _escalate).
    escalations: list[tuple[Step, PrefectFuture[Any]]] = field(default_factory=list)
    #: Called when a paging step has finished or a gate starts (the live view's first publication waits for it).
    paged: Callable[[], None] = lambda: None

    def step_context(self, **fields: Any) -> StepContext:
        """A StepContext for this run: its incident (and uid), runbook, level, and lease (run generation)."""
        lease = self.lease
        return StepContext(incident_id=self.incident_id, incident_uid=self.incident_uid, runbook_id=self.runbook.id,
                           level=self.level.value, drill=self.drill, flow_run_id=self.flow_run_id,
                           run_generation=lease.generation if lease else None,
                           lock_holder=lease.holder if lease else None, **fields)

    def lease_lost(self) -> str | None:
        return self.lease.lost if self.lease is not None else None

    def context(self, title: str, summary: str | None) -> dict[str, Any]:
        return {
            "params": self.params,
            "level": self.level.value,
            "incident": {"id": self.incident_id, "level": self.level.value, "drill": self.drill,
                         "title": title, "summary": summary or ""},
            "runbook": {"id": self.runbook.id, "version": self.runbook.version, "title": self.runbook.title},
            "steps": {key: value.model_dump() for key, value in self.results.items()},
        }


def execute_runbook(
    runbook_id: str,
    parameters: dict[str, Any] | BaseModel | None = None,
    *,
    level: Level | str | None = None,
    incident_id: str | None = None,
    source: str = "operator",
    drill: bool = False,
    summary: str | None = None,
) -> RunSummary | State[RunSummary]:
    """Open (or attach to) the incident and run every step. Call inside a flow.

    Returns the run's summary; when the run completed but left the incident open, a Completed
    state holding it, whose message says the incident needs attention (a flow that returns a
    state ends in it; calling the flow still gives the summary).

    While it runs, the incident's live view in Prefect (reports.live_view: the artifact
    `incident-<id>` and the run's needs-attention / awaiting-approval tags) is kept current by one
    updater thread fed by this run's timeline appends; its final state is published as the run ends.

    Its records writes, in its steps' tasks too, wait out a records database that stops answering for
    up to records.db.OUTAGE_PATIENCE_SECONDS (a restart, a fail-over) instead of failing the run."""
    live = LiveViewUpdater(first_view_wait=FIRST_VIEW_WAIT_SECONDS)
    try:
        with waiting_out_outages():
            return _execute_runbook(runbook_id, parameters, level=level, incident_id=incident_id, source=source,
                                    drill=drill, summary=summary, live=live)
    finally:
        if live.incident_id is not None:
            first_pages.forget(live.incident_id)
        live.stop()


def _execute_runbook(
    runbook_id: str,
    parameters: dict[str, Any] | BaseModel | None,
    *,
    level: Level | str | None,
    incident_id: str | None,
    source: str,
    drill: bool,
    summary: str | None,
    live: LiveViewUpdater,
) -> RunSummary | State[RunSummary]:
    logger = get_run_logger()
    loaded = load_runbook(runbook_id)
    runbook = loaded.runbook
    raw = parameters.model_dump() if isinstance(parameters, BaseModel) else dict(parameters or {})
    try:
        params = library.parameter_model(runbook).model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        raise RunbookFailed(f"parameters rejected for runbook {runbook.id}: {exc}") from exc
    resolved_level = library.resolve_level(runbook, params, level)
    flow_run_id = str(current_flow_run.id) if current_flow_run.id else None
    title = summary or runbook.title

    # One run per incident at a time, held while paused too (see records.run_locks).
    lock_holder = flow_run_id or f"local-{uuid.uuid4().hex}"
    if not incident_id and flow_run_id:
        # A retry of this flow run carries on the incident its first attempt opened (so recorded
        # side effects and the run-failure page are reused, not repeated for a second incident).
        incident_id = incidents.incident_of_flow_run(flow_run_id)
    acquired = None  # here (attaching to an incident), or by run_locks.held below (a new one)
    if incident_id:
        try:
            asked = time.monotonic()
            acquired = (run_locks.acquire(incident_id, lock_holder), asked)
        except run_locks.IncidentBusy as exc:
            incidents.append_event(incident_id, phase=EventPhase.note, status="run-refused",
                                   actor=f"runbook:{runbook.id}", summary=str(exc), flow_run_id=flow_run_id)
            raise RunbookFailed(str(exc)) from exc
        incidents.attach_run(incident_id, flow_run_id)
        incident = incidents.get_incident(incident_id)
        resolved_level = Level(incident.level) if level is None else resolved_level
        drill = incident.drill
    else:
        incident = incidents.open_incident(
            runbook_id=runbook.id, runbook_version=runbook.version, title=title, level=resolved_level.value,
            source=source, parameters=params, drill=drill, summary=summary, flow_run_id=flow_run_id,
        )
    first_pages.expect(incident.id)
    _rename_flow_run(flow_run_id, f"{incident.id} · {runbook.id}{' (drill)' if drill else ''}")
    live.follow(incident.id)
    logger.info("incident: %s  runbook: %s v%s  level: %s", incident.id, runbook.id, runbook.version, resolved_level.value)

    def paged() -> None:
        live.release()
        first_pages.paged(incident.id)

    run = _Run(runbook, incident.id, resolved_level, params, drill, flow_run_id, incident_uid=incident.uid,
               paged=paged)
    alarm = None
    run_stop.forget(flow_run_id)  # a retry of this flow run starts afresh
    with run_locks.held(incident.id, lock_holder, acquired=acquired) as lease, heartbeat(incident.id):
        run.lease = lease
        try:
            _schedule(run, title, summary)
        finally:
            run_stop.forget(flow_run_id)  # what was told to stop has stopped; the alarm below must page
        lost = lease.lost
        if lost is None and run.aborted_by:
            message = f"step {run.aborted_by!r} failed and its policy is abort: " + "; ".join(run.failures)
            # No incident ends silently: page its responsible roles before the end is recorded (a crash in
            # between leaves the run to reconcile, whose page has the same key). Inside the lock and the
            # heartbeat, because the page may follow an escalation policy and wait for an acknowledgement.
            alarm = run_failure.raise_alarm(incident.id, outcome=RunState.failed, reason=message,
                                            flow_run_id=flow_run_id, runbook=runbook, wait_for_acknowledgement=True,
                                            actor=f"runbook:{runbook.id}")

    if lost is not None:
        _end_lost_run(run, lost)
    if run.stopping and not run.aborted_by:
        return _end_cancelled_run(run, run.stopping)
    if run.aborted_by:
        assert alarm is not None
        final = incidents.set_run_state(incident.id, RunState.failed, error=message)
        first_pages.wait_for_first_pages(incident.id)
        publish_report(incident.id, flow_run_id)  # the failed run's report is the one auditors want most
        attention = f"{incident.id} NEEDS ATTENTION (still {final.status})" if final.needs_attention else incident.id
        raise RunbookFailed(f"{message} — {attention}: {alarm.summary}")
    incidents.set_run_state(incident.id, RunState.completed,
                            error=("; ".join(run.failures) if run.failures else None))
    first_pages.wait_for_first_pages(incident.id)  # its report and final view: after others' first pages
    publish_report(incident.id, flow_run_id)
    final = incidents.get_incident(incident.id)
    result = RunSummary(incident_id=incident.id, runbook=runbook.id, level=resolved_level.value, status=final.status,
                        run_state=final.run_state, steps=run.results, needs_attention=final.needs_attention,
                        attention_reason=final.attention_reason)
    if final.needs_attention:
        # The run completed but left the incident open: the flow run's final state says so, in the UI too.
        logger.warning("%s needs attention: %s", incident.id, final.attention_reason)
        return Completed(message=f"{incident.id} NEEDS ATTENTION: {final.attention_reason}", data=result)
    return result


def _end_lost_run(run: _Run, reason: str) -> typing.NoReturn:
    """The run no longer holds its incident: say so on the timeline and end the run failed. Its end is
    not recorded on the incident here (another run may drive it now); the flow-run hook records it,
    and raises the alarm, if the incident is still this run's."""
    not_done = [s.id for s in run.runbook.steps if s.id not in run.results]
    summary = (f"Run stopped: it no longer holds the incident's run lock ({reason}); nothing more is started"
               + (f"; steps not done: {', '.join(not_done)}" if not_done else ""))
    incidents.append_event(run.incident_id, phase=EventPhase.note, status="run-lease-lost",
                           actor=f"runbook:{run.runbook.id}", summary=summary, error=reason,
                           flow_run_id=run.flow_run_id,
                           data={"generation": run.lease.generation if run.lease else None, "not_done": not_done})
    get_run_logger().error("%s: %s", run.incident_id, summary)
    raise RunLeaseLost(f"{run.incident_id}: {summary}")


def _end_cancelled_run(run: _Run, reason: str) -> State[Any]:
    """The run was cancelled while it ran (a gate saw it): its gates are withdrawn and nothing more
    started. A cancellation is somebody's decision: it pages nobody; the incident needs attention."""
    incidents.set_run_state(run.incident_id, RunState.cancelled, error=reason)
    publish_report(run.incident_id, run.flow_run_id)
    return Cancelled(message=f"{run.incident_id}: {reason}")


def _schedule(run: _Run, title: str, summary: str | None) -> None:
    remaining = list(run.runbook.steps)
    # Everything in flight, as one kind of future so a single wait covers both Prefect
    # task runs and in-flow actions; the value says how to read the step's result.
    running: dict[concurrent.futures.Future[Any], tuple[Step, PrefectFuture[Any] | None]] = {}
    # Gates take turns: a flow run has one Paused state (one pause key, one input form in the
    # UI), so two gates pausing at once would overwrite each other. A gate that becomes ready
    # while another is waiting starts, with its `when` evaluated then, once that one is decided.
    gate_in_flight: str | None = None
    told_to_wait: set[str] = set()
    # Escalations of failed steps: Prefect task futures in `running` like any step's, so paging never
    # holds up the rest of the graph; these are the ones whose end is read as an escalation's.
    escalations: set[concurrent.futures.Future[Any]] = set()
    while remaining or running or run.escalations:
        if run.lease_lost():
            _withdraw_gates(run, running, f"it lost its incident's run lock ({run.lease_lost()})")
            return  # start nothing more; the caller records why and ends the run
        _watch_for_cancellation(run)
        if run.aborted_by or run.stopping or run_stop.reason(run.flow_run_id):
            _stop(run, remaining)  # a step aborted the run, or it was cancelled
        # A step that is skipped or fails before submission finishes at once and
        # may make others ready, so keep starting until nothing more is ready.
        started = True
        while started:
            started = False
            for step in [s for s in remaining if all(n in run.results for n in s.needs)]:
                if _is_in_flow(step) and gate_in_flight:
                    if step.id not in told_to_wait:
                        told_to_wait.add(step.id)
                        _record_gate_turn(run, step, gate_in_flight)
                    continue
                remaining.remove(step)
                started = True
                launched = _start(run, step, title, summary)
                if launched is not None:
                    done, task_future = launched
                    running[done] = (step, task_future)
                    if task_future is None:
                        gate_in_flight = step.id
        _track_escalations(run, running, escalations)
        if not running:
            if remaining:  # cannot happen for a validated runbook (no cycles); guard anyway
                raise RunbookFailed(f"steps never became ready: {[s.id for s in remaining]}")
            break
        # With a timeout, so a lost lease is noticed while a long step or a paused gate runs.
        finished, _ = concurrent.futures.wait(running, timeout=LEASE_POLL_SECONDS,
                                              return_when=concurrent.futures.FIRST_COMPLETED)
        for done in finished:
            step, task_future = running.pop(done)
            if done in escalations:
                escalations.discard(done)
                assert task_future is not None
                _finish_escalation(run, step, task_future)
            elif task_future is None:
                gate_in_flight = None
                _finish_in_flow(run, step, done)
            else:
                _finish(run, step, task_future)


def _watch_for_cancellation(run: _Run) -> None:
    """Every CANCEL_POLL_SECONDS: if Prefect shows this run Cancelling (or Cancelled), ask its steps
    to stop (tasks.run_stop); the run then withdraws its gates, starts nothing more and ends Cancelled."""
    if run.flow_run_id is None or run.stopping or time.monotonic() < run.next_cancel_check:
        return
    run.next_cancel_check = time.monotonic() + CANCEL_POLL_SECONDS
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(uuid.UUID(run.flow_run_id)).state
    except Exception as exc:  # noqa: BLE001  Prefect away for a moment: the run goes on, asked again later
        get_run_logger().debug("could not read the run's state: %s", exc)
        return
    if state is not None and (state.is_cancelling() or state.is_cancelled()):
        run_stop.request(run.flow_run_id, "cancelled" + (f": {state.message}" if state.message else ""))


def _stop(run: _Run, remaining: list[Step]) -> None:
    """Stop the run: tell what runs to stop (a waiting gate is withdrawn, a waiting step gives up) and
    skip every step not yet started, with the reason, now rather than as each becomes ready."""
    if run.stopping is None:
        run.stopping = (f"run aborted after step {run.aborted_by!r} failed" if run.aborted_by
                        else run_stop.reason(run.flow_run_id) or "run stopped")
        run_stop.request(run.flow_run_id, run.stopping)
        incidents.append_event(run.incident_id, phase=EventPhase.note, status="run-stopping",
                               actor=f"runbook:{run.runbook.id}",
                               summary=f"Run stopping ({run.stopping}): nothing more starts; waiting approval gates "
                                       f"are withdrawn" + (f"; not started: {', '.join(s.id for s in remaining)}"
                                                           if remaining else ""),
                               flow_run_id=run.flow_run_id, data={"not_started": [s.id for s in remaining]})
    for step in list(remaining):
        _record_skip(run, step, run.stopping)
    remaining.clear()


def _withdraw_gates(run: _Run, running: dict[concurrent.futures.Future[Any], tuple[Step, PrefectFuture[Any] | None]],
                    reason: str) -> None:
    """A run that lost its lease ends at once; a gate it leaves waiting is withdrawn first (so its form
    no longer accepts a decision), waiting a bounded time for the gate's thread to let go."""
    run.stopping = run.stopping or reason
    run_stop.request(run.flow_run_id, run.stopping)
    gates = [done for done, (_step, task_future) in running.items() if task_future is None]
    if gates:
        concurrent.futures.wait(gates, timeout=GATE_WITHDRAW_SECONDS)


def _is_in_flow(step: Step) -> bool:
    return ACTIONS[step.action].prefect_task is None


def _record_gate_turn(run: _Run, step: Step, waiting_on: str) -> None:
    incidents.append_event(run.incident_id, phase=EventPhase.note, status="waiting-for-gate",
                           actor=f"runbook:{run.runbook.id}",
                           summary=f"{step.display_title}: ready; waits for step {waiting_on!r} to be decided "
                                   "before it starts",
                           step_id=step.id, action=step.action, flow_run_id=run.flow_run_id)


def _record_skip(run: _Run, step: Step, reason: str) -> None:
    run.results[step.id] = StepResult(status="skipped", error=reason)
    incidents.append_event(run.incident_id, phase=EventPhase.note, status="skipped", actor=f"runbook:{run.runbook.id}",
                           summary=f"{step.display_title}: skipped ({reason})", step_id=step.id, action=step.action,
                           flow_run_id=run.flow_run_id)


def _start(run: _Run, step: Step, title: str, summary: str | None
           ) -> tuple[concurrent.futures.Future[Any], PrefectFuture[Any] | None] | None:
    """Start the step; None if it finished at once (skipped, or failed before it could start),
    else a future that completes when it ends, and its Prefect task future (None for an
    in-flow action, whose future holds its output)."""
    if run.aborted_by:
        _record_skip(run, step, f"run aborted after step {run.aborted_by!r} failed")
        return None
    # The level as it is now: an operator (flows.operator_actions) or a set_level step may have changed it.
    run.level = Level(incidents.level_of(run.incident_id))
    context = run.context(title, summary)
    try:
        if step.when is not None and not evaluate(step.when, context):
            _record_skip(run, step, f"condition `{step.when}` is false")
            return None
        arguments = render_value(step.with_, context)
    except EVALUATION_ERRORS as exc:  # a template that fails on real data is a step failure, not a crash
        error = f"{type(exc).__name__}: {exc}"
        run.results[step.id] = StepResult(status="failed", error=error)
        incidents.append_event(run.incident_id, phase=EventPhase.outcome, status="failed",
                               actor=f"runbook:{run.runbook.id}", summary=f"{step.display_title}: could not evaluate its templates",
                               error=error, step_id=step.id, action=step.action, flow_run_id=run.flow_run_id)
        _apply_policy(run, step, error)
        return None
    step_context = run.step_context(step_id=step.id, step_title=step.display_title, action=step.action,
                                    timeout=step.timeout)
    spec = ACTIONS[step.action]
    if spec.prefect_task is None:  # an in-flow action (a gate): in its own thread, so only its dependants wait
        # A gate pages its approvers at once and then waits for a person: the live view must show it now.
        run.paged()
        return _in_thread(f"{step.id}-{run.incident_id}", spec.run_in_flow, step_context, arguments), None
    prefect_task = spec.prefect_task.with_options(
        task_run_name=step.id,
        retries=step.retries,
        retry_delay_seconds=step.retry_delays() or 0,
        # Prefect's timeout is the backstop, a little after the step's own deadline (tasks.base.Attempt),
        # which the actions honour and which records the attempt's failure. At the same instant,
        # Prefect's cancellation raised into the thread interrupted that very record (seen under load).
        timeout_seconds=step.timeout + PREFECT_TIMEOUT_MARGIN_SECONDS,
    )
    upstream = [allow_failure(run.futures[n]) for n in step.needs if n in run.futures]
    future = prefect_task.submit(step_context, arguments, wait_for=upstream)
    run.futures[step.id] = future
    return _when_done(future), future


def _when_done(future: PrefectFuture[Any]) -> concurrent.futures.Future[None]:
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    future.add_done_callback(lambda _finished: done.set_result(None))
    return done


def _in_thread(name: str, function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
    """Run `function` in a new thread inside a copy of this flow run's context (Prefect's run
    context, logger and task runner, which pause_flow_run and task submission look up).

    A daemon thread: if the run ends some other way (crash, cancellation) while a gate
    waits, the process must not be held open until that gate's timeout."""
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def body() -> None:
        done.set_running_or_notify_cancel()
        try:
            done.set_result(context.run(function, *args))
        except BaseException as exc:  # noqa: BLE001  handed whole to the scheduler's thread, which decides (_finish_in_flow)
            done.set_exception(exc)

    threading.Thread(target=body, name=name, daemon=True).start()
    return done


def _finish_in_flow(run: _Run, step: Step, done: concurrent.futures.Future[Any]) -> None:
    _note_paging(run, step)
    exc = done.exception()
    if exc is None:
        run.results[step.id] = StepResult(status="succeeded", output=done.result())
        return
    if not isinstance(exc, Exception):  # cancellation, interpreter exit: not a step failure
        raise exc
    error = f"{type(exc).__name__}: {exc}"
    run.results[step.id] = StepResult(status="failed", error=error)
    _apply_policy(run, step, error, exc)


def _note_paging(run: _Run, step: Step) -> None:
    if step.action == "notify":  # delivered or not, the page was tried: nothing more to wait for
        run.paged()


def _finish(run: _Run, step: Step, future: PrefectFuture[Any]) -> None:
    future.wait()
    _note_paging(run, step)
    state = future.state
    if state.is_completed():
        run.results[step.id] = StepResult(status="succeeded", output=future.result())
        return
    error = future.result(raise_on_failure=False)
    message = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(state.message or state.name)
    run.results[step.id] = StepResult(status="failed", error=message)
    _apply_policy(run, step, message, error)


def _apply_policy(run: _Run, step: Step, error: str, exc: Any = None) -> None:
    if isinstance(exc, RunStopping) and run.stopping:
        return  # it gave up because the run is stopping (a withdrawn gate): not a failure of its own
    run.failures.append(f"{step.id}: {error}")
    if isinstance(exc, run_locks.LeaseLost) and run.lease is not None:
        run.lease.mark_lost(exc.reason)  # the step's intent was refused: no policy applies, the run ends
    if run.lease_lost():
        return
    if step.on_failure is FailurePolicy.abort:
        run.aborted_by = run.aborted_by or step.id
    elif step.on_failure is FailurePolicy.escalate and not (run.aborted_by or run.stopping):
        _escalate(run, step, error)


def _escalate(run: _Run, step: Step, error: str) -> None:
    notify = ACTIONS["notify"].as_task.with_options(task_run_name=f"{step.id}-escalation", retries=2,
                                                    retry_delay_seconds=[1, 2])
    context = run.step_context(step_id=f"{step.id}__escalation", step_title=f"Escalation of {step.display_title}",
                               action="notify", timeout=60)
    arguments = {"to": step.escalate_to, "title": f"Step failed: {step.display_title}",
                 "message": f"Runbook {run.runbook.title}: step '{step.display_title}' failed and needs a decision.\n{error}"}
    if run.runbook.has_zh:  # a Chinese-speaking contact is told in Chinese (the error stays as recorded)
        arguments |= {"title_zh": f"步骤失败：{step.title_in('zh')}",
                      "message_zh": f"预案「{run.runbook.title_in('zh')}」的步骤「{step.title_in('zh')}」失败，需要决定。\n{error}"}
    # Tracked by the scheduler like any step (_track_escalations), never waited for here: the rest of
    # the runbook keeps starting and finishing its steps while the escalation pages.
    run.escalations.append((step, notify.submit(context, arguments)))


def _track_escalations(run: _Run, running: dict[concurrent.futures.Future[Any], tuple[Step, PrefectFuture[Any] | None]],
                       escalations: set[concurrent.futures.Future[Any]]) -> None:
    while run.escalations:
        step, future = run.escalations.pop(0)
        done = _when_done(future)
        running[done] = (step, future)
        escalations.add(done)


def _finish_escalation(run: _Run, step: Step, future: PrefectFuture[Any]) -> None:
    future.wait()
    if not future.state.is_completed():
        # Nobody knows the step failed: that is as bad as an abort.
        run.failures.append(f"{step.id}: escalation to {', '.join(step.escalate_to or [])} failed")
        run.aborted_by = run.aborted_by or step.id


def _rename_flow_run(flow_run_id: str | None, name: str) -> None:
    if not flow_run_id or current_flow_run.name == name:  # the intake names its runs so already
        return
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(uuid.UUID(flow_run_id), name=name)
    except Exception as exc:  # noqa: BLE001  cosmetic; never fail a run over a name
        get_run_logger().warning("could not rename flow run: %s", exc)


def _runbook_ids() -> list[str]:
    """The runbook ids in the runbooks directory: the list the run-runbook form offers."""
    from firebreak.settings import get_settings

    return sorted(path.stem for path in get_settings().runbooks_dir.glob("*.yaml"))


#: The form offers the runbooks as a list; a Python caller may still pass a runbook file's path.
RunbookChoice = typing.Annotated[str, WithJsonSchema({"type": "string", "enum": _runbook_ids()})]


def run_runbook(
    runbook: RunbookChoice,
    parameters: dict[str, Any] = {},  # noqa: B006  (never mutated: the engine copies it; a default the form can show)
    level: forms.Level = forms.LevelChoice.auto,
    incident_id: forms.IncidentRef = "",
    source: forms.Source = forms.StartedBy.operator,
    drill: bool = False,
    summary: forms.OptionalText = "",
) -> RunSummary:
    """Run any runbook by id.

    Args:
        runbook: The runbook to run (runbooks/<id>.yaml).
        parameters: Its parameters as a JSON object, e.g. {"service_url": "http://127.0.0.1:8765"}; fields left out take the runbook's defaults.
        level: Response level. auto lets the runbook's rules decide; I, II or III sets it.
        incident_id: Empty opens a new incident. An incident id (INC-2026-0001) runs this runbook on that incident.
        source: Who started it; leave operator when you start it here.
        drill: A drill (practice): marked as such everywhere; approval gates follow their drill policy.
        summary: One line saying what is happening, shown in pages and the report. Empty: the runbook's title.
    """
    # A Completed state returned here is unwrapped by Prefect: calling the flow gives its RunSummary.
    return execute_runbook(runbook, parameters, level=forms.LevelChoice(level).explicit(),  # type: ignore[return-value]  # Prefect unwraps a returned state
                           incident_id=incident_id or None, source=forms.StartedBy(source).value, drill=drill,
                           summary=summary or None)


# This module's annotations are strings (`from __future__ import annotations`). A flow-run process
# started by a runner or worker loads the flow from its file under another module name, where
# Prefect's parameter model cannot look `Level` up by name ("Run_RunbookModel is not fully
# defined"), so every deployed run failed before its first step. Resolved here, once, instead.
run_runbook.__annotations__ = typing.get_type_hints(run_runbook, include_extras=True)
run_runbook = flow(name="run-runbook", description="Run any Firebreak runbook definition by id.",
                   **RUNBOOK_FLOW_OPTIONS)(run_runbook)
