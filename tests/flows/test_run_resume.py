"""Resuming a run that died (issue 9): `firebreak incident resume` puts the incident's ended flow run
back to Scheduled and an executor runs the same flow run on. What it had done stands: side effects,
pages, approvals and its reads; so its later steps decide as it first decided. The chaos suite
(tests/chaos/test_run_killed_mid_step.py) does this at ten random steps; here at one fixed step,
plus every case where resuming is refused, with nothing changed."""
from __future__ import annotations

from pathlib import Path

import pytest

from flows import operator_actions
from records import incidents
from records.incidents import events, get_incident
from records.models import RunState
from tests.killed_runs import Trial, run_trial
from tests.records_env import records_database_at

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_a_worker_killed_mid_fail_over_is_resumed_and_the_run_finishes_without_repeating_anything(
        tmp_path: Path, prefect_server: str) -> None:
    # Killed just after the fail-over's intent: its POST may or may not have reached the service.
    trial = Trial(seed=1, step="fail_over", phase="intent", delay=0.02)
    run_trial(trial, tmp_path / "trial", prefect_server)  # checks no repeated side effect nor page
    assert trial.resumed == "finished, incident closed" and trial.alarm_pages >= 2

    with records_database_at(f"sqlite:///{tmp_path / 'trial' / 'firebreak.db'}"):
        timeline = events(trial.incident_id)
    statuses = [e.status for e in timeline]
    # The dead run was paged about, then resumed by a person, then the same flow run went on.
    assert statuses.index("alarm") < statuses.index("run-crashed") < statuses.index("resume-requested")
    request = next(e for e in timeline if e.status == "resume-requested")
    assert request.actor == "cli:li-wei" and "chaos trial" in request.summary and request.data["was"] == "crashed"
    resumed = [e for e in timeline if e.status == "run-attached" and e.seq > request.seq]
    assert len(resumed) == 1 and resumed[0].summary.startswith("Runbook run resumed")
    assert resumed[0].flow_run_id == request.flow_run_id  # the same flow run, not a new one
    reused = {e.step_id for e in timeline if e.status == "reused" and e.seq > request.seq}
    # Reads too: the health check is not made again (after the fail-over it would skip the rest).
    assert {"assess", "record_facts", "isolate_failed_node", "publish_fault_notice"} <= reused
    # Killed mid-step, or just after it finished: reused if it had finished, else run again (with the
    # same Idempotency-Key: the service answered from its memo if the first POST had reached it).
    (done,) = [e for e in timeline if e.step_id == "fail_over" and e.phase == "outcome" and e.status == "succeeded"]
    assert ("fail_over" in reused) == (done.seq < request.seq)


@pytest.fixture
def own_records(tmp_path: Path):
    with records_database_at(f"sqlite:///{tmp_path / 'records.db'}") as url:
        yield url


def _incident(run_state: str, flow_run_id: str | None = "not-a-prefect-run", status: str = "triggered") -> str:
    incident = incidents.open_incident(runbook_id="system-outage", runbook_version="1.0", title="resume refused",
                                       level="II", source="alert", parameters={}, flow_run_id=flow_run_id)
    if status != "triggered":
        incidents.transition(incident.id, status, actor="test", imply=False)
    if run_state != "running":
        incidents.set_run_state(incident.id, RunState(run_state))
    return incident.id


@pytest.mark.parametrize(("run_state", "status", "flow_run_id", "says"), [
    ("running", "triggered", "not-a-prefect-run", "a run still drives"),
    ("completed", "acknowledged", "not-a-prefect-run", "it took every step it could; `rerun`"),
    ("crashed", "closed", "not-a-prefect-run", "is closed"),
    ("crashed", "triggered", None, "has no run to resume"),
    ("crashed", "triggered", "00000000-0000-4000-8000-000000000000", "not on this Prefect server"),
])
def test_resume_is_refused_when_there_is_nothing_to_resume(own_records: str, run_state: str, status: str,
                                                           flow_run_id: str | None, says: str) -> None:
    incident_id = _incident(run_state, flow_run_id, status)
    before = len(events(incident_id))
    with pytest.raises(operator_actions.ActionConflict, match=says):
        operator_actions.resume(incident_id, by="li-wei", via="cli")
    assert len(events(incident_id)) == before  # nothing recorded, nothing changed
    assert get_incident(incident_id).run_state == run_state


def test_a_run_started_directly_and_one_prefect_still_shows_running_are_not_resumed(own_records: str) -> None:
    """Nothing but the outbox or a deployment can run a flow run again: a run started in a shell
    (no deployment, no outbox row) is refused and stays as it is; so is a run Prefect still shows
    Running (reconcile judges it first)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    @flow(name="resume-refused")
    def nothing() -> None:
        return None

    with get_client(sync_client=True) as client:
        crashed = client.create_flow_run(nothing, state=Crashed(message="killed"))
        running = client.create_flow_run(nothing, state=Running())
    direct = _incident("crashed", str(crashed.id))
    with pytest.raises(operator_actions.ActionConflict, match="started directly"):
        operator_actions.resume(direct, by="li-wei", via="cli")
    unjudged = _incident("crashed", str(running.id))
    with pytest.raises(operator_actions.ActionConflict, match="still shows flow run .* RUNNING"):
        operator_actions.resume(unjudged, by="li-wei", via="cli")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(crashed.id).state.type.value == "CRASHED"  # untouched
        assert client.read_flow_run(running.id).state.type.value == "RUNNING"
