"""One Prefect entry flow per seed runbook, each with a typed parameter form.

The forms are built from the runbook YAML (runbooks.library.parameter_model),
so the YAML stays the single source of truth for a contingency's parameters.
"""
# No `from __future__ import annotations`: Prefect reads these annotations at
# decoration time to build each deployment's UI form.
from typing import Any

from prefect import Flow, flow

from flows.engine import RunSummary, execute_runbook
from flows.hooks import RUN_HOOKS
from runbooks import library
from runbooks.schema import Level
from tasks.catalog import load_runbook


def entry_flow(runbook_id: str) -> Flow[..., RunSummary]:
    runbook = load_runbook(runbook_id).runbook
    Parameters = library.parameter_model(runbook)
    defaults: Any = Parameters() if all(not p.required for p in runbook.parameters.values()) else None

    def run(
        parameters: Parameters = defaults,  # type: ignore[valid-type]
        level: Level | None = None,
        summary: str | None = None,
        drill: bool = False,
        incident_id: str | None = None,
        source: str = "operator",
    ) -> RunSummary:
        return execute_runbook(runbook_id, parameters, level=level, incident_id=incident_id, source=source,
                               drill=drill, summary=summary)

    run.__name__ = run.__qualname__ = runbook_id.replace("-", "_")  # importable name, e.g. for to_deployment()
    run.__doc__ = f"{runbook.title} ({runbook.title_zh or ''}): {runbook.description}"
    return flow(run, name=runbook_id, description=runbook.description.strip(), **RUN_HOOKS)


system_outage = entry_flow("system-outage")
network_congestion = entry_flow("network-congestion")
staffing_shortage = entry_flow("staffing-shortage")

ENTRY_FLOWS: dict[str, Flow[..., RunSummary]] = {
    "system-outage": system_outage,
    "network-congestion": network_congestion,
    "staffing-shortage": staffing_shortage,
}
