"""Chaos (ii): the Prefect server is down for 60 s while alerts arrive.

A Prefect server of the test's own (never the session's) is stopped, alerts keep arriving and
are accepted, reconcile says Prefect cannot be reached and judges nothing, then the server is
started again on the same port and database: each waiting run starts once, none is marked
crashed. Prints what it measures.
"""
from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from flows.reconcile import PrefectUnreachable, reconcile_runs
from records import run_outbox
from records.db import session_scope
from records.incidents import get_incident
from records.models import Incident, utcnow
from tests.chaos.support import FIREBREAK, HEADERS, IntakeServe, PrivatePrefect, alert_body
from tests.records_env import records_database_at
from tests.run_workers import prefect_runs, runs_begun
from tests.runbook_helpers import write_runbook

pytestmark = pytest.mark.chaos

BEFORE, DURING = 10, 30  # new incidents before the outage, and while Prefect is down
OUTAGE_SECONDS = 60.0


def test_prefect_down_for_a_minute_while_alerts_arrive(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    runbook = write_runbook(tmp_path, "chaos-note", [
        {"id": "note", "action": "record", "with": {"message": "started once Prefect answered"}}])
    prefect = PrivatePrefect(tmp_path / "prefect")
    prefect.start()
    intake = IntakeServe(tmp_path / "home", {"runbook": str(runbook)}, prefect_api_url=prefect.api_url)
    accepted_at: dict[str, datetime] = {}  # incident → when its alert was answered 202
    try:
        intake.start()
        since = utcnow()
        _post(intake, range(BEFORE), accepted_at, tmp_path.name)
        with records_database_at(intake.records_url):
            _wait_finished(set(accepted_at), timeout=120)

        prefect.stop()
        down_at = time.monotonic()
        during: list[str] = []
        for k, n in enumerate(range(BEFORE, BEFORE + DURING)):  # one new incident every 2 s while Prefect is down
            during += _post(intake, [n], accepted_at, tmp_path.name)
            time.sleep(max(0.0, down_at + (k + 1) * OUTAGE_SECONDS / (DURING + 1) - time.monotonic()))
        with records_database_at(intake.records_url):
            before = _states()
            with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}), \
                    pytest.raises(PrefectUnreachable) as unreachable:
                reconcile_runs(stale_after=timedelta(seconds=0))
            cli = subprocess.run([FIREBREAK, "reconcile"], capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "PREFECT_API_URL": prefect.api_url,
                                      "FIREBREAK_DATABASE_URL": intake.records_url})
            waiting = [r for r in _rows() if r.started_at is None]
            assert _states() == before  # nothing judged while Prefect was away
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        outage = time.monotonic() - down_at

        prefect.start()
        back_at = utcnow()
        with records_database_at(intake.records_url):
            rows = _wait_finished(set(accepted_at), timeout=180)
            incident_ids = sorted(accepted_at)
            begun = runs_begun(incident_ids)
            crashed = [i for i in incident_ids if get_incident(i).run_state == "crashed"]
            completed = sum(get_incident(i).run_state == "completed" for i in incident_ids)
            with temporary_settings(updates={PREFECT_API_URL: prefect.api_url}):
                judged = reconcile_runs(stale_after=timedelta(seconds=0))
        per_incident = {i: len(r) for i, r in prefect_runs(incident_ids, since, api_url=prefect.api_url).items()}
    finally:
        intake.stop()
        prefect.stop()

    after_return = [(rows[i].started_at - back_at).total_seconds() for i in during]
    delays = [(rows[i].started_at - accepted_at[i]).total_seconds() for i in during]
    attempts = sorted(r.attempts for r in rows.values())
    print(f"\nchaos (ii): Prefect down {outage:.0f}s; {DURING} new incidents accepted meanwhile "
          f"({len(waiting)} waiting in the outbox when reconcile ran: it judged nothing, exit {cli.returncode})")
    print(f"  Prefect back → last waiting run started: {max(after_return):.1f}s; alert → run start, max "
          f"{max(delays):.1f}s; runs begun per incident {sorted(set(begun.values()))}; Prefect runs per incident "
          f"{sorted(set(per_incident.values()))}; claims per request {attempts[0]}..{attempts[-1]}; crashed {len(crashed)}")

    assert "no run was judged" in str(unreachable.value)
    assert cli.returncode == 1 and "no run was judged" in cli.stderr, cli.stderr
    assert len(waiting) == DURING
    assert begun == dict.fromkeys(incident_ids, 1)
    assert per_incident == dict.fromkeys(incident_ids, 1)
    assert crashed == [] and judged == []
    assert completed == len(incident_ids)


def _post(intake: IntakeServe, numbers: range | list[int], accepted_at: dict[str, datetime], tag: str) -> list[str]:
    """Post one new-incident alert per number; each must be accepted (202) whether or not Prefect is up."""
    opened = []
    for n in numbers:
        response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", content=alert_body(n, f"outage-{tag}-{n}"),
                              headers=HEADERS, timeout=30)
        assert response.status_code == 202, response.text
        (alert,) = response.json()["alerts"]
        assert alert["disposition"] == "opened"
        accepted_at[alert["incident_id"]] = utcnow()
        opened.append(alert["incident_id"])
    return opened


def _rows() -> list[run_outbox.RunRequest]:
    with session_scope() as session:
        return list(session.scalars(select(run_outbox.RunRequest)))


def _states() -> dict[str, tuple]:
    with session_scope() as session:
        incidents = {i.id: (i.run_state, i.flow_run_id) for i in session.scalars(select(Incident))}
    return {r.incident_id: (*incidents[r.incident_id], r.started_at) for r in _rows()}


def _wait_finished(incident_ids: set[str], timeout: float) -> dict[str, run_outbox.RunRequest]:
    deadline = time.monotonic() + timeout
    while True:
        rows = {r.incident_id: r for r in _rows()}
        if incident_ids <= rows.keys() and all(rows[i].finished_at is not None for i in incident_ids):
            return rows
        assert time.monotonic() < deadline, f"not finished: {[i for i in incident_ids if rows[i].finished_at is None]}"
        time.sleep(0.3)
