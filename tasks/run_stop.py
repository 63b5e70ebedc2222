"""Telling the steps of a run that the run is stopping.

When a step aborts the run, the run loses its incident's run lock, or the run is cancelled,
the engine (flows.engine) asks the run to stop: nothing new starts, and what is waiting gives
up instead of waiting out its own timeout. A paused approval gate is withdrawn (tasks.approval),
a step sleeping between polls or escalation tiers ends (tasks.base.Attempt.sleep raises
RunStopping), and a step attempt that has not started yet is not started (tasks.base).

The signal lives in this process, keyed by flow run id: the engine's steps run here (the gate in
a thread of the flow, Prefect tasks in the flow's thread pool). It is not a record of anything;
the timeline says what stopped and why.
"""
from __future__ import annotations

import threading

from firebreak.errors import StepFailed

_lock = threading.Lock()
_reasons: dict[str, str] = {}
_events: dict[str, threading.Event] = {}


class RunStopping(StepFailed, RuntimeError):
    """The run is stopping (a step aborted it, it lost its incident, or it was cancelled): this step
    gives up instead of waiting or acting. Not a failure of its own; no failure policy applies."""


def _event(flow_run_id: str) -> threading.Event:
    with _lock:
        event = _events.get(flow_run_id)
        if event is None:
            event = _events[flow_run_id] = threading.Event()
        return event


def request(flow_run_id: str | None, reason: str) -> None:
    """Ask every step of the run to stop; the first reason given is kept."""
    if not flow_run_id:
        return
    with _lock:
        _reasons.setdefault(flow_run_id, reason)
    _event(flow_run_id).set()


def reason(flow_run_id: str | None) -> str | None:
    """Why the run is stopping, or None while it is not."""
    if not flow_run_id:
        return None
    with _lock:
        return _reasons.get(flow_run_id)


def wait(flow_run_id: str | None, seconds: float) -> str | None:
    """Sleep up to `seconds`, waking at once if the run is asked to stop; returns the reason, if any."""
    if not flow_run_id:
        threading.Event().wait(max(seconds, 0.0))
        return None
    _event(flow_run_id).wait(max(seconds, 0.0))
    return reason(flow_run_id)


def check(flow_run_id: str | None, what: str) -> None:
    """Raise RunStopping if the run is stopping; `what` names what does not happen."""
    why = reason(flow_run_id)
    if why is not None:
        raise RunStopping(f"{what}: the run is stopping ({why})")


def forget(flow_run_id: str | None) -> None:
    """Forget the run's stop request (its end, or a retry of the same flow run starting afresh)."""
    if not flow_run_id:
        return
    with _lock:
        _reasons.pop(flow_run_id, None)
        _events.pop(flow_run_id, None)
