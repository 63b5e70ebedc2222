"""One Prefect entry flow per seed runbook, each with a typed parameter form.

The forms are built from the runbook YAML (runbooks.library.parameter_model),
so the YAML stays the single source of truth for a contingency's parameters.
"""
# No `from __future__ import annotations`: Prefect reads these annotations at
# decoration time to build each deployment's UI form.
from typing import Any

from prefect import Flow, flow

from flows.engine import RunSummary, execute_runbook
from flows.forms import COMMON_ARGS, IncidentRef, Level, LevelChoice, OptionalText, Source, StartedBy
from flows.run_options import RUNBOOK_FLOW_OPTIONS
from runbooks import library
from tasks.catalog import load_runbook


def entry_flow(runbook_id: str) -> Flow[..., RunSummary]:
    runbook = load_runbook(runbook_id).runbook
    Parameters = library.parameter_model(runbook)
    defaults: Any = Parameters() if all(not p.required for p in runbook.parameters.values()) else None

    def run(
        parameters: Parameters = defaults,  # type: ignore[valid-type]
        level: Level = LevelChoice.auto,
        summary: OptionalText = "",
        drill: bool = False,
        incident_id: IncidentRef = "",
        source: Source = StartedBy.operator,
    ) -> RunSummary:
        # A Completed state returned here is unwrapped by Prefect: calling the flow gives its RunSummary.
        return execute_runbook(runbook_id, parameters, level=LevelChoice(level).explicit(),  # type: ignore[return-value]  # Prefect unwraps a returned state
                               incident_id=incident_id or None, source=StartedBy(source).value, drill=drill,
                               summary=summary or None)

    run.__name__ = run.__qualname__ = runbook_id.replace("-", "_")  # importable name, e.g. for to_deployment()
    # Prefect reads each field's help from the Args section.
    run.__doc__ = (f"{runbook.title} ({runbook.title_zh or ''}): {' '.join(runbook.description.split())}\n\n"
                   f"    Args:\n        parameters: What this runbook needs to know; each field says what it is.\n"
                   f"{COMMON_ARGS}\n")
    return flow(name=runbook_id, description=runbook.description.strip(), **RUNBOOK_FLOW_OPTIONS)(run)


system_outage = entry_flow("system-outage")
network_congestion = entry_flow("network-congestion")
staffing_shortage = entry_flow("staffing-shortage")

ENTRY_FLOWS: dict[str, Flow[..., RunSummary]] = {
    "system-outage": system_outage,
    "network-congestion": network_congestion,
    "staffing-shortage": staffing_shortage,
}
