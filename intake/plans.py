"""From a routing decision to what the outbox will start: runbook, level and checked parameters.

What an alert may set is the runbook's to say: only parameters declared `from_alert: true`
(runbooks/schema.py); everything else comes from the route or the runbook's default. A URL
parameter's host must be in the runbook's `allowed_hosts`, whoever set it. An alert whose
parameters are refused is answered 422 naming each parameter (ParametersRefused) and
stores nothing; it never starts a run.
"""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from firebreak.errors import ConfigInvalid, InputInvalid, NotFound
from intake.routing import Decision
from intake.strict_json import path_part
from records.alert_ingest import RunPlan
from runbooks import library
from runbooks.schema import Level, Runbook
from tasks.catalog import load_runbook


class ParametersRefused(InputInvalid):
    """An alert set parameters its runbook does not let alerts set, or values the runbook refuses;
    `details` names each field and why (the intake answers 422, PagerDuty 400)."""

    def __init__(self, details: list[dict[str, str]]):
        self.details = details
        super().__init__("; ".join(f"{d['field']}: {d['reason']}" for d in details))


def _not_settable(runbook: Runbook, alert_set: dict[str, Any]) -> list[dict[str, str]]:
    refused = []
    for name in alert_set:
        declared = runbook.parameters.get(name)
        if declared is None:
            reason = (f"runbook {runbook.id} has no parameter {name!r} "
                      f"(alerts may set: {', '.join(_settable(runbook)) or 'none'})")
        elif not declared.from_alert:
            reason = (f"runbook {runbook.id} does not let an alert set it (not `from_alert: true`); it comes from "
                      f"the route or its default (alerts may set: {', '.join(_settable(runbook)) or 'none'})")
        else:
            continue
        refused.append({"field": "parameters" + path_part(name), "reason": reason})
    return refused


def _settable(runbook: Runbook) -> list[str]:
    return [name for name, parameter in runbook.parameters.items() if parameter.from_alert]

#: Runbooks with their own entry flow (and Prefect deployment); any other runbook runs through `run-runbook`.
SEED_FLOWS = frozenset({"system-outage", "network-congestion", "staffing-shortage"})


def plan_run(decision: Decision, *, explicit_runbook: str | None = None, explicit_level: Level | None = None,
             explicit_parameters: dict[str, Any] | None = None, where: str = "(body)") -> RunPlan:
    """`explicit_parameters` are the alert's own (the generic format's `parameters`); `where` names the
    alert in the request (`alerts[2]`) for a route's parameter refused on this alert's labels."""
    runbook_id = explicit_runbook or decision.runbook
    route = "explicit" if explicit_runbook else decision.route
    if runbook_id is None:
        return RunPlan(route=route, runbook_id=None)
    try:
        runbook = load_runbook(runbook_id).runbook
    except (ConfigInvalid, NotFound) as exc:  # RunbookInvalid, RunbookNotFound
        return RunPlan(route=route, runbook_id=runbook_id, error=f"runbook {runbook_id!r}: {exc}")
    alert_set = dict(explicit_parameters or {})
    refused = _not_settable(runbook, alert_set)
    if refused:
        raise ParametersRefused(refused)
    raw = {**decision.parameters, **alert_set} if not explicit_runbook else alert_set
    try:
        parameters = library.parameter_model(runbook).model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        errors = exc.errors()
        # The alert's own values, and any URL refused (a route may copy it from the alert's labels), are refused
        # with the request; a route's other values that do not fit the runbook are recorded as not startable.
        refused = [{"field": "parameters" + path_part(str(e["loc"][0])), "reason": e["msg"]}
                   for e in errors if e["loc"] and e["loc"][0] in alert_set]
        refused += [{"field": where, "reason": f"parameter {e['loc'][0]} (set by route {route!r}): {e['msg']}"}
                    for e in errors if e["loc"] and e["loc"][0] not in alert_set and e["type"] == library.URL_REFUSED]
        if refused:
            raise ParametersRefused(refused) from None
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(parameters)'}: {e['msg']}" for e in errors)
        return RunPlan(route=route, runbook_id=runbook_id, error=f"parameters rejected by runbook {runbook_id}: {reason}")
    level = library.resolve_level(runbook, parameters, explicit_level or (None if explicit_runbook else decision.level))
    return RunPlan(route=route, runbook_id=runbook_id, runbook_version=runbook.version, level=level.value,
                   parameters=parameters, flow_name=runbook_id if runbook_id in SEED_FLOWS else "run-runbook")
