"""From a routing decision to what the outbox will start: runbook, level and checked parameters."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from intake.routing import Decision
from records.alert_ingest import RunPlan
from runbooks import library
from runbooks.schema import Level
from tasks.catalog import load_runbook

#: Runbooks with their own entry flow (and Prefect deployment); any other runbook runs through `run-runbook`.
SEED_FLOWS = frozenset({"system-outage", "network-congestion", "staffing-shortage"})


def plan_run(decision: Decision, *, explicit_runbook: str | None = None, explicit_level: Level | None = None,
             explicit_parameters: dict[str, Any] | None = None) -> RunPlan:
    runbook_id = explicit_runbook or decision.runbook
    route = "explicit" if explicit_runbook else decision.route
    if runbook_id is None:
        return RunPlan(route=route, runbook_id=None)
    try:
        runbook = load_runbook(runbook_id).runbook
    except Exception as exc:
        return RunPlan(route=route, runbook_id=runbook_id, error=f"runbook {runbook_id!r}: {exc}")
    raw = {**decision.parameters, **(explicit_parameters or {})} if not explicit_runbook else dict(explicit_parameters or {})
    try:
        parameters = library.parameter_model(runbook).model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(parameters)'}: {e['msg']}" for e in exc.errors())
        return RunPlan(route=route, runbook_id=runbook_id, error=f"parameters rejected by runbook {runbook_id}: {reason}")
    level = library.resolve_level(runbook, parameters, explicit_level or (None if explicit_runbook else decision.level))
    return RunPlan(route=route, runbook_id=runbook_id, runbook_version=runbook.version, level=level.value,
                   parameters=parameters, flow_name=runbook_id if runbook_id in SEED_FLOWS else "run-runbook")
