"""Reuse by policy, per action, and the fenced run lock (issue 9, items 5, 6, 11).

Reuse: an idempotent mutation is done once per incident, runbook and step (a re-run does not fail
over twice); pages, failure escalations and approvals once per run (a flow retry does not page
twice, a new run pages and asks anew); another runbook's equal step id is another step. What leaves
the process carries the incident's uid, so two installations whose incident numbers collide never
share a key at a service that remembers keys.

Fencing: the run lock is a lease with a generation; a holder that lost it (taken over after it went
stale) has its intents refused, sends nothing, and learns the loss when it renews; a run that loses
it starts nothing more and ends failed.

Against a real Prefect server, the simulator (which remembers Idempotency-Keys like a payment API),
real HTTP receivers, SQLite and PostgreSQL."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from records import incidents, run_locks
from records.incidents import events, get_incident, list_incidents
from tests.gated_runs import Background, gated, resume
from tests.http_receivers import ScriptedServer
from tests.notifications_support import closed_port, contact
from tests.polling import wait_for
from tests.postgres import temporary_database
from tests.records_env import records_database_at
from tests.runbook_helpers import run, step_events, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")

OK = [(200, {"ok": True})]


def sim_state(simulator) -> dict:
    return httpx.get(f"{simulator.url}/state").json()


def failover_posts(simulator) -> list[dict]:
    return [r for r in sim_state(simulator)["requests"] if r["path"] == "/failover"]


def fail_over(simulator, to: str = "standby", **extra) -> dict:
    return {"id": "fail_over", "title": "Fail over", "action": "http",
            "with": {"method": "POST", "url": f"{simulator.url}/failover", "json": {"to": to}}, **extra}


# ----------------------------------------------------------------------------------------- reuse


def test_a_rerun_whose_escalating_step_fails_again_pages_the_escalation_again(tmp_path: Path, simulator) -> None:
    path = write_runbook(tmp_path, "escalates-twice", [
        {"id": "broken", "action": "http", "with": {"method": "POST", "url": "http://127.0.0.1:9/restart"},
         "on_failure": "escalate", "escalate_to": ["scenario_lead"]},
    ])
    first, incident_id = run(path)
    second, same = run(path, incident_id=incident_id)
    assert first.is_completed() and second.is_completed() and same == incident_id

    inbox = httpx.get(f"{simulator.url}/inbox/qian-li").json()
    assert len(inbox) == 2 and all("Step failed: broken" in m["message"]["title"] for m in inbox)
    escalation = step_events(incident_id, "broken__escalation")
    assert [s for _, s, _ in escalation].count("succeeded") == 2
    assert not any(status == "reused" for _, status, _ in escalation)
    keys = [e.idempotency_key for e in events(incident_id) if e.step_id == "broken__escalation" and e.phase == "intent"]
    assert keys == [f"{incident_id}/escalates-twice/broken__escalation/run-1",
                    f"{incident_id}/escalates-twice/broken__escalation/run-2"]


def test_an_approval_from_run_one_does_not_authorise_run_two(tmp_path: Path) -> None:
    path = gated(tmp_path, "gate-twice", timeout=60)
    first = Background(path)
    incident_id, first_run = first.paused_incident()
    resume(first_run, run_input={"decision": "approve", "approver": "Qian Li", "comment": "go"})
    assert first.finish().is_completed()
    assert step_events(incident_id, "fail_over")[-1][:2] == ("outcome", "succeeded")

    second = Background(path, incident_id=incident_id)
    same, second_run = second.paused_incident()  # run 2 pauses and asks: run 1's decision does not count
    assert same == incident_id and second_run != first_run
    asked = [e for e in events(incident_id) if e.status == "awaiting-approval"]
    assert [e.flow_run_id for e in asked] == [first_run, second_run]
    resume(second_run, run_input={"decision": "reject", "approver": "Zhao Min", "comment": "not again"})
    assert second.finish().is_completed()

    timeline = events(incident_id)
    assert not any(e.step_id == "approve_failover" and e.status == "reused" for e in timeline)
    decisions = [(e.flow_run_id, e.status, e.actor) for e in timeline if e.status in ("approved", "rejected")]
    assert decisions == [(first_run, "approved", "钱丽 Qian Li"),
                         (second_run, "rejected", "Zhao Min (unverified: not a contact)")]
    # Run 2's fail-over followed run 2's decision.
    assert [e.status for e in timeline if e.step_id == "fail_over" and e.flow_run_id == second_run] == ["skipped"]


def test_two_runbooks_with_an_equal_step_id_each_act(tmp_path: Path, simulator) -> None:
    to_standby = write_runbook(tmp_path, "to-standby", [fail_over(simulator, "standby")])
    to_primary = write_runbook(tmp_path, "to-primary", [fail_over(simulator, "primary")])
    first, incident_id = run(to_standby)
    second, same = run(to_primary, incident_id=incident_id)
    assert first.is_completed() and second.is_completed() and same == incident_id

    state = sim_state(simulator)
    assert state["failover_count"] == 2 and state["active_node"] == "primary"
    posts = failover_posts(simulator)
    assert [json.loads(p["body"]) if isinstance(p["body"], str) else p["body"] for p in posts] == [
        {"to": "standby"}, {"to": "primary"}]
    uid = get_incident(incident_id).uid
    assert [p["idempotency_key"] for p in posts] == [f"firebreak:{uid}:to-standby:fail_over",
                                                    f"firebreak:{uid}:to-primary:fail_over"]
    outcomes = [(e.actor, e.status) for e in events(incident_id) if e.step_id == "fail_over" and e.phase != "intent"]
    assert outcomes == [("runbook:to-standby", "succeeded"), ("runbook:to-primary", "succeeded")]


def test_a_rerun_does_not_repeat_an_idempotent_mutation_and_sends_the_incident_uid(tmp_path: Path,
                                                                                   simulator) -> None:
    path = write_runbook(tmp_path, "rerun-failover", [
        fail_over(simulator),
        {"id": "check", "action": "http", "needs": ["fail_over"],
         "with": {"url": f"{simulator.url}/health", "expect_json": {"active_node": "{{ params.expect }}"}}},
    ], parameters={"expect": {"type": "string", "description": "node expected active", "default": "primary"}})
    first, incident_id = run(path)
    assert first.is_failed()  # the check expected the wrong node; the fail-over happened
    second, _ = run(path, incident_id=incident_id, parameters={"expect": "standby"})
    assert second.is_completed()

    assert sim_state(simulator)["failover_count"] == 1
    posts = failover_posts(simulator)
    incident = get_incident(incident_id)
    assert len(posts) == 1 and incident.uid in posts[0]["idempotency_key"]
    assert posts[0]["idempotency_key"] == f"firebreak:{incident.uid}:rerun-failover:fail_over"
    statuses = [(e.flow_run_id == incident.flow_run_id, e.status) for e in events(incident_id)
                if e.step_id == "fail_over"]
    assert statuses[-1] == (True, "reused")
    # The timeline keeps the readable key, the same in both runs (reuse per incident).
    assert {e.idempotency_key for e in events(incident_id) if e.step_id == "fail_over"} == {
        f"{incident_id}/rerun-failover/fail_over"}


def test_two_installations_each_really_fail_over(tmp_path: Path, simulator) -> None:
    """Two records databases (two installations) number their first incidents alike; a service
    that remembers Idempotency-Keys must see two keys, and really fail over twice."""
    path = write_runbook(tmp_path, "two-installations", [fail_over(simulator)])
    ran = []
    for name in ("east", "west"):
        with records_database_at(f"sqlite:///{tmp_path / f'{name}.db'}"):
            state, incident_id = run(path)
            ran.append((state, incident_id, get_incident(incident_id).uid))
    (east, east_id, east_uid), (west, west_id, west_uid) = ran
    assert east.is_completed() and west.is_completed()
    assert east_id == west_id and east_id.endswith("-0001")  # the numbers collide…
    assert east_uid != west_uid  # …the uids do not

    posts = failover_posts(simulator)
    assert [p["idempotency_key"] for p in posts] == [f"firebreak:{east_uid}:two-installations:fail_over",
                                                    f"firebreak:{west_uid}:two-installations:fail_over"]
    assert [p["replayed"] for p in posts] == [False, False]
    assert sim_state(simulator)["failover_count"] == 2


def test_a_flow_retry_of_a_notify_step_does_not_page_twice(tmp_path: Path, notify_config) -> None:
    from flows.engine import run_runbook

    with ScriptedServer(OK) as tech, ScriptedServer(OK) as lead:
        notify_config.write([contact("tech", ["technical_support"], [f"json://{tech.url[7:]}/inbox"]),
                             contact("lead", ["scenario_lead"], [f"json://{lead.url[7:]}/inbox"])])
        path = write_runbook(tmp_path, "retried-page", [
            {"id": "tell", "action": "notify", "with": {"to": ["technical_support"], "title": "Chat down",
                                                        "message": "Online chat fails."}},
            {"id": "probe", "action": "http", "needs": ["tell"],
             "with": {"url": f"http://127.0.0.1:{closed_port()}/health"}},
        ], on_run_failure={"notify": ["scenario_lead"], "by_level": False})
        state = run_runbook.with_options(retries=1, retry_delay_seconds=0)(runbook=str(path), return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    incident_id = next(i for i in list_incidents(200) if i.flow_run_id == flow_run_id).id

    assert state.is_failed()
    # The flow ran twice (the probe was tried once per attempt), in one run generation.
    assert [e.attempt for e in events(incident_id) if e.step_id == "probe" and e.phase == "intent"] == [1, 1]
    assert len(tech.requests) == 1  # paged once
    tell = [(e.phase, e.status, e.idempotency_key) for e in events(incident_id)
            if e.step_id == "tell" and e.status != "delivered"]
    key = f"{incident_id}/retried-page/tell/run-1"
    assert tell == [("intent", "started", key), ("outcome", "succeeded", key), ("note", "reused", key)]
    assert run_locks.current(incident_id).generation == 1


# -------------------------------------------------------------------------------------- fencing


@pytest.fixture(params=["sqlite", "postgresql"])
def records_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'fencing.db'}" if request.param == "sqlite"
               else stack.enter_context(temporary_database()))
        stack.enter_context(records_database_at(url))
        yield request.param


def _open(runbook_id: str = "fencing") -> incidents.Incident:
    return incidents.open_incident(runbook_id=runbook_id, runbook_version="1", title="Fencing", level="II",
                                   source="operator", parameters={})


def test_a_stale_holder_is_fenced_off(records_backend: str, simulator) -> None:
    from tasks.base import StepContext
    from tasks.catalog import ACTIONS

    # A seed runbook's step: the http action checks its request against that runbook's allowed_hosts.
    incident = _open("system-outage")
    generation = run_locks.acquire(incident.id, "holder-a")
    lease_a = run_locks.Lease(incident.id, "holder-a", generation)
    assert generation == 1
    with pytest.raises(run_locks.IncidentBusy):
        run_locks.acquire(incident.id, "holder-b")  # A's lease is fresh

    # A's lease goes stale (stale_after=0: its last renewal is older than that) and B takes it over.
    assert run_locks.acquire(incident.id, "holder-b", stale_after=0) == 2

    context = StepContext(incident_id=incident.id, incident_uid=incident.uid, runbook_id="system-outage",
                          step_id="fail_over", step_title="Fail over", action="http", level="II",
                          run_generation=1, lock_holder="holder-a")
    arguments = {"method": "POST", "url": f"{simulator.url}/failover", "json": {"to": "standby"}}
    with pytest.raises(run_locks.LeaseLost, match="took it over"):
        ACTIONS["http"].run_in_flow(context, arguments)
    assert failover_posts(simulator) == [] and sim_state(simulator)["failover_count"] == 0  # nothing sent
    timeline = [e for e in events(incident.id) if e.step_id == "fail_over"]
    assert [(e.phase, e.status) for e in timeline] == [("note", "intent-refused")]
    assert timeline[0].data == {"holder": "holder-a", "generation": 1}

    # A's renewal reports the loss, and keeps reporting it.
    with pytest.raises(run_locks.LeaseLost, match="holder-b took it over"):
        lease_a.renew()
    assert lease_a.lost is not None
    with pytest.raises(run_locks.LeaseLost):
        lease_a.renew()
    # Letting go of a lease A no longer has changes nothing for B.
    run_locks.release(incident.id, "holder-a", 1)
    assert run_locks.renew(incident.id, "holder-b", 2) == 2

    # B, the holder now, acts.
    output = ACTIONS["http"].run_in_flow(context.model_copy(update={"run_generation": 2, "lock_holder": "holder-b"}),
                                         arguments)
    assert output["status"] == 200 and sim_state(simulator)["failover_count"] == 1

    # Released, the lock passes on with a higher generation; the same flow run re-enters with its own.
    run_locks.release(incident.id, "holder-b", 2)
    assert run_locks.acquire(incident.id, "holder-b") == 2
    run_locks.release(incident.id, "holder-b", 2)
    assert run_locks.acquire(incident.id, "holder-c") == 3


def test_the_background_renewal_reports_a_lost_lease(records_backend: str) -> None:
    incident = _open()
    with run_locks.held(incident.id, "holder-a", every=0.05) as lease:
        assert lease.generation == 1
        taken = run_locks.current(incident.id).acquired_at
        wait_for(lambda: run_locks.current(incident.id).renewed_at > taken, what="a first renewal")
        assert lease.lost is None and lease.failures == 0
        assert run_locks.acquire(incident.id, "holder-b", stale_after=0) == 2
        reason = wait_for(lambda: lease.lost, what="the renewal to report the lost lease")
        assert "holder-b took it over" in reason
    assert run_locks.current(incident.id).holder == "holder-b"  # leaving the block released nothing of B's


def test_a_lock_just_acquired_is_held_without_asking_again_and_dates_from_the_asking(records_backend: str) -> None:
    """The engine acquires an incident's lock before it attaches the run, then holds it: held() takes
    that answer rather than a second write, and the lease counts from when it was asked for."""
    import time

    incident = _open()
    asked = time.monotonic()
    generation = run_locks.acquire(incident.id, "holder-a")
    row = run_locks.current(incident.id)
    with run_locks.held(incident.id, "holder-a", every=3600, acquired=(generation, asked)) as lease:
        assert lease.generation == generation == 1 and lease.lost is None
        assert run_locks.current(incident.id).renewed_at == row.renewed_at  # nothing written again
        with pytest.raises(run_locks.IncidentBusy):
            run_locks.acquire(incident.id, "holder-b")
    assert run_locks.current(incident.id).released_at is not None  # leaving the block let go
    # A lease whose asking lies further back than the stale time is lost from the start.
    asked = time.monotonic() - 10
    generation = run_locks.acquire(incident.id, "holder-b")
    with run_locks.held(incident.id, "holder-b", every=3600, stale_after=5, acquired=(generation, asked)) as lease:
        assert lease.generation == 2 and lease.lost is not None and "not renewed for more than 5s" in lease.lost


def test_a_lease_that_cannot_be_renewed_past_the_stale_time_is_lost(tmp_path: Path) -> None:
    with records_database_at(f"sqlite:///{tmp_path / 'lease.db'}"):
        incident = _open()
        lease = run_locks.Lease(incident.id, "holder-a", run_locks.acquire(incident.id, "holder-a"),
                                stale_after=3600)
    # The records database does not answer: the failure is raised and counted, not swallowed.
    with records_database_at(f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/none"):
        with pytest.raises(Exception) as failed:
            lease.renew()
        assert not isinstance(failed.value, run_locks.LeaseLost)
        assert lease.failures == 1 and lease.last_error and lease.lost is None
        lease.stale_after = 0  # …and now for longer than the stale time
        with pytest.raises(run_locks.LeaseLost, match=r"not renewed for more than 0s \(1 renewal\(s\) failed"):
            lease.renew()


def test_a_run_that_loses_its_lease_starts_nothing_more_and_fails(tmp_path: Path, simulator) -> None:
    import threading

    from flows.engine import run_runbook

    path = write_runbook(tmp_path, "loses-lease", [
        {"id": "hold", "action": "wait", "with": {"seconds": 5}},
        {**fail_over(simulator), "needs": ["hold"]},
    ])
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(state=run_runbook(runbook=str(path), return_state=True)),
                              daemon=True)
    runner.start()

    def holding():
        incident = next((i for i in list_incidents(50) if i.runbook_id == path.stem), None)
        return incident if incident and step_events(incident.id, "hold")[:1] == [("intent", "started", 1)] else None

    incident = wait_for(holding, what="the run to start its first step")
    # Another holder takes the incident over (as if this run's lease had gone stale).
    assert run_locks.acquire(incident.id, "intruder", stale_after=0) == 2
    runner.join(120)
    assert not runner.is_alive()

    state = result["state"]
    assert state.is_failed() and "no longer holds the incident's run lock" in str(state.message)
    assert sim_state(simulator)["failover_count"] == 0 and failover_posts(simulator) == []
    timeline = events(incident.id)
    assert not any(e.step_id == "fail_over" and e.phase == "intent" for e in timeline)
    stopped = [e for e in timeline if e.status == "run-lease-lost"]
    assert len(stopped) == 1 and "intruder took it over" in stopped[0].error
    # No other run drives the incident, so the run's end is recorded and the alarm raised (no silent end).
    after = get_incident(incident.id)
    assert after.run_state == "failed" and after.needs_attention
    assert any(e.status in ("alarm", "alarm-failed") for e in timeline)
