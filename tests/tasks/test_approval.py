"""Approval gates: a run pauses for input, a person answers through the API
(`resume(..., run_input=...)`, what the Prefect UI form does), and the
decision is on the timeline. A paused gate holds back only the steps that need
it; two gates take turns. Also the timeout policies, the drill policy, and
that a paused run keeps a second run of its incident from starting."""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from records.incidents import events, get_incident, list_incidents
from tests.gated_runs import Background, gated, resume
from tests.polling import wait_for
from tests.runbook_helpers import step_events, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")








def test_approved_through_the_api(tmp_path: Path) -> None:
    run = Background(gated(tmp_path, "gate-approve", timeout=60))
    incident_id, flow_run_id = run.paused_incident()
    waiting = [e for e in events(incident_id) if e.status == "awaiting-approval"]
    assert waiting and waiting[0].data["action"] == "fail over chat to the standby"
    resume(flow_run_id, run_input={"decision": "approve", "approver": "Qian Li", "comment": "go"})
    state = run.finish()
    assert state.is_completed()
    decision = next(e for e in events(incident_id) if e.status == "approved")
    # "Qian Li" names a contact (the Latin part of 钱丽 Qian Li): recorded as the directory names her.
    assert decision.actor == "钱丽 Qian Li" and decision.data["comment"] == "go" and decision.data["decided_at"]
    assert decision.data["approver_id"] == "qian-li" and decision.data["approver_verified"] is True
    assert step_events(incident_id, "fail_over")[-1][:2] == ("outcome", "succeeded")


def test_rejected_through_the_api(tmp_path: Path) -> None:
    run = Background(gated(tmp_path, "gate-reject", timeout=60))
    incident_id, flow_run_id = run.paused_incident()
    resume(flow_run_id, run_input={"decision": "reject", "approver": "Zhao Min", "comment": "standby is cold"})
    state = run.finish()
    assert state.is_completed()  # on_failure: continue — the run goes on without the fail-over
    timeline = events(incident_id)
    decision = next(e for e in timeline if e.status == "rejected")
    # Zhao Min is no contact: the rejection still counts, recorded with the name as given, marked unverified.
    assert decision.actor == "Zhao Min (unverified: not a contact)" and decision.data["comment"] == "standby is cold"
    assert decision.data["approver"] == "Zhao Min" and decision.data["approver_verified"] is False
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
    # The escalated wait lasts one more `timeout`, and the Resume below must land inside it: 2 s was
    # missed on a loaded machine (the run completed refused, with no decision), so 8 s.
    run = Background(gated(tmp_path, "gate-escalate", timeout=8, on_timeout="escalate",
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


# ------------------------------------------------------------------ abort means stop (issue 9 #4)

def test_an_abort_withdraws_a_waiting_gate_and_ends_the_run(tmp_path: Path, notify_config) -> None:
    """Issue 9 #4: an aborted run waited for an unrelated gate until its timeout (here an hour), stayed
    Paused, held the incident's run lock, and the gate could still be approved."""
    from prefect.client.orchestration import get_client

    from records import run_locks
    from tests.http_receivers import ScriptedServer
    from tests.notifications_support import contact

    fail_now = threading.Event()
    with ScriptedServer([(200, {"ok": True})]) as lead, ScriptedServer([(200, {"ok": True})]) as tech, \
            ScriptedServer([(503, {"error": "standby refused"})], hold=fail_now, hold_max=120) as standby:
        notify_config.write([contact("lead", ["scenario_lead"], [f"json://{lead.url[7:]}/inbox"]),
                             contact("tech", ["technical_support"], [f"json://{tech.url[7:]}/inbox"])])
        path = write_runbook(tmp_path, "gate-withdrawn", [
            {"id": "approve_notice", "action": "approval", "on_failure": "continue",
             "with": {"action": "publish a notice", "reason": "lines are busy", "timeout": 3600}},
            {"id": "publish_notice", "action": "record", "needs": ["approve_notice"], "with": {"message": "x"}},
            # Independent of the gate; fails (on_failure: abort, the default) once the test lets it.
            {"id": "fail_over", "action": "http", "with": {"method": "POST", "url": f"{standby.url}/failover"}},
            {"id": "verify", "action": "record", "needs": ["fail_over"], "with": {"message": "y"}},
            {"id": "long_watch", "action": "wait", "with": {"seconds": 3600}},
        ])
        run = Background(path)
        incident_id, flow_run_id = run.paused_incident()
        fail_now.set()
        # A liveness deadline, not a speed claim: the gate's own timeout is an hour, the wait step's too.
        state = run.finish(timeout=120)

    assert state.is_failed()
    timeline = events(incident_id)
    withdrawn = [e for e in timeline if e.status == "approval-withdrawn"]
    assert len(withdrawn) == 1 and withdrawn[0].step_id == "approve_notice"
    assert "withdrawn (run aborted after step 'fail_over' failed)" in withdrawn[0].summary
    for step_id in ("publish_notice", "verify"):  # never started: skipped with the reason
        skipped = [e for e in timeline if e.step_id == step_id]
        assert [e.status for e in skipped] == ["skipped"]
        assert "run aborted after step 'fail_over' failed" in skipped[0].summary
    assert step_events(incident_id, "long_watch")[-1][:2] == ("outcome", "failed")  # stopped, not waited out
    assert any(e.status == "run-stopping" for e in timeline)
    # The gate no longer accepts a decision: Prefect refuses the resume, and nothing is approved.
    with get_client(sync_client=True) as client:
        assert not client.read_flow_run(flow_run_id).state.is_paused()
    with pytest.raises(Exception, match="(?i)paused|resumed"):
        resume(flow_run_id, run_input={"decision": "approve", "approver": "Qian Li"})
    assert not any(e.status == "approved" for e in events(incident_id))
    # The lock is released, and the run's end is recorded (failed: the alarm paged the lead and support).
    assert run_locks.current(incident_id).released_at is not None
    assert get_incident(incident_id).run_state == "failed"
    assert any("RUN FAILED" in json.loads(r["body"])["title"] for r in lead.requests)


def test_a_cancelled_run_withdraws_its_gate(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    from records import run_locks

    run = Background(gated(tmp_path, "gate-cancelled", timeout=3600))
    incident_id, flow_run_id = run.paused_incident()
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Cancelled(message="cancelled by an operator"), force=True)
    state = run.finish(timeout=120)
    assert state.is_cancelled()
    withdrawn = [e for e in events(incident_id) if e.status == "approval-withdrawn"]
    assert len(withdrawn) == 1 and "cancelled" in withdrawn[0].summary
    assert [e.status for e in events(incident_id) if e.step_id == "fail_over"] == ["skipped"]
    assert run_locks.current(incident_id).released_at is not None
    assert get_incident(incident_id).run_state == "cancelled"
    assert not any(e.status == "alarm" for e in events(incident_id))  # a cancellation pages nobody


# ------------------------------------------------------------------ gates ask at once (issue 9 #8)

def test_approvers_are_paged_at_once_with_the_link_and_told_of_the_timeout(tmp_path: Path, notify_config) -> None:
    """Issue 9 #8: approvers were paged only after the timeout. Now the page goes out the moment the gate
    waits (what, why, the deadline in UTC and the local zone, the paused run's link), and the timeout's
    outcome is paged too."""
    from tests.http_receivers import ScriptedServer
    from tests.notifications_support import contact

    with ScriptedServer([(200, {"ok": True})]) as lead, ScriptedServer([(200, {"ok": True})]) as tech:
        notify_config.write([contact("qian-li", ["scenario_lead"], [f"json://{lead.url[7:]}/inbox"], locale="zh"),
                             contact("tech", ["technical_support"], [f"json://{tech.url[7:]}/inbox"])])
        path = write_runbook(tmp_path, "gate-asks", [
            {"id": "approve_notice", "title": "Approve the notice", "action": "approval",
             "with": {"action": "publish a notice", "reason": "lines are busy", "timeout": 3,
                      "on_timeout": "proceed", "action_zh": "发布公告", "reason_zh": "线路繁忙"}},
            {"id": "publish_notice", "action": "record", "needs": ["approve_notice"], "with": {"message": "x"}},
        ])  # no `approvers`: the runbook's command role (scenario_lead) decides
        from flows.engine import run_runbook

        state = run_runbook(runbook=str(path), return_state=True)
    assert state.is_completed()
    incident = next(i for i in list_incidents(20) if i.runbook_id == path.stem)
    timeline = events(incident.id)
    asked = next(e for e in timeline if e.step_id == "approve_notice__approval_needed" and e.status == "delivered")
    timed_out = next(e for e in timeline if e.status == "approval-timed-out")
    told = next(e for e in timeline if e.step_id == "approve_notice__approval_timeout" and e.status == "delivered")
    assert asked.seq < timed_out.seq < told.seq  # asked while the gate waited, told once it timed out
    waiting = next(e for e in timeline if e.status == "awaiting-approval")
    assert waiting.data["approvers"] == ["scenario_lead"]

    first, last = (json.loads(r["body"]) for r in (lead.requests[0], lead.requests[-1]))
    assert len(lead.requests) == 2 and not tech.requests
    assert "【待决策】" in first["title"] and incident.id in first["title"]
    assert "将要执行：发布公告" in first["message"] and "原因：线路繁忙" in first["message"]
    assert re.search(r"决定期限：\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC（\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Asia/Shanghai）",
                     first["message"])
    assert f"/runs/flow-run/{incident.flow_run_id}" in first["message"]
    assert "无人决定" in last["title"] and "预案已在无人决定的情况下继续执行" in last["message"]


def test_the_approvers_page_escalates_until_the_gate_is_decided(tmp_path: Path, notify_config) -> None:
    from tests.http_receivers import ScriptedServer
    from tests.notifications_support import contact
    from tests.polling import wait_for

    with ScriptedServer([(200, {"ok": True})]) as marketing, ScriptedServer([(200, {"ok": True})]) as chief, \
            ScriptedServer([(200, {"ok": True})]) as tech:
        notify_config.write(
            [contact("zhou-min", ["marketing"], [f"json://{marketing.url[7:]}/inbox"], department="Marketing"),
             contact("zhao-gang", ["commander_in_chief"], [f"json://{chief.url[7:]}/inbox"], department="Administration"),
             contact("tech", ["technical_support", "scenario_lead"], [f"json://{tech.url[7:]}/inbox"])],
            policies={"decide": {"description": "test", "ack_timeout": 30,
                                 "tiers": [{"roles": ["commander_in_chief"], "ack_timeout": 30}]}})
        path = write_runbook(tmp_path, "gate-escalating-page", [
            {"id": "approve_notice", "action": "approval",
             "with": {"action": "publish a notice", "reason": "lines are busy", "timeout": 600,
                      "approvers": ["marketing"], "escalation": "decide"}},
        ], roles=["technical_support", "scenario_lead", "marketing", "commander_in_chief"])
        run = Background(path)
        incident_id, flow_run_id = run.paused_incident()
        wait_for(lambda: marketing.requests, timeout=30, what="Marketing to be asked while the run is paused")
        page = json.loads(marketing.requests[0]["body"])
        assert "Decision needed" in page["title"] and f"/runs/flow-run/{flow_run_id}" in page["message"]
        resume(flow_run_id, run_input={"decision": "approve", "approver": "Zhou Min"})
        assert run.finish().is_completed()
    assert not chief.requests  # decided within tier 1's time: the page stopped, the next tier was never paged
    stopped = next(e for e in events(incident_id) if e.status == "escalation-stopped")
    assert stopped.step_id == "approve_notice__approval_needed" and "the gate 'approve_notice' ended: approved" \
        in stopped.summary
    assert step_events(incident_id, "approve_notice__approval_needed")[-1][:2] == ("outcome", "succeeded")
