"""Requests are held to the runbook's allowed_hosts when they are made (issue 10, item 2), not only
when the runbook is validated and the run's parameters accepted: the `http` and `wait_until` actions
check the final URL, as httpx parses it, against the runbook's allowed_hosts or the scheme, host and
port the step's URL writes out; and a step may not set Host. A refused request fails the step at once
and unretried, naming the host and the allowed_hosts, and nothing reaches the receiver.

Real HTTP receivers on loopback addresses, a real Prefect server for the run through the engine."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firebreak.settings import reload_settings
from records import incidents
from records.incidents import events
from tasks.base import StepContext
from tasks.catalog import ACTIONS
from tasks.http import RequestRefused
from tests.environment import environment
from tests.gated_runs import Background, resume
from tests.http_receivers import ScriptedServer
from tests.runbook_helpers import step_events, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")

OK = [(200, {"ok": True})]


def service_url(default: str) -> dict[str, Any]:
    return {"service_url": {"type": "string", "format": "url", "description": "Base URL.", "default": default}}


def probe_and_watch(**extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": "probe", "action": "http", "with": {"url": "{{ params.service_url }}/health"}, **extra},
        {"id": "watch", "action": "wait_until", **extra,
         "with": {"url": "{{ params.service_url }}/health", "condition": "status == 200", "consecutive": 1,
                  "interval": 0.1, "deadline": 30}},
    ]


def test_a_host_taken_out_of_allowed_hosts_while_the_run_waits_gets_no_request(tmp_path: Path) -> None:
    """The run's parameters were accepted when it started; while it waited at its gate, the host was
    taken out of the runbook's allowed_hosts. Its later requests are judged by the runbook as it is."""
    gate = {"id": "approve", "title": "Approve the checks", "action": "approval",
            "with": {"action": "check the service", "reason": "it was reported down", "timeout": 60}}
    with ScriptedServer(OK) as kept, ScriptedServer(OK) as dropped:
        def write(allowed_hosts: list[str]) -> Path:
            return write_runbook(tmp_path, "narrowed", [gate, *probe_and_watch(needs=["approve"], retries=2,
                                                                                retry_delay=0, on_failure="continue")],
                                 parameters=service_url(kept.url), allowed_hosts=allowed_hosts)

        run = Background(write(["127.0.0.1"]), parameters={"service_url": dropped.url})
        incident_id, flow_run_id = run.paused_incident()
        write([f"127.0.0.1:{kept.port}"])
        resume(flow_run_id, run_input={"decision": "approve", "approver": "Qian Li", "comment": "go"})
        assert run.finish().is_completed()
    assert dropped.requests == [] and kept.requests == []
    for step in ("probe", "watch"):
        # One attempt each: a retry cannot make the host an allowed one.
        assert [(phase, status) for phase, status, _ in step_events(incident_id, step)] == [
            ("intent", "started"), ("outcome", "failed")]
        (failed,) = [e for e in events(incident_id) if e.step_id == step and e.phase == "outcome"]
        assert failed.error == (f"RequestRefused: request refused, nothing sent: host 127.0.0.1:{dropped.port} is "
                                f"not in the runbook's allowed_hosts (127.0.0.1:{kept.port})")


@pytest.fixture
def runbooks_dir(tmp_path: Path) -> Iterator[Path]:
    """A runbooks directory of the test's own: a step run outside a flow finds its runbook by id there."""
    directory = tmp_path / "runbooks"
    directory.mkdir()
    with environment(FIREBREAK_RUNBOOKS_DIR=str(directory)):
        reload_settings()
        yield directory
    reload_settings()


def test_the_final_url_as_the_client_reads_it_is_what_is_checked(runbooks_dir: Path) -> None:
    with (ScriptedServer(OK) as allowed, ScriptedServer(OK) as written, ScriptedServer(OK, host="127.0.0.2") as outside):
        write_runbook(runbooks_dir, "checked", [
            *probe_and_watch(),
            # Written out by the runbook's author: allowed for this step, though not in allowed_hosts.
            {"id": "status", "action": "http", "with": {"url": f"{written.url}/status"}},
        ], parameters=service_url(allowed.url), allowed_hosts=[f"127.0.0.1:{allowed.port}"])
        incident = incidents.open_incident(runbook_id="checked", runbook_version="1", title="Checked", level="II",
                                           source="operator", parameters={})

        def act(step: str, action: str, **arguments: Any) -> Any:
            context = StepContext(incident_id=incident.id, incident_uid=incident.uid, runbook_id="checked",
                                  step_id=step, step_title=step, action=action, level="II")
            if action == "wait_until":
                arguments = {"condition": "status == 200", "consecutive": 1, "interval": 0.1, "deadline": 30,
                             **arguments}
            return ACTIONS[action].run_in_flow(context, arguments)

        not_allowed = f"host 127.0.0.2:{outside.port} is not in the runbook's allowed_hosts (127.0.0.1:{allowed.port})"
        for url in (f"{outside.url}/health",
                    # urlsplit and httpx split this one differently; httpx connects to the host after the `@`.
                    f"{allowed.url}\\@127.0.0.2:{outside.port}/health"):
            for step, action in (("probe", "http"), ("watch", "wait_until")):
                # wait_until fails at once: a refused poll is not a check that does not hold yet.
                with pytest.raises(RequestRefused, match=re.escape(f"nothing sent: {not_allowed}")):
                    act(step, action, url=url)
        with pytest.raises(RequestRefused, match=re.escape(f"host 127.0.0.1:{written.port} is not in the runbook's")):
            act("probe", "http", url=f"{written.url}/status")  # written out by another step only
        with pytest.raises(RequestRefused, match="may not set the Host header"):
            act("probe", "http", url=f"{allowed.url}/health", headers={"HOST": f"127.0.0.2:{outside.port}"})
        with pytest.raises(RequestRefused, match="runbook 'gone' cannot be loaded"):
            ACTIONS["http"].run_in_flow(StepContext(incident_id=incident.id, incident_uid=incident.uid,
                                                    runbook_id="gone", step_id="probe", step_title="probe",
                                                    action="http", level="II"), {"url": f"{allowed.url}/health"})
        assert outside.requests == [] and allowed.requests == [] and written.requests == []

        assert act("probe", "http", url=f"{allowed.url}/health")["status"] == 200
        assert act("watch", "wait_until", url=f"{allowed.url}/health")["satisfied"] is True
        assert act("status", "http", url=f"{written.url}/status")["status"] == 200
    assert [r["path"] for r in allowed.requests] == ["/health", "/health"]
    assert [r["path"] for r in written.requests] == ["/status"] and outside.requests == []
