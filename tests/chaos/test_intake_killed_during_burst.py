"""Chaos (i): `kill -9` the intake half-way through a 2,000-alert burst, start it again.

Every alert answered 202 is stored; every new incident's run begins exactly once (the runs the
killed process had begun die with it and are found by reconcile, the rest start in the new
process); no run request is claimed twice by live processes. Prints what it measures, with the
time from the restart to the last run's start beside its goal (60 s on SQLite; not asserted).
"""
from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from flows.reconcile import reconcile_runs
from records import run_outbox
from records.alert_ingest import Alert
from records.db import session_scope
from records.incidents import get_incident
from records.models import Incident, utcnow
from tests.chaos.support import IntakeServe, alert_request, post_all
from tests.records_env import records_database_at
from tests.run_workers import flow_run_state, number_incidents_apart, prefect_runs, runs_begun
from tests.runbook_helpers import write_runbook

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("prefect_server")]

ALERTS = 2000
#: New incidents in the burst (the other alerts repeat their fingerprints and are absorbed).
INCIDENTS = int(os.environ.get("FIREBREAK_CHAOS_INCIDENTS", "50"))
KILL_AFTER_ACCEPTED = 800
RESTART_GOAL_SECONDS = 60.0


def test_kill_9_the_intake_during_a_burst_then_restart_it(tmp_path: Path, prefect_server: str) -> None:
    runbook = write_runbook(tmp_path, "chaos-note", [
        {"id": "note", "action": "record", "with": {"message": "started by an alert in the burst"}}])
    # A dead intake's claims are taken over once its heartbeat is 10 s old (15 s by default).
    env = {"FIREBREAK_WORKER_STALE_SECONDS": "10"}
    if os.environ.get("FIREBREAK_CHAOS_SLOTS"):  # the intake's run slots (default 16)
        env["FIREBREAK_INTAKE_MAX_CONCURRENT_RUNS"] = os.environ["FIREBREAK_CHAOS_SLOTS"]
    intake = IntakeServe(tmp_path / "home", {"runbook": str(runbook)}, prefect_api_url=prefect_server, env=env)
    number_incidents_apart(intake.records_url)
    requests = {seq: alert_request(seq, f"chaos-{tmp_path.name}-{seq % INCIDENTS}") for seq in range(ALERTS)}
    since = utcnow()
    killed = threading.Event()

    killed_at = 0.0

    def kill_half_way(accepted: int) -> None:
        nonlocal killed_at
        if accepted >= KILL_AFTER_ACCEPTED and not killed.is_set():
            killed.set()
            intake.kill()
            killed_at = time.monotonic()

    intake.start()
    try:
        burst_started = time.monotonic()
        first = post_all(intake.port, requests, on_accepted=kill_half_way)
        assert killed.is_set()
        killed_after = killed_at - burst_started
        with records_database_at(intake.records_url):
            (dead_worker,) = [w.id for w in run_outbox.live_workers(stale_after=3600)]
            at_kill = {r.incident_id: r for r in _all_rows()}
            held = {i for i, r in at_kill.items() if r.claimed_by == dead_worker and r.finished_at is None}
            started_in_killed = {i for i in held if at_kill[i].status == "started"}

        restarted_at = utcnow()
        intake.start()
        resend = {seq: requests[seq] for seq, status in first.items() if status != 202}
        second = post_all(intake.port, resend)
        assert set(second.values()) <= {202}, f"after the restart: {sorted(set(second.values()))}"

        with records_database_at(intake.records_url):
            # Runs Prefect still shows Running once everything else is done began in the killed process
            # and died with it (the engine may not have reached its first write). The others it held
            # (Pending, not created, or ending as it was killed) were started or finished elsewhere.
            incident_ids, died = _wait_until_only_dead_remain(started_in_killed, timeout=300)
            rows = {r.incident_id: r for r in _all_rows()}
            last_start = max(r.started_at for i, r in rows.items() if i not in died and r.started_at)
            restart_to_last_start = (last_start - restarted_at).total_seconds()
            # When each run the restarted intake began started, after the restart: where the time goes.
            after_restart = sorted((r.started_at - restarted_at).total_seconds() for i, r in rows.items()
                                   if i not in died and r.started_at and r.started_at >= restarted_at)
            judged = {r.incident_id for r in reconcile_runs(stale_after=timedelta(seconds=0))}
            stored = _stored_sequence_numbers()
            begun = runs_begun(incident_ids)
            rows = {r.incident_id: r for r in _all_rows()}
            crashed = {i for i in incident_ids if get_incident(i).run_state == "crashed"}
        per_incident = {i: len(r) for i, r in prefect_runs(incident_ids, since).items()}
    finally:
        intake.stop()

    accepted = {seq for seq, status in first.items() if status == 202} | set(second)
    attempts = sorted(r.attempts for r in rows.values())
    print(f"\nchaos (i): {ALERTS} alerts over {INCIDENTS} fingerprints; intake killed (SIGKILL) after "
          f"{sum(s == 202 for s in first.values())} accepted, {killed_after:.1f}s into the burst; "
          f"{len(resend)} unanswered re-sent to the restarted intake")
    print(f"  at the kill the intake held {len(held)} run request(s) ({len(started_in_killed)} marked started); "
          f"{len(died)} of their runs had begun and died with it, the others started or ended elsewhere")
    print(f"  202 answers {len(accepted)}, stored {len(accepted & stored)} of them; incidents {len(incident_ids)}; "
          f"runs begun per incident {sorted(set(begun.values()))}; Prefect runs per incident "
          f"{sorted(set(per_incident.values()))}")
    print(f"  claims per run request: {attempts.count(1)} once, {attempts.count(2)} twice (taken over from the "
          f"killed intake), max {max(attempts)}; reconcile judged {len(judged)} (the runs that died: "
          f"{len(crashed)} recorded crashed, {len(judged - crashed)} had recorded their end just before)")
    # A goal, printed beside the figure, never asserted (the suite asserts no wall-clock time): the
    # 2-core machine's other load moves it (25 s quiet; 117–126 s while other test sessions ran).
    met = "met" if restart_to_last_start <= RESTART_GOAL_SECONDS else "NOT met"
    print(f"  restart → last run started: {restart_to_last_start:.1f}s (goal ≤ {RESTART_GOAL_SECONDS:.0f}s: {met}); "
          "runs started after the restart, by "
          f"10 s: {_by_ten_seconds(after_restart)}")

    assert len(accepted) == ALERTS and accepted <= stored  # every 202 is stored
    assert len(incident_ids) == INCIDENTS
    # Every run began exactly once: in the restarted intake, or in the killed one (where it died).
    assert {i: n for i, n in begun.items() if i not in died} == {i: 1 for i in incident_ids if i not in died}
    assert all(begun[i] <= 1 for i in died)
    assert per_incident == dict.fromkeys(incident_ids, 1)
    # Claimed once; a request the killed intake held was claimed once more, by the restarted one.
    assert {i: r.attempts for i, r in rows.items()} == {i: 2 if i in held else 1 for i in incident_ids}
    # Reconcile judged only the runs that had begun in the killed process (recorded crashed, or, if the
    # run had recorded its end just before, that end kept and Prefect told).
    assert judged == died and crashed <= died
    assert all(r.finished_at is not None for r in rows.values())


def _by_ten_seconds(seconds: list[float]) -> str:
    """`0-10 s: 12, 10-20 s: 3, …`: how many runs started in each 10 s after the restart."""
    buckets: dict[int, int] = {}
    for value in seconds:
        buckets[int(value // 10)] = buckets.get(int(value // 10), 0) + 1
    return ", ".join(f"{b * 10}-{b * 10 + 10} s: {n}" for b, n in sorted(buckets.items())) or "none"


def _all_rows() -> list[run_outbox.RunRequest]:
    with session_scope() as session:
        return list(session.scalars(select(run_outbox.RunRequest)))


def _stored_sequence_numbers() -> set[int]:
    with session_scope() as session:
        return {int(labels["seq"]) for labels in session.scalars(select(Alert.labels)) if "seq" in labels}


def _wait_until_only_dead_remain(suspects: set[str], timeout: float) -> tuple[list[str], set[str]]:
    """Wait until every run request is finished but those of `suspects` whose run Prefect shows
    Running (dead: nothing runs them); returns every incident id, and those."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            incident_ids = list(session.scalars(select(Incident.id)))
        unfinished = {r.incident_id: r for r in _all_rows() if r.finished_at is None}
        dead = {i for i, r in unfinished.items() if i in suspects and r.status == "started" and r.flow_run_id
                and flow_run_state(r.flow_run_id) == "RUNNING"}
        if len(incident_ids) == INCIDENTS and set(unfinished) == dead:
            return incident_ids, dead
        if time.monotonic() > deadline:
            stuck = [(r.incident_id, r.status, r.claimed_by, r.attempts, r.last_error)
                     for i, r in unfinished.items() if i not in dead]
            raise AssertionError(f"{len(stuck)} run(s) did not finish, e.g. {stuck[:5]}")
        time.sleep(0.5)
