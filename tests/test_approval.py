"""Approval gates: a run pauses for input, a person answers through the API
(`resume(..., run_input=...)`, what the Prefect UI form does), and the
decision is on the timeline. A paused gate holds back only the steps that need
it; two gates take turns. Also the timeout policies, the drill policy, and
that a paused run keeps a second run of its incident from starting."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from records.incidents import events, get_incident, list_incidents
from tests.polling import wait_for
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


def branching(tmp_path: Path, name: str, on_failure: str) -> Path:
    """A gate and, beside it, a branch that needs only the gate's predecessor: two steps in a row,
    so the second is started (not merely still running) while the run is paused."""
    return write_runbook(tmp_path, name, [
        {"id": "assess", "action": "record", "with": {"message": "load measured"}},
        {"id": "approve_notice", "action": "approval", "needs": ["assess"], "on_failure": on_failure,
         "with": {"action": "publish a notice", "reason": "lines are busy", "timeout": 60}},
        {"id": "publish_notice", "action": "record", "needs": ["approve_notice"],
         "when": "steps.approve_notice.status == 'succeeded'", "with": {"message": "notice published"}},
        {"id": "divert", "action": "wait", "needs": ["assess"], "with": {"seconds": 2.0}},
        {"id": "mitigated", "action": "record", "needs": ["divert"], "with": {"message": "callers diverted"}},
    ])


def prefect_view(flow_run_id: str) -> tuple[list[Any], dict[str, Any]]:
    """The flow run's state history and its task runs by name, as the Prefect server has them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(states, key=lambda s: s.timestamp), {t.name: t for t in task_runs}


@pytest.mark.parametrize(("decision", "on_failure"), [("approve", "continue"), ("reject", "continue"),
                                                      ("reject", "abort")])
def test_a_paused_gate_holds_back_only_its_dependants(tmp_path: Path, decision: str, on_failure: str) -> None:
    run = Background(branching(tmp_path, f"gate-branch-{decision}-{on_failure}", on_failure))
    incident_id, flow_run_id = run.paused_incident()

    # While the gate waits, the branch that does not need it runs to its end.
    wait_for(lambda: step_events(incident_id, "mitigated")[-1:] == [("outcome", "succeeded", 1)], timeout=30,
             what="the independent branch to finish while the run is paused")
    assert step_events(incident_id, "divert")[-1] == ("outcome", "succeeded", 1)
    assert step_events(incident_id, "publish_notice") == []
    states, _ = prefect_view(flow_run_id)
    assert states[-1].is_paused()
    paused_at = next(s.timestamp for s in states if s.is_paused())
    # Prefect records task runs started while the flow run is Paused (task states are reported
    # by the client, not refused by the server); their events reach the server shortly after.
    _, task_runs = wait_for(
        lambda: (view := prefect_view(flow_run_id))[1].get("mitigated") and view[1]["mitigated"].state.is_completed()
        and view, timeout=30, what="Prefect to record the task run started while paused")
    assert task_runs["divert"].state.is_completed()
    assert task_runs["mitigated"].start_time > paused_at

    resume(flow_run_id, run_input={"decision": decision, "approver": "Zhou Min", "comment": "checked"})
    state = run.finish()
    states, _ = prefect_view(flow_run_id)
    assert [s.type.value for s in states][-3:] == ["PAUSED", "RUNNING", "COMPLETED" if on_failure == "continue"
                                                   else "FAILED"]
    if decision == "approve":
        assert state.is_completed()
        assert step_events(incident_id, "publish_notice")[-1] == ("outcome", "succeeded", 1)
    elif on_failure == "continue":
        assert state.is_completed()
        skipped = next(e for e in events(incident_id) if e.step_id == "publish_notice")
        assert skipped.status == "skipped" and "is false" in skipped.summary
    else:  # the rejection aborts: nothing new starts, and what already ran stays done
        assert state.is_failed()
        assert get_incident(incident_id).run_state == "failed"
        skipped = next(e for e in events(incident_id) if e.step_id == "publish_notice")
        assert skipped.status == "skipped" and "run aborted after step 'approve_notice'" in skipped.summary
    assert step_events(incident_id, "mitigated")[-1] == ("outcome", "succeeded", 1)


def test_two_gates_ready_at_once_take_turns(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "gate-turns", [
        {"id": "assess", "action": "record", "with": {"message": "load measured"}},
        {"id": "approve_notice", "action": "approval", "needs": ["assess"],
         "with": {"action": "publish a notice", "reason": "lines are busy", "timeout": 60}},
        {"id": "approve_overtime", "action": "approval", "needs": ["assess"], "on_failure": "continue",
         "with": {"action": "call in the overtime roster", "reason": "queue is long", "timeout": 60}},
    ])
    run = Background(path)
    incident_id, flow_run_id = run.paused_incident()
    assert [e.step_id for e in events(incident_id) if e.status == "awaiting-approval"] == ["approve_notice"]
    queued = next(e for e in events(incident_id) if e.status == "waiting-for-gate")
    assert queued.step_id == "approve_overtime" and "approve_notice" in queued.summary
    resume(flow_run_id, run_input={"decision": "approve", "approver": "Zhou Min"})

    asked = wait_for(lambda: next((e for e in events(incident_id) if e.status == "awaiting-approval"
                                   and e.step_id == "approve_overtime"), None), what="the second gate to ask")
    decided = next(e for e in events(incident_id) if e.status == "approved" and e.step_id == "approve_notice")
    assert decided.seq < asked.seq
    run.paused_incident()
    resume(flow_run_id, run_input={"decision": "reject", "approver": "Qian Li", "comment": "not today"})
    assert run.finish().is_completed()
    assert step_events(incident_id, "approve_overtime")[-1][:2] == ("outcome", "failed")


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
    # Once the first run has ended, the incident is free for a new run, which asks again: an approval
    # holds for the run that asked for it (reuse per run), never for a later run.
    again = Background(path, incident_id=incident_id)
    same, second_run = again.paused_incident()
    assert same == incident_id and second_run != flow_run_id
    resume(second_run, run_input={"decision": "approve", "approver": "Qian Li"})
    assert again.finish().is_completed()
    assert ("note", "reused", 1) not in step_events(incident_id, "approve_failover")
    assert [e.status for e in events(incident_id)].count("awaiting-approval") == 2
