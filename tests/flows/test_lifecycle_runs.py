"""Cancelling and re-running an incident's run, beside `firebreak up` as an operator would: the CLI
asks Prefect to cancel the run the served deployment executes (its runner stops it, the hooks record
it cancelled, nobody is paged), then runs the runbook again on the same incident from its deployment;
the new run attaches to the incident, and a resolve by hand lets it finish."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.polling import wait_for
from tests.records_env import records_database_at
from tests.stack_harness import Stack, start_stack, stop_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("lifecycle-runs") / "home")
    try:
        yield running
    finally:
        stop_stack(running)


def poll(what: str, check: Any, timeout: float = 120) -> Any:
    """tests.polling.wait_for, twice a second: each check asks the stack's Prefect API."""
    return wait_for(check, timeout=timeout, what=what, interval=0.5)


def flow_run(stack: Stack, flow_run_id: str) -> dict[str, Any]:
    return stack.api("GET", f"/flow_runs/{flow_run_id}")


def test_cancel_then_run_again_on_the_same_incident(stack: Stack) -> None:
    from records.incidents import events, get_incident, notifications

    deployment = stack.api("GET", "/deployments/name/system-outage/system-outage")
    first = stack.api("POST", f"/deployments/{deployment['id']}/create_flow_run",
                      json={"parameters": {"level": "II"}})
    assert "id" in first, (deployment, first)
    # The run pages technical support and waits for an acknowledgement (its escalation policy).
    named = poll("the run to open its incident", lambda: flow_run(stack, first["id"])["name"].startswith("INC-")
                 and flow_run(stack, first["id"]))
    incident_id = named["name"].split(" ")[0]
    with records_database_at(f"sqlite:///{stack.home / 'firebreak.db'}"):
        poll("the first page", lambda: any(n.step_id == "page_technical_support" and n.status == "delivered"
                                           for n in notifications(incident_id)))
        refused = stack.firebreak("incident", "rerun", incident_id, "--by", "li-wei")
        assert refused.returncode == 1 and "a run still drives" in refused.stderr

        cancelled = stack.firebreak("incident", "cancel", incident_id, "--by", "qian-li", "--reason", "wrong level")
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        poll("the run to be cancelled", lambda: flow_run(stack, first["id"])["state_type"] == "CANCELLED")
        poll("the incident to record it", lambda: get_incident(incident_id).run_state == "cancelled")
        incident = get_incident(incident_id)
        assert incident.needs_attention and incident.status == "triggered"
        request = next(e for e in events(incident_id) if e.status == "run-cancel-requested")
        assert request.actor == "cli:qian-li" and "wrong level" in request.summary
        assert not any(e.status == "alarm" for e in events(incident_id))  # a cancellation pages nobody

        again = stack.firebreak("incident", "rerun", incident_id, "--by", "qian-li", "--reason", "at level II")
        assert again.returncode == 0, again.stdout + again.stderr
        second_id = next(e for e in events(incident_id) if e.status == "rerun-requested").data["requested_flow_run"]
        poll("the new run to attach", lambda: get_incident(incident_id).flow_run_id == second_id
             and get_incident(incident_id).run_state == "running")
        assert flow_run(stack, second_id)["parameters"]["incident_id"] == incident_id
        # It pages anew (a new run generation), and ends once a person resolves and closes the incident.
        poll("the second run's page", lambda: sum(n.step_id == "page_technical_support" and n.status == "delivered"
                                                  for n in notifications(incident_id)) >= 4)
        for action, reason in (("resolve", "restarted the chat service"), ("close", "service stable")):
            done = stack.firebreak("incident", action, incident_id, "--by", "li-wei", "--reason", reason)
            assert done.returncode == 0, done.stdout + done.stderr
        poll("the second run to complete", lambda: flow_run(stack, second_id)["state_type"] == "COMPLETED",
             timeout=180)
        final = get_incident(incident_id)
        assert (final.status, final.run_state, final.needs_attention) == ("closed", "completed", False)
