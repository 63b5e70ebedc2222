"""Write ad-hoc runbooks for engine tests and run them through the real engine flow."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

HEADER = {
    "title": "Engine test",
    "description": "A runbook written by a test.",
    "version": "1",
    "level": {"default": "II"},
    "roles": ["technical_support", "scenario_lead"],
}


def write_runbook(directory: Path, runbook_id: str, steps: list[dict[str, Any]],
                  parameters: dict[str, Any] | None = None, **extra: Any) -> Path:
    document = {"id": runbook_id, **HEADER, "parameters": parameters or {}, **extra, "steps": steps}
    path = directory / f"{runbook_id}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


def run(path: Path, **kwargs: Any):
    """Run the engine flow; returns (Prefect state, incident id)."""
    from flows.engine import run_runbook
    from records.incidents import list_incidents

    state = run_runbook(runbook=str(path), return_state=True, **kwargs)
    flow_run_id = str(state.state_details.flow_run_id)
    incident = next(i for i in list_incidents(200) if i.flow_run_id == flow_run_id)
    return state, incident.id


def step_events(incident_id: str, step_id: str) -> list[tuple[str, str, int]]:
    from records.incidents import events

    return [(e.phase, e.status, e.attempt) for e in events(incident_id) if e.step_id == step_id]


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()
