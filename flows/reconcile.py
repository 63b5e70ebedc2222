"""Close the books on runs that ended without saying so.

For every incident whose run has not recorded an end: if Prefect knows the run
ended, record that; if Prefect still thinks it runs but the heartbeat stopped,
the process died: mark the incident's run crashed and tell Prefect the same.
A failed or crashed end recorded here also pages the incident's responsible roles
(flows.run_failure), once per run end however often reconcile runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Crashed

from flows import run_failure
from flows.heartbeat import HEARTBEAT_SECONDS
from records import incidents
from records.models import RunState, utcnow
from reports.publish import publish_report

#: Missing this many heartbeats means the process is gone.
STALE_AFTER = timedelta(seconds=HEARTBEAT_SECONDS * 6)

_FINAL = {"COMPLETED": RunState.completed, "FAILED": RunState.failed, "CRASHED": RunState.crashed,
          "CANCELLED": RunState.cancelled}


@dataclass(frozen=True)
class Reconciled:
    incident_id: str
    run_state: RunState
    reason: str


def reconcile_runs(stale_after: timedelta = STALE_AFTER) -> list[Reconciled]:
    now = utcnow()
    done: list[Reconciled] = []
    with get_client(sync_client=True) as client:
        for incident in incidents.open_runs():
            last_sign = incident.heartbeat_at or incident.created_at
            prefect_state = None
            runbook = None  # the run-runbook flow's `runbook` parameter: the definition the run used
            if incident.flow_run_id:
                try:
                    flow_run = client.read_flow_run(incident.flow_run_id)
                    prefect_state = flow_run.state
                    runbook = (flow_run.parameters or {}).get("runbook")
                except Exception:
                    prefect_state = None  # unknown to this server: judge by the heartbeat alone
            if prefect_state is not None and prefect_state.type.value in _FINAL:
                state = _FINAL[prefect_state.type.value]
                reason = f"Prefect reports the run {prefect_state.name}: {prefect_state.message or ''}".strip()
            elif now - last_sign > stale_after:
                state = RunState.crashed
                reason = (f"no heartbeat since {last_sign:%Y-%m-%d %H:%M:%S}Z; "
                          "the process running this runbook stopped without reporting")
                if incident.flow_run_id and prefect_state is not None:
                    client.set_flow_run_state(incident.flow_run_id, Crashed(message=reason), force=True)
            else:
                continue
            if state in (RunState.failed, RunState.crashed):
                # Nobody was told when it ended (no hook ran, or it died first): no incident ends silently.
                run_failure.raise_alarm(incident.id, outcome=state, reason=reason, flow_run_id=incident.flow_run_id,
                                        runbook=runbook if isinstance(runbook, str) else None,
                                        actor="firebreak:reconcile")
            incidents.set_run_state(incident.id, state, error=reason, actor="firebreak:reconcile")
            publish_report(incident.id, incident.flow_run_id)
            done.append(Reconciled(incident.id, state, reason))
    return done


@flow(name="reconcile-incidents", description="Record the end of runbook runs whose process died without reporting.")
def reconcile_incidents() -> list[str]:
    return [f"{r.incident_id}: {r.run_state.value} ({r.reason})" for r in reconcile_runs()]
