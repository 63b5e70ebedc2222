"""Approval gates: a run pauses for input, a person answers through the API
(`resume(..., run_input=...)`, what the Prefect UI form does), and the
decision is on the timeline. Also the timeout policies, the drill policy, and
that a paused run keeps a second run of its incident from starting."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from records.incidents import events, get_incident, list_incidents
from tests.runbook_helpers import step_events, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")


def gated(tmp_path: Path, name: str, **gate: Any) -> Path:
    return write_runbook(tmp_path, name, [
        {"id": "approve_failover", "title": "Approve the fail-over", "action": "approval",
         "with": {"action": "fail over chat to the standby", "reason": "primary is down for 10 minutes", **gate},
         "on_failure": gate.pop("on_failure", "continue") if "on_failure" in gate else "continue"},
        {"id": "fail_over", "action": "record", "needs": ["approve_failover"],
         "when": "steps.approve_failover.status == 'succeeded'", "with": {"message": "failed over"}},
    ])


def resume(flow_run_id: str, run_input: dict[str, Any]) -> None:
    """resume_flow_run, as the UI form does; the run saves its input form just after it enters
    Paused, so a resume in that instant is told "schema not found" and is tried again."""
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + 15
    while True:
        try:
            return resume_flow_run(flow_run_id, run_input=run_input)
        except RuntimeError as exc:
            if "schema not found" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Background:
    """Run a runbook in a thread (a flow run in this process) and find its incident once it pauses."""

    def __init__(self, path: Path, **kwargs: Any):
        from flows.engine import run_runbook

        self.path = path
        self.state: Any = None
        self.thread = threading.Thread(target=self._run, args=(run_runbook, kwargs), daemon=True)
        self.thread.start()

    def _run(self, run_runbook: Any, kwargs: dict[str, Any]) -> None:
        self.state = run_runbook(runbook=str(self.path), return_state=True, **kwargs)

    def paused_incident(self, timeout: float = 60) -> tuple[str, str]:
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            incident = next((i for i in list_incidents(50) if i.runbook_id == self.path.stem), None)
            if incident and incident.flow_run_id:
                with get_client(sync_client=True) as client:
                    if client.read_flow_run(incident.flow_run_id).state.is_paused():
                        return incident.id, incident.flow_run_id
            time.sleep(0.1)
        raise AssertionError("the run never paused")

    def finish(self, timeout: float = 60) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not finish"
        return self.state


def test_approved_through_the_api(tmp_path: Path) -> None:
    run = Background(gated(tmp_path, "gate-approve", timeout=60))
    incident_id, flow_run_id = run.paused_incident()
    waiting = [e for e in events(incident_id) if e.status == "awaiting-approval"]
    assert waiting and waiting[0].data["action"] == "fail over chat to the standby"
    resume(flow_run_id, run_input={"decision": "approve", "approver": "Qian Li", "comment": "go"})
    state = run.finish()
    assert state.is_completed()
    decision = next(e for e in events(incident_id) if e.status == "approved")
    assert decision.actor == "Qian Li" and decision.data["comment"] == "go" and decision.data["decided_at"]
    assert step_events(incident_id, "fail_over")[-1][:2] == ("outcome", "succeeded")


def test_rejected_through_the_api(tmp_path: Path) -> None:
    run = Background(gated(tmp_path, "gate-reject", timeout=60))
    incident_id, flow_run_id = run.paused_incident()
    resume(flow_run_id, run_input={"decision": "reject", "approver": "Zhao Min", "comment": "standby is cold"})
    state = run.finish()
    assert state.is_completed()  # on_failure: continue — the run goes on without the fail-over
    timeline = events(incident_id)
    decision = next(e for e in timeline if e.status == "rejected")
    assert decision.actor == "Zhao Min" and decision.data["comment"] == "standby is cold"
    assert step_events(incident_id, "approve_failover")[-1][:2] == ("outcome", "failed")
    assert ("note", "skipped", 1) in step_events(incident_id, "fail_over")


def test_timeout_policies(tmp_path: Path) -> None:
    from flows.engine import run_runbook

    proceed = gated(tmp_path, "gate-proceed", timeout=1, on_timeout="proceed")
    state = run_runbook(runbook=str(proceed), return_state=True)
    assert state.is_completed()
    incident = next(i for i in list_incidents(20) if i.runbook_id == proceed.stem)
    assert any(e.status == "approval-timed-out" and "proceeding" in e.summary for e in events(incident.id))
    assert step_events(incident.id, "fail_over")[-1][:2] == ("outcome", "succeeded")

    abort = write_runbook(tmp_path, "gate-abort", [
        {"id": "approve", "action": "approval", "with": {"action": "publish a notice", "reason": "r", "timeout": 1,
                                                         "on_timeout": "abort"}},
        {"id": "after", "action": "record", "needs": ["approve"], "with": {"message": "x"}},
    ])
    state = run_runbook(runbook=str(abort), return_state=True)
    assert state.is_failed()
    incident = next(i for i in list_incidents(20) if i.runbook_id == abort.stem)
    assert get_incident(incident.id).run_state == "failed"
    assert any(e.status == "approval-timed-out" and "refused" in e.summary for e in events(incident.id))
    assert step_events(incident.id, "after") == [("note", "skipped", 1)]


def test_escalate_on_timeout_pages_then_waits_again(tmp_path: Path, simulator) -> None:
    run = Background(gated(tmp_path, "gate-escalate", timeout=2, on_timeout="escalate",
                           escalate_to=["scenario_lead"]))
    incident_id, _ = run.paused_incident()
    deadline = time.monotonic() + 60
    while not any(e.status == "approval-escalated" for e in events(incident_id)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    _, flow_run_id = run.paused_incident()  # paused again, for the escalated decision
    resume(flow_run_id, run_input={"decision": "approve", "approver": "Qian Li"})
    assert run.finish().is_completed()
    assert any(e.step_id == "approve_failover__approval_escalation" and e.status == "delivered"
               for e in events(incident_id))
    assert any(e.status == "approved" for e in events(incident_id))


def test_drill_policy_decides_without_pausing(tmp_path: Path) -> None:
    from flows.engine import run_runbook

    path = gated(tmp_path, "gate-drill", timeout=600, in_drill="approve")
    state = run_runbook(runbook=str(path), drill=True, source="drill", return_state=True)
    assert state.is_completed()
    incident = next(i for i in list_incidents(20) if i.runbook_id == path.stem)
    decision = next(e for e in events(incident.id) if e.status == "approved")
    assert decision.actor == "drill-policy"


def test_a_paused_run_keeps_a_second_run_of_its_incident_from_starting(tmp_path: Path) -> None:
    from flows.engine import run_runbook

    path = gated(tmp_path, "gate-lock", timeout=60)
    run = Background(path)
    incident_id, flow_run_id = run.paused_incident()
    second = run_runbook(runbook=str(path), incident_id=incident_id, return_state=True)
    assert second.is_failed() and "already has a runbook run in progress" in str(second.message)
    assert get_incident(incident_id).flow_run_id == flow_run_id  # the paused run still owns the incident
    assert any(e.status == "run-refused" for e in events(incident_id))
    resume(flow_run_id, run_input={"decision": "approve", "approver": "Qian Li"})
    assert run.finish().is_completed()
    # Once the first run has ended, the incident is free for a new run; the recorded approval is
    # reused (keyed by incident and step, like every side effect) instead of asking again.
    assert run_runbook(runbook=str(path), incident_id=incident_id, return_state=True).is_completed()
    assert ("note", "reused", 1) in step_events(incident_id, "approve_failover")
