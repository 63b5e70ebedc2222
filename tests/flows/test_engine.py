"""Engine semantics against a real Prefect server: ordering, concurrency, retries,
timeouts, `when`, failure policies and side-effect idempotency."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from records.incidents import events, get_incident
from tests.http_receivers import ScriptedServer
from tests.runbook_helpers import run, step_events, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")


def note(step_id: str, message: str, needs: list[str] | None = None, **extra) -> dict:
    return {"id": step_id, "action": "record", "with": {"message": message}, "needs": needs or [], **extra}


def test_steps_run_in_dependency_order(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "ordered", [
        note("c", "third", needs=["b"]),
        note("a", "first"),
        note("b", "second", needs=["a"]),
    ])
    state, incident_id = run(path)
    assert state.is_completed()
    order = [e.step_id for e in events(incident_id) if e.phase == "intent"]
    assert order == ["a", "b", "c"]
    seqs = {e.step_id: e.seq for e in events(incident_id) if e.phase == "outcome"}
    starts = {e.step_id: e.seq for e in events(incident_id) if e.phase == "intent"}
    assert seqs["a"] < starts["b"] and seqs["b"] < starts["c"]


def test_independent_steps_run_concurrently(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "parallel", [
        {"id": "left", "action": "wait", "with": {"seconds": 1.0}},
        {"id": "right", "action": "wait", "with": {"seconds": 1.0}},
        note("join", "both done", needs=["left", "right"]),
    ])
    state, incident_id = run(path)
    assert state.is_completed()
    timeline = events(incident_id)
    start = {e.step_id: e.at for e in timeline if e.phase == "intent"}
    end = {e.step_id: e.at for e in timeline if e.phase == "outcome"}
    # Each branch started before the other finished: they overlapped.
    assert start["left"] < end["right"] and start["right"] < end["left"]
    assert start["join"] >= max(end["left"], end["right"])


def test_retry_then_success_is_visible_as_retries(tmp_path: Path) -> None:
    with ScriptedServer([(500, {"error": "boom"}), (502, {}), (200, {"status": "ok"})]) as flaky:
        path = write_runbook(tmp_path, "flaky", [
            {"id": "probe", "action": "http", "with": {"url": f"{flaky.url}/health"},
             "retries": 3, "retry_delay": 0.1, "retry_backoff": 2},
        ])
        state, incident_id = run(path)
    assert state.is_completed()
    assert len(flaky.requests) == 3
    assert step_events(incident_id, "probe") == [
        ("intent", "started", 1), ("outcome", "failed", 1),
        ("intent", "started", 2), ("outcome", "failed", 2),
        ("intent", "started", 3), ("outcome", "succeeded", 3),
    ]
    failed = [e for e in events(incident_id) if e.step_id == "probe" and e.status == "failed"]
    assert "returned 500" in failed[0].error and "returned 502" in failed[1].error


def test_retries_exhausted_fails_the_run_and_the_incident_records_it(tmp_path: Path) -> None:
    with ScriptedServer([(503, {})]) as down:
        path = write_runbook(tmp_path, "exhausted", [
            {"id": "probe", "action": "http", "with": {"url": down.url}, "retries": 1, "retry_delay": 0.05},
            note("after", "never", needs=["probe"]),
        ])
        state, incident_id = run(path)
    assert state.is_failed()
    incident = get_incident(incident_id)
    assert incident.run_state == "failed"
    assert "probe" in incident.run_error
    assert step_events(incident_id, "after") == [("note", "skipped", 1)]


def test_timeout_fails_the_attempt(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "slow", [
        {"id": "hold", "action": "wait", "with": {"seconds": 30}, "timeout": 0.5, "on_failure": "continue"},
        note("next", "carried on", needs=["hold"]),
    ])
    state, incident_id = run(path)
    assert state.is_completed()
    outcome = [e for e in events(incident_id) if e.step_id == "hold" and e.phase == "outcome"]
    assert [e.status for e in outcome] == ["failed"]
    assert "timed out" in outcome[0].error.lower()
    assert step_events(incident_id, "next")[-1] == ("outcome", "succeeded", 1)


def test_when_skips_and_runs(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "conditional", [
        note("always", "hello"),
        note("only_level_one", "level I only", needs=["always"], when="level == 'I'"),
        note("only_if_done", "ran", needs=["always"], when="steps.always.status == 'succeeded'"),
        note("param_gate", "big", when="params.size > 10"),
    ], parameters={"size": {"type": "integer", "description": "how big", "default": 5}})
    state, incident_id = run(path)
    assert state.is_completed()
    assert step_events(incident_id, "only_level_one") == [("note", "skipped", 1)]
    assert step_events(incident_id, "param_gate") == [("note", "skipped", 1)]
    assert ("outcome", "succeeded", 1) in step_events(incident_id, "only_if_done")

    state, incident_id = run(path, level="I", parameters={"size": 50})
    assert ("outcome", "succeeded", 1) in step_events(incident_id, "only_level_one")
    assert ("outcome", "succeeded", 1) in step_events(incident_id, "param_gate")
    assert get_incident(incident_id).level == "I"


def test_abort_skips_everything_after(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "aborting", [
        {"id": "broken", "action": "http", "with": {"url": "http://127.0.0.1:9/closed"}, "on_failure": "abort"},
        note("dependant", "x", needs=["broken"]),
        note("later", "y", needs=["dependant"]),
    ])
    state, incident_id = run(path)
    assert state.is_failed()
    assert step_events(incident_id, "dependant") == [("note", "skipped", 1)]
    assert step_events(incident_id, "later") == [("note", "skipped", 1)]
    assert get_incident(incident_id).run_state == "failed"


def test_continue_lets_dependants_run(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "continuing", [
        {"id": "broken", "action": "http", "with": {"url": "http://127.0.0.1:9/closed"}, "on_failure": "continue"},
        note("dependant", "ran anyway; broken was {{ steps.broken.status }}", needs=["broken"]),
    ])
    state, incident_id = run(path)
    assert state.is_completed()
    notes = [e.summary for e in events(incident_id) if e.step_id == "dependant" and e.status == "info"]
    assert notes == ["ran anyway; broken was failed"]
    incident = get_incident(incident_id)
    assert incident.run_state == "completed" and "broken" in incident.run_error


def test_escalate_pages_the_escalation_roles(tmp_path: Path, simulator) -> None:
    path = write_runbook(tmp_path, "escalating", [
        {"id": "broken", "action": "http", "with": {"url": "http://127.0.0.1:9/closed"},
         "on_failure": "escalate", "escalate_to": ["scenario_lead"]},
        note("dependant", "carried on", needs=["broken"]),
    ])
    state, incident_id = run(path)
    assert state.is_completed()
    inbox = httpx.get(f"{simulator.url}/inbox/qian-li").json()
    assert len(inbox) == 1
    assert "Step failed: broken" in inbox[0]["message"]["title"]
    assert ("outcome", "succeeded", 1) in step_events(incident_id, "broken__escalation")
    assert ("outcome", "succeeded", 1) in step_events(incident_id, "dependant")


def test_an_escalating_failure_never_holds_up_an_independent_branch(tmp_path: Path, notify_config) -> None:
    """Issue 9 #7: the scheduler waited for the escalation's page inside its loop (up to about 3 min),
    so nothing else started meanwhile. The escalation is a tracked step: while its page is in flight
    (the scenario lead's receiver holds it), the independent branch keeps starting and finishing."""
    import threading

    from records.incidents import list_incidents
    from tests.gated_runs import Background
    from tests.notifications_support import closed_port, contact
    from tests.polling import wait_for

    held = threading.Event()
    with ScriptedServer([(200, {"ok": True})], hold=held) as lead, ScriptedServer([(200, {"ok": True})]) as tech:
        notify_config.write([contact("lead", ["scenario_lead"], [f"json://{lead.url[7:]}/inbox"]),
                             contact("tech", ["technical_support"], [f"json://{tech.url[7:]}/inbox"])])
        path = write_runbook(tmp_path, "escalation-beside", [
            {"id": "fail_over", "action": "http", "with": {"url": f"http://127.0.0.1:{closed_port()}/failover"},
             "on_failure": "escalate", "escalate_to": ["scenario_lead"]},
            {"id": "divert", "action": "wait", "with": {"seconds": 0.5}},
            note("diverted", "callers diverted", needs=["divert"]),
            note("notice", "notice published", needs=["diverted"]),
        ])
        running = Background(path)
        try:
            incident_id = wait_for(lambda: next((i.id for i in list_incidents(50) if i.runbook_id == path.stem), None),
                                   what="the run to open its incident")
            wait_for(lambda: lead.requests, timeout=30, what="the escalation's page to reach the scenario lead")
            # Steps that start after the failure (diverted, then notice) start and finish while it pages.
            wait_for(lambda: step_events(incident_id, "notice")[-1:] == [("outcome", "succeeded", 1)], timeout=30,
                     what="the independent branch to finish while the escalation pages")
            assert step_events(incident_id, "fail_over__escalation") == [("intent", "started", 1)]
        finally:
            held.set()
        state = running.finish()
    assert state.is_completed()
    escalation = step_events(incident_id, "fail_over__escalation")
    assert escalation[0] == ("intent", "started", 1) and escalation[-1] == ("outcome", "succeeded", 1)
    assert "Step failed: fail over" in json.loads(lead.requests[0]["body"])["title"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:  # a task run of its own in Prefect, named after the step
        names = {t.name for t in client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[get_incident(incident_id).flow_run_id])))}
    assert "fail_over-escalation" in names


def test_a_failed_escalation_still_aborts_the_run(tmp_path: Path, notify_config) -> None:
    from tests.notifications_support import closed_port, contact

    notify_config.write([contact("lead", ["scenario_lead"], [f"json://127.0.0.1:{closed_port()}/inbox"]),
                         contact("tech", ["technical_support"], [f"json://127.0.0.1:{closed_port()}/inbox"])])
    path = write_runbook(tmp_path, "escalation-fails", [
        {"id": "fail_over", "action": "http", "with": {"url": f"http://127.0.0.1:{closed_port()}/failover"},
         "on_failure": "escalate", "escalate_to": ["scenario_lead"]},
        note("later", "after the fail-over", needs=["fail_over"]),
        {"id": "slow", "action": "wait", "with": {"seconds": 30}},
    ])
    state, incident_id = run(path)
    assert state.is_failed() and "escalation to scenario_lead failed" in str(state.message)
    assert step_events(incident_id, "fail_over__escalation")[-1][:2] == ("outcome", "failed")
    assert get_incident(incident_id).run_state == "failed"


def test_bad_arguments_fail_without_retrying(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "badargs", [
        {"id": "odd", "action": "wait", "with": {"seconds": "{{ -5 }}"}, "retries": 3, "retry_delay": 0.05},
    ])
    state, incident_id = run(path)
    assert state.is_failed()
    assert step_events(incident_id, "odd") == [("outcome", "failed", 1)]


def test_resumed_run_never_repeats_a_side_effect(tmp_path: Path, simulator) -> None:
    """A second run attached to the same incident (a resume after a crash, or a
    flow retry) reuses recorded side effects instead of performing them again."""
    httpx.post(f"{simulator.url}/faults", json={"fault": "down"})
    path = write_runbook(tmp_path, "resume", [
        {"id": "isolate", "action": "http", "with": {"method": "POST", "url": f"{simulator.url}/nodes/primary/isolate"}},
        {"id": "failover", "action": "http", "needs": ["isolate"],
         "with": {"method": "POST", "url": f"{simulator.url}/failover", "json": {"to": "standby"}}},
        {"id": "check", "action": "http", "needs": ["failover"],
         "with": {"url": f"{simulator.url}/health", "expect_json": {"active_node": "{{ params.expect }}"}}},
    ], parameters={"expect": {"type": "string", "description": "node expected active", "default": "primary"}})
    first, incident_id = run(path)
    assert first.is_failed()  # the check expected the wrong node
    assert httpx.get(f"{simulator.url}/state").json()["failover_count"] == 1

    second, same = run(path, incident_id=incident_id, parameters={"expect": "standby"})
    assert same == incident_id and second.is_completed()
    state = httpx.get(f"{simulator.url}/state").json()
    assert state["failover_count"] == 1
    posts = [r for r in state["requests"] if r["path"] == "/failover"]
    assert len(posts) == 1
    # Sent keyed by the incident's uid (unique across installations) and the runbook, not `INC-…:failover`.
    assert posts[0]["idempotency_key"] == f"firebreak:{get_incident(incident_id).uid}:resume:failover"
    assert [e.status for e in events(incident_id) if e.step_id == "failover"][-1] == "reused"
    assert get_incident(incident_id).run_state == "completed"
