"""Alerts that start runs, against the session's real Prefect server: dedup under
200 parallel posts over real HTTP, Prefect down then up (the outbox), the store
down (503), a webhook that drives a seed runbook end to end against the
simulator, and dedup decided by PostgreSQL across concurrent writers."""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy import func, select

from notifications.acknowledgement.service import acknowledge_incident
from records import alert_ingest, alert_queries, run_outbox
from records.alert_ingest import Alert
from records.db import session_scope
from records.incidents import events, get_incident, notifications
from tests.intake_harness import READ_AUTH, TOKENS, RunningIntake, TcpForwarder, free_port, group, write_config
from tests.polling import wait_for
from tests.postgres import temporary_database
from tests.records_env import records_database_at
from tests.runbook_helpers import write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")

AM_AUTH = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_AM_TOKEN']}"}


@pytest.fixture(autouse=True)
def tokens():
    saved = {k: os.environ.get(k) for k in TOKENS}
    os.environ.update(TOKENS)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def quick_runbook(tmp_path: Path) -> Path:
    return write_runbook(tmp_path, "intake-quick", [
        {"id": "note", "action": "record", "with": {"message": "started from an alert: {{ incident.summary }}"}},
        {"id": "close", "action": "set_status", "needs": ["note"], "with": {"status": "closed", "reason": "done"}},
    ])




def flow_runs_of(incident_id: str, since: datetime) -> list:
    """The Prefect runs tagged with this incident and created since the test began: each test has its
    own records database, so incident numbers repeat across the tests that share a Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[incident_id])))
    return [run for run in runs if run.created is not None and run.created >= since]


def now() -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=1)  # a margin for clock rounding


def test_200_identical_alerts_in_parallel_give_one_incident_and_one_run(tmp_path: Path) -> None:
    # The runbook leaves the incident open: an alert arriving after the incident closed
    # rightly opens a new one, and a fast run could close it while the storm still arrives.
    open_ended = write_runbook(tmp_path, "intake-open-ended", [
        {"id": "note", "action": "record", "with": {"message": "started from an alert: {{ incident.summary }}"}}])
    since = now()
    fingerprint = f"storm-{time.time_ns()}"
    sources, routes = write_config(tmp_path, {"runbook": str(open_ended)})
    with RunningIntake(sources, routes, executor="warm") as intake:
        body = json.dumps(group(fingerprint)).encode()
        with httpx.Client(limits=httpx.Limits(max_connections=64)) as client, ThreadPoolExecutor(64) as pool:
            responses = list(pool.map(lambda _: client.post(f"{intake.url}/v1/alerts/alertmanager", content=body,
                                                            headers={**AM_AUTH, "Content-Type": "application/json"},
                                                            timeout=60), range(200)))
        assert [r.status_code for r in responses] == [202] * 200
        results = [r.json()["alerts"][0] for r in responses]
        assert sorted(r["disposition"] for r in results).count("opened") == 1
        incident_ids = {r["incident_id"] for r in results}
        assert len(incident_ids) == 1
        incident_id = incident_ids.pop()
        wait_for(lambda: run_outbox.run_request(incident_id).started_at is not None, what="the run to start")
        intake.wait_runs()
    request = run_outbox.run_request(incident_id)
    # Claimed once, begun by a slot, and finished when the run returned.
    assert request.status == "finished" and request.finished_at is not None and request.attempts == 1
    assert alert_queries.count_alerts(f"alertmanager/{fingerprint}") == 200
    runs = flow_runs_of(incident_id, since)
    assert len(runs) == 1 and runs[0].state.is_completed()
    incident = get_incident(incident_id)
    assert incident.status == "triggered" and incident.run_state == "completed"
    assert incident.flow_run_id == str(runs[0].id)
    assert [e.status for e in events(incident_id)].count("triggered") == 1


def test_prefect_down_then_up_starts_the_alert_exactly_once(tmp_path: Path, quick_runbook: Path,
                                                           prefect_server: str) -> None:
    since = now()
    port = free_port()  # nothing listens here yet: Prefect is "down"
    sources, routes = write_config(tmp_path, {"runbook": str(quick_runbook)})
    with RunningIntake(sources, routes, executor="warm", prefect_api_url=f"http://127.0.0.1:{port}/api",
                       poll_seconds=0.2) as intake:
        response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=group(f"down-{time.time_ns()}"),
                              headers=AM_AUTH)
        assert response.status_code == 202  # accepted and stored although Prefect is unreachable
        incident_id = response.json()["alerts"][0]["incident_id"]
        waiting = wait_for(lambda: (r := run_outbox.run_request(incident_id)).attempts >= 2 and r, what="retries")
        assert waiting.status in ("pending", "claimed") and waiting.flow_run_id is None
        assert "Connect" in (waiting.last_error or "")
        assert "unreachable" in httpx.get(f"{intake.url}/readyz").json()["prefect"]

        real = urlparse(prefect_server)
        # Prefect is back; the forwarder's accept thread holds it, so it serves until the session ends.
        TcpForwarder(port, (real.hostname, real.port))
        try:
            wait_for(lambda: run_outbox.run_request(incident_id).started_at is not None,
                     timeout=60, what="the run to start once Prefect is back")
            intake.wait_runs()
            started = run_outbox.run_request(incident_id)
            assert started.status == "finished" and started.flow_run_id
            # Another pass over the outbox changes nothing: the row is finished.
            assert intake.intake.dispatcher.dispatch_due() == 0
        finally:
            # The forwarder stays open until the session ends: Prefect's process-wide events
            # client keeps a connection through it, and a closed one only logs reconnect errors.
            pass
    runs = flow_runs_of(incident_id, since)
    assert [str(r.id) for r in runs] == [started.flow_run_id]
    assert get_incident(incident_id).status == "closed"


def test_store_down_answers_503_and_the_monitor_can_retry(tmp_path: Path, quick_runbook: Path) -> None:
    sources, routes = write_config(tmp_path, {"runbook": str(quick_runbook)})
    with RunningIntake(sources, routes, executor="none") as intake:
        body = group(f"store-{time.time_ns()}")
        with records_database_at(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"):  # nothing there
            response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=body, headers=AM_AUTH)
            assert response.status_code == 503 and response.headers["Retry-After"] == "5"
            assert "nothing was stored" in response.json()["error"]
            assert httpx.get(f"{intake.url}/readyz").status_code == 503
        retried = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=body, headers=AM_AUTH)
        assert retried.status_code == 202 and retried.json()["alerts"][0]["disposition"] == "opened"


def test_alertmanager_webhook_drives_the_system_outage_runbook(tmp_path: Path, simulator) -> None:
    httpx.post(f"{simulator.url}/faults", json={"fault": "down"}).raise_for_status()
    sources, routes = write_config(tmp_path, {"runbook": None, "routes": [
        {"name": "outage", "matchers": ['alertname="ServiceDown"'], "runbook": "system-outage",
         "parameters": {"service_url": "{{ labels.ops_api }}", "affected_service": "{{ labels.service }}",
                        "check_interval_seconds": 0.2, "recovery_deadline_seconds": 30}}]})
    with RunningIntake(sources, routes, executor="warm") as intake:
        response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", headers=AM_AUTH,
                              json=group(f"e2e-{time.time_ns()}", service="hotline", ops_api=simulator.url))
        incident_id = response.json()["alerts"][0]["incident_id"]
        wait_for(lambda: run_outbox.run_request(incident_id).started_at is not None, what="the run to start")
        # Not a drill: the pages escalate until a person acknowledges (notifications issue).
        # Technical support's own page (acknowledgement is per page: one given before it is sent does
        # not stop its escalation, and the run would wait for it).
        wait_for(lambda: any(n.step_id == "page_technical_support" and n.status == "delivered"
                             for n in notifications(incident_id)), what="technical support's page")
        acknowledge_incident(incident_id, by="li-wei", via="cli")
        intake.wait_runs(timeout=300, incident_ids=(incident_id,))
        shown = httpx.get(f"{intake.url}/v1/incidents/{incident_id}", headers=READ_AUTH).json()
    incident = get_incident(incident_id)
    assert incident.status == "closed" and incident.run_state == "completed" and incident.source == "alert"
    assert incident.parameters["affected_service"] == "hotline"
    assert shown["status"] == "closed" and shown["run_url"].endswith(incident.flow_run_id)
    assert httpx.get(f"{simulator.url}/health").json()["active_node"] == "standby"
    succeeded = {e.step_id for e in events(incident_id) if e.phase == "outcome" and e.status == "succeeded"}
    assert {"assess", "isolate_failed_node", "fail_over", "verify_recovery", "close"} <= succeeded


def test_postgresql_decides_dedup_across_concurrent_writers() -> None:
    """Several intake replicas share one database: each writer here is a separate connection and
    transaction, as replicas would be; the fingerprint's primary key decides."""
    # A fresh database: claims are taken oldest first, a batch at a time, so run
    # requests left in a shared database by earlier runs would crowd this one out.
    with temporary_database() as url:
        _check_postgresql_dedup(url)


def _check_postgresql_dedup(url: str) -> None:
    from records.db import migrate

    migrate(url)
    fingerprint = f"pg/{time.time_ns()}"
    alert = alert_ingest.IncomingAlert(source="pg", format="generic", fingerprint=fingerprint, status="firing",
                                       summary="replicated", labels={})
    plan = alert_ingest.RunPlan(route="test", runbook_id="system-outage", runbook_version="1.0", level="II",
                                parameters={}, flow_name="system-outage")
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(lambda _: alert_ingest.ingest([(alert, plan)], url=url)[0], range(120)))
    assert [r.disposition for r in results].count("opened") == 1
    assert len({r.incident_id for r in results}) == 1
    with session_scope(url) as session:
        assert session.scalar(select(func.count()).select_from(Alert).where(Alert.fingerprint == fingerprint)) == 120
    for replica in ("replica-a", "replica-b"):
        run_outbox.register_worker(replica, host="test", pid=0, slots=4, url=url)
    claimed = run_outbox.claim_run_requests("replica-a", url=url)
    assert results[0].incident_id in [r.incident_id for r in claimed]
    assert results[0].incident_id not in [r.incident_id for r in run_outbox.claim_run_requests("replica-b", url=url)]
    # Only once replica-a stops (or its heartbeat goes stale) is its claim taken over.
    run_outbox.stop_worker("replica-a", url=url)
    assert [r.incident_id for r in run_outbox.claim_run_requests("replica-b", url=url)] == [results[0].incident_id]


def test_monitor_resolve_finishes_recovery_verification_early(tmp_path: Path) -> None:
    """A resolved notification from the monitor ends a wait_until that is told to accept it,
    long before its own condition (never true here) or deadline would."""
    runbook = write_runbook(tmp_path, "resolve-early", [
        {"id": "verify", "action": "wait_until", "with": {
            "url": "http://127.0.0.1:9/never", "condition": "status == 200", "interval": 0.2, "deadline": 120,
            "finish_on_monitor_resolve": True}, "timeout": 180},
        {"id": "close", "action": "set_status", "needs": ["verify"],
         "when": "steps.verify.output.resolved_by_monitor", "with": {"status": "closed", "reason": "monitor"}},
    ])
    sources, routes = write_config(tmp_path, {"runbook": str(runbook)})
    fingerprint = f"resolve-{time.time_ns()}"
    with RunningIntake(sources, routes, executor="warm") as intake:
        firing = group(fingerprint)
        incident_id = httpx.post(f"{intake.url}/v1/alerts/alertmanager", headers=AM_AUTH,
                                 json=firing).json()["alerts"][0]["incident_id"]
        wait_for(lambda: any(e.step_id == "verify" and e.phase == "intent" for e in events(incident_id)),
                 what="verification to start")
        resolved = json.loads(json.dumps(firing))
        resolved["status"] = "resolved"
        for alert in resolved["alerts"]:
            alert["status"] = "resolved"
            alert["endsAt"] = "2026-11-23T12:00:00Z"
        assert httpx.post(f"{intake.url}/v1/alerts/alertmanager", headers=AM_AUTH, json=resolved).status_code == 202
        intake.wait_runs(timeout=60)
    outcome = next(e for e in events(incident_id) if e.step_id == "verify" and e.phase == "outcome")
    assert outcome.status == "succeeded" and outcome.data["output"]["resolved_by_monitor"] is True
    assert get_incident(incident_id).status == "closed"


def test_cancel_stops_a_run_the_warm_executor_runs_in_process(tmp_path: Path) -> None:
    """`firebreak incident cancel` asks Prefect to cancel (Cancelling); no runner owns an in-process
    run's process to stop it, so the run notices by itself (flows.engine, every 2 s): its waiting
    step gives up, nothing more starts, and it ends Cancelled, paging nobody."""
    from prefect.client.orchestration import get_client

    from flows import operator_actions

    runbook = write_runbook(tmp_path, "intake-cancelled", [
        {"id": "note", "action": "record", "with": {"message": "started"}},
        {"id": "hold", "action": "wait", "needs": ["note"], "with": {"seconds": 600}, "timeout": 900},
        {"id": "after", "action": "record", "needs": ["hold"], "with": {"message": "never"}}])
    sources, routes = write_config(tmp_path, {"runbook": str(runbook)})
    with RunningIntake(sources, routes, executor="warm") as intake:
        response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", headers=AM_AUTH,
                              json=group(f"cancel-{time.time_ns()}"))
        incident_id = response.json()["alerts"][0]["incident_id"]
        wait_for(lambda: any(e.step_id == "hold" and e.phase == "intent" for e in events(incident_id)),
                 what="the long wait to begin")
        cancelled = operator_actions.cancel_run(incident_id, by="li-wei", via="cli", reason="wrong runbook")
        assert cancelled.details["prefect_state"] == "RUNNING"
        intake.wait_runs(timeout=120, incident_ids=(incident_id,))  # a hang guard: the wait was 600 s
    incident = get_incident(incident_id)
    assert incident.run_state == "cancelled" and incident.needs_attention and incident.status == "triggered"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(incident.flow_run_id).state.type.value == "CANCELLED"
    timeline = events(incident_id)
    assert [e.status for e in timeline if e.step_id == "after"] == ["skipped"]
    assert any(e.status == "run-stopping" and "wrong runbook" in e.summary for e in timeline)
    assert not any(e.status == "alarm" for e in timeline)  # a cancellation pages nobody


def test_a_run_is_created_with_the_name_the_engine_gives_it_so_it_is_not_renamed(tmp_path: Path) -> None:
    """A route may name its runbook by path; the engine names a run `<incident> · <runbook id>`. Created
    under another name, every run cost one more write to Prefect (a rename) in a burst."""
    from intake.runs import run_name

    path = write_runbook(tmp_path, "named-by-its-id", [{"id": "note", "action": "record", "with": {"message": "m"}}])
    by_path = run_outbox.RunRequest(incident_id="INC-2026-0042", flow_name="run-runbook",
                                    parameters={"runbook": str(path)})
    assert run_name(by_path) == "INC-2026-0042 · named-by-its-id"
    seed = run_outbox.RunRequest(incident_id="INC-2026-0043", flow_name="system-outage", parameters={})
    assert run_name(seed) == "INC-2026-0043 · system-outage"
