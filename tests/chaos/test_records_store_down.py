"""Chaos (iv): the records database goes away (PostgreSQL stopped with `-m immediate`, as in a crash)
while alerts arrive, and comes back.

While it is away every alert is answered 503 (never 202: nothing could be stored, so the monitor must
send it again; never 500), and readiness says why. Once it is back the same alerts, sent again, are
accepted; every alert is stored exactly once (none of the refused ones slipped in), each fingerprint
opened one incident, and no run began twice. Runs the outage caught mid-step wait for the store
(records.db.waiting_out_outages) and carry on once it is back. One that fails all the same (a statement
cut mid-flight by the stop) is recorded failed and paged, by itself or by reconcile, so no incident ends
silently. Prints what it measures.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from flows.reconcile import reconcile_runs
from flows.run_failure import ALARM_STEP_PREFIX
from records import run_outbox
from records.alert_ingest import Alert
from records.db import session_scope
from records.incidents import events, get_incident, notifications
from records.models import Incident
from simulator import start_simulator
from tests.chaos.support import IntakeServe, alert_request, post_all
from tests.environment import environment
from tests.private_postgres import private_cluster
from tests.records_env import records_database_at
from tests.run_workers import number_incidents_apart, runs_begun
from tests.runbook_helpers import write_runbook

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("prefect_server")]

BEFORE, DURING = range(0, 100), range(100, 200)
OUTAGE_SECONDS = 15.0


def test_the_records_store_down_answers_503_and_nothing_refused_is_stored(tmp_path: Path, prefect_server: str) -> None:
    # Runs that last a few seconds: the outage catches some of them mid-step.
    runbook = write_runbook(tmp_path, "chaos-store-note", [
        {"id": "note", "action": "record", "with": {"message": "started by an alert"}},
        {"id": "hold", "action": "wait", "needs": ["note"], "with": {"seconds": 3}},
        {"id": "done", "action": "record", "needs": ["hold"], "with": {"message": "held"}}])
    # Fingerprints 0-19 before the outage; 20-39 are new ones that arrive only while it is down.
    requests = {seq: alert_request(seq, f"store-{tmp_path.name}-{seq % (20 if seq in BEFORE else 40)}")
                for seq in [*BEFORE, *DURING]}
    # Commits durable before they return (the private clusters' default is off, for speed): with it
    # off, an immediate stop loses the last commits, which a real server's settings would not.
    with ExitStack() as stack:
        cluster = stack.enter_context(private_cluster(max_connections=60, settings={"synchronous_commit": "on"}))
        cluster.create_database("records")
        records = cluster.url("records")
        with records_database_at(records):
            from records.db import migrate

            migrate(records)
            number_incidents_apart(records)
        # The contacts' pages go to a simulator's inbox (the demo contacts' channels), from the intake's
        # runs and from reconcile here alike.
        inbox = stack.enter_context(start_simulator(fault="none"))
        stack.enter_context(environment(FIREBREAK_INBOX=inbox.inbox_address))
        intake = IntakeServe(tmp_path / "home", {"runbook": str(runbook)}, prefect_api_url=prefect_server,
                             records_url=records, env={"FIREBREAK_INBOX": inbox.inbox_address})
        intake.start()
        try:
            before = post_all(intake.port, {s: requests[s] for s in BEFORE}, connections=8)
            assert set(before.values()) == {202}

            cluster.stop()
            stopped_at = time.monotonic()
            during = post_all(intake.port, {s: requests[s] for s in DURING}, connections=8)
            ready = httpx.get(f"{intake.url}/readyz", timeout=30)
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))
            # Sent again while it is still down (a monitor's retry): refused again, the same way.
            retried = post_all(intake.port, {s: requests[s] for s in DURING}, connections=8)
            cluster.start()
            outage = time.monotonic() - stopped_at
            assert set(during.values()) == set(retried.values()) == {503}, sorted(set(during.values()))
            assert ready.status_code == 503, ready.text

            # The monitor sends the refused alerts again until they are accepted.
            again, rounds, deadline = dict(during), 0, time.monotonic() + 120
            while any(status != 202 for status in again.values()) and time.monotonic() < deadline:
                rounds += 1
                again.update(post_all(intake.port, {s: requests[s] for s, st in again.items() if st != 202},
                                      connections=8))
                time.sleep(0.5)
            back_to_202 = time.monotonic() - stopped_at - outage
            assert set(again.values()) == {202}, sorted(set(again.values()))

            with records_database_at(records):
                incident_ids = _wait_for_every_run(timeout=240)
                # A run that died or failed where its records could not be written is recorded and paged by
                # reconcile, as its deployment does every minute.
                judged = {r.incident_id: r.run_state.value for r in reconcile_runs()}
                stored = _stored_counts()
                begun = runs_begun(incident_ids)
                ends = {i: (get_incident(i).run_state, [e.status for e in events(i)].count("alarm"),
                            sum(n.step_id.startswith(ALARM_STEP_PREFIX) and n.status == "delivered"
                                for n in notifications(i)))
                        for i in incident_ids}
        finally:
            intake.stop()

    print(f"\nchaos (iv): records PostgreSQL stopped (-m immediate) for {outage:.1f}s after 100 accepted alerts; "
          f"100 alerts sent meanwhile, twice: {sum(s == 503 for s in [*during.values(), *retried.values()])} of 200 "
          f"answered 503, 0 × 202, no other 5xx; readiness {ready.status_code}")
    print(f"  after it came back: all 100 accepted on re-sending ({rounds} round(s), {back_to_202:.1f}s); "
          f"stored {sum(stored.values())} alerts, each of the 200 exactly once; {len(incident_ids)} incidents "
          f"(20 before, 20 new); runs begun per incident {sorted(set(begun.values()))}")
    failed = {i for i, (state, _, _) in ends.items() if state != "completed"}
    print(f"  runs: {len(incident_ids) - len(failed)} completed (those the outage caught mid-step waited for the "
          f"store); {len(failed)} failed ({len(failed - set(judged))} recorded and paged by themselves, "
          f"{len(judged)} by reconcile: {', '.join(sorted(set(judged.values()))) or 'none'})")
    assert stored == dict.fromkeys([*BEFORE, *DURING], 1)  # nothing refused slipped in, nothing lost
    assert len(incident_ids) == 40
    assert set(begun.values()) <= {0, 1}  # never twice (0: cut short before its first record)
    # No incident ends silently: each run completed, or its failure is recorded and was paged once.
    assert all(state == "completed" and alarms == pages == 0 or state in ("failed", "crashed") and alarms == 1
               and pages >= 1 for state, alarms, pages in ends.values()), ends
    assert set(judged) <= failed


def _stored_counts() -> dict[int, int]:
    counts: dict[int, int] = {}
    with session_scope() as session:
        for labels in session.scalars(select(Alert.labels)):
            if "seq" in labels:
                counts[int(labels["seq"])] = counts.get(int(labels["seq"]), 0) + 1
    return counts


def _wait_for_every_run(timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            incident_ids = list(session.scalars(select(Incident.id)))
            unfinished = session.scalar(select(func.count()).select_from(run_outbox.RunRequest)
                                        .where(run_outbox.RunRequest.finished_at.is_(None)))
        if len(incident_ids) == 40 and not unfinished:
            return incident_ids
        if time.monotonic() > deadline:
            raise AssertionError(f"{unfinished} run(s) of {len(incident_ids)} incidents did not finish")
        time.sleep(0.5)
