"""The seed runbooks run against the simulator at test speed, and what each step ended as."""
from __future__ import annotations

import httpx

from records.incidents import events

QUICK = {"check_interval_seconds": 0.2, "recovery_deadline_seconds": 30}


def run_seed(name: str, simulator, fault: str, **kwargs):
    from flows.seed_runbooks import ENTRY_FLOWS
    from notifications.drill_responder import AckServer, DrillResponder

    httpx.post(f"{simulator.url}/faults", json={"fault": fault}).raise_for_status()
    # The first pages escalate until acknowledged: a stand-in on-call person clicks the signed link.
    with AckServer(), DrillResponder(simulator.url):
        state = ENTRY_FLOWS[name](parameters={"service_url": simulator.url, **QUICK}, drill=True, source="drill",
                                  return_state=True, **kwargs)
    summary = state.result()
    return state, summary.incident_id


def outcomes(incident_id: str) -> dict[str, str]:
    """Final recorded state of each step: succeeded, failed, skipped or reused."""
    final: dict[str, str] = {}
    for event in events(incident_id):
        if event.step_id and (event.phase == "outcome" or event.status in ("skipped", "reused")):
            final[event.step_id] = event.status
    return final
