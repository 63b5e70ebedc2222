"""A run whose process is killed outright is recorded as crashed, in the
incident and in Prefect, and is not left "running" forever."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from records.incidents import events, get_incident, list_incidents
from tests.killed_runs import RUNNER, kill_when_step_begins
from tests.polling import wait_for
from tests.runbook_helpers import write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")



def test_killed_run_is_reconciled_as_crashed(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.reconcile import reconcile_runs

    path = write_runbook(tmp_path, "killed", [
        {"id": "note", "action": "record", "with": {"message": "before the long wait"}},
        {"id": "long_wait", "action": "wait", "needs": ["note"], "with": {"seconds": 600}, "timeout": 900},
    ])
    incident = kill_when_step_begins(path, "long_wait")

    assert get_incident(incident.id).run_state == "running"  # nothing ran to say otherwise
    assert incident.id not in {r.incident_id for r in reconcile_runs()}  # heartbeat still fresh: left alone

    reconciled = reconcile_runs(stale_after=timedelta(seconds=0))
    assert incident.id in {r.incident_id for r in reconciled}
    after = get_incident(incident.id)
    # Judged because Prefect reports it Running and its heartbeat stopped (waiting runs never are).
    assert after.run_state == "crashed" and "Running" in after.run_error and "heartbeat" in after.run_error
    assert after.run_ended_at is not None
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(after.flow_run_id).state.type.value == "CRASHED"
    assert events(incident.id)[-1].status == "run-crashed"
    again = reconcile_runs(stale_after=timedelta(seconds=0))
    assert incident.id not in {r.incident_id for r in again}  # recorded once, not again


def test_a_run_whose_process_died_at_an_approval_gate_is_reconciled_as_crashed(tmp_path: Path) -> None:
    """Prefect shows such a run Paused for as long as the gate's timeout (600 s here), and a decision
    given in the UI would reach nobody: its stopped heartbeat tells reconcile the process is gone.
    While the process lives (waiting, beating), the same pause is left alone."""
    from prefect.client.orchestration import get_client

    from flows.reconcile import reconcile_runs

    path = write_runbook(tmp_path, "killed-at-gate", [
        {"id": "note", "action": "record", "with": {"message": "before the gate"}},
        {"id": "approve", "title": "Approve the fail-over", "action": "approval", "needs": ["note"],
         "with": {"action": "fail over", "reason": "primary is down", "timeout": 600}},
        {"id": "after", "action": "record", "needs": ["approve"], "with": {"message": "after the gate"}},
    ])
    known = {i.id for i in list_incidents(500)}
    process = subprocess.Popen([sys.executable, "-c", RUNNER, str(path)], env=dict(os.environ),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        incident = wait_for(lambda: next((i for i in list_incidents(500) if i.id not in known and i.flow_run_id),
                                         None), what="the run to open its incident")

        def paused() -> bool:
            with get_client(sync_client=True) as client:
                return client.read_flow_run(incident.flow_run_id).state.type.value == "PAUSED"

        wait_for(paused, timeout=90, what="the run to pause at its gate")
        paused_at = get_incident(incident.id).heartbeat_at
        wait_for(lambda: get_incident(incident.id).heartbeat_at > paused_at, timeout=30,
                 what="a heartbeat while paused")
        # Alive and waiting: left alone, whatever reconcile's patience.
        assert incident.id not in {r.incident_id for r in reconcile_runs(stale_after=timedelta(seconds=20))}
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    reconciled = reconcile_runs(stale_after=timedelta(seconds=0))
    assert incident.id in {r.incident_id for r in reconciled}
    after = get_incident(incident.id)
    assert after.run_state == "crashed" and "Paused at an approval gate" in after.run_error
    assert after.needs_attention
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(after.flow_run_id).state.type.value == "CRASHED"
    statuses = [e.status for e in events(incident.id)]
    assert "alarm" in statuses and statuses[-1] == "run-crashed"
    assert incident.id not in {r.incident_id for r in reconcile_runs(stale_after=timedelta(seconds=0))}
