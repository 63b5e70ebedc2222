"""Runs with an approval gate for the gate tests: a runbook with one gate, the run executed in a
background thread, and the Resume a person gives in the Prefect UI."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from records.incidents import list_incidents
from tests.runbook_helpers import write_runbook


def gated(tmp_path: Path, name: str, **gate: Any) -> Path:
    return write_runbook(tmp_path, name, [
        {"id": "approve_failover", "title": "Approve the fail-over", "action": "approval",
         "with": {"action": "fail over chat to the standby", "reason": "primary is down for 10 minutes", **gate},
         "on_failure": gate.pop("on_failure", "continue") if "on_failure" in gate else "continue"},
        {"id": "fail_over", "action": "record", "needs": ["approve_failover"],
         "when": "steps.approve_failover.status == 'succeeded'", "with": {"message": "failed over"}},
    ])


def resume(flow_run_id: str, run_input: dict[str, Any]) -> None:
    """resume_flow_run, as the UI form does; the run saves its input form just after it enters
    Paused, so a resume in that instant is told "schema not found" and is tried again. For up to 45 s:
    Prefect's client retries that save after 2, 4, 8 … s while the server answers busy (503), and in
    one full-suite run the form was still missing after 15 s."""
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + 45
    while True:
        try:
            return resume_flow_run(flow_run_id, run_input=run_input)
        except RuntimeError as exc:
            if "schema not found" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Background:
    """Run a runbook in a thread (a flow run in this process) and find its incident once it pauses."""

    def __init__(self, path: Path, **kwargs: Any):
        from flows.engine import run_runbook

        self.path = path
        self.state: Any = None
        self.thread = threading.Thread(target=self._run, args=(run_runbook, kwargs), daemon=True)
        self.thread.start()

    def _run(self, run_runbook: Any, kwargs: dict[str, Any]) -> None:
        self.state = run_runbook(runbook=str(self.path), return_state=True, **kwargs)

    def paused_incident(self, timeout: float = 60) -> tuple[str, str]:
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            incident = next((i for i in list_incidents(50) if i.runbook_id == self.path.stem), None)
            if incident and incident.flow_run_id:
                with get_client(sync_client=True) as client:
                    if client.read_flow_run(incident.flow_run_id).state.is_paused():
                        return incident.id, incident.flow_run_id
            time.sleep(0.1)
        raise AssertionError("the run never paused")

    def finish(self, timeout: float = 60) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not finish"
        return self.state
