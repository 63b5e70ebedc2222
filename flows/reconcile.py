"""Close the books on runs that ended without saying so, and only on those.

For every incident whose run has not recorded an end, Prefect is asked about its flow run:

- Prefect reports it ended (Completed, Failed, Crashed, Cancelled): record that end.
- Prefect reports it Running, and neither its heartbeat (flows.heartbeat, every 5 s) nor the
  move to Running is newer than STALE_AFTER: the process running it died. Record it crashed,
  tell Prefect the same, and page the incident's responsible roles (flows.run_failure), once
  per run end however often reconcile runs.
- Prefect shows it Paused (an approval gate) and the heartbeat this run beat while it waited is
  older than STALE_AFTER: the process waiting at the gate died, and a decision would reach nobody.
  The same: crashed, told, paged. (A pause with no heartbeat of its run is left alone.)
- The incident recorded the run's end but Prefect still reports it Running without a heartbeat
  (the process died just after): Prefect is told it crashed; the recorded end stands.
- Anything else is waiting, not dead, and is left alone: a run still queued in the outbox (no
  flow run yet), Scheduled (a busy worker), Pending (created, not begun), Paused with its process
  alive, Cancelling, or a flow run this Prefect server does not know.

If Prefect cannot be reached nothing is judged (PrefectUnreachable): a run's state is Prefect's
to say, and a heartbeat alone cannot tell a dead run from one that never began.

The outbox row (records.run_outbox) of a run whose end is recorded here is marked finished, and
its lease on the incident (records.run_locks) released, so an operator can resume it (the same
flow run goes on: flows.operator_actions.resume) or run the runbook again at once.
A page the dead run left mid-send (a delivery try with no outcome, older than any send can take) is
recorded as an `interrupted` try (records.deliveries.record_cut_off_tries), so the record shows it even
if the run is never resumed.
Runs every minute as the `reconcile-incidents` deployment (prefect.yaml; `firebreak up` serves
it), and at the start of every drill.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from firebreak.errors import FirebreakError
from flows import run_failure
from flows.heartbeat import HEARTBEAT_SECONDS
from records import deliveries, incidents, run_locks, run_outbox
from records.models import RunState, utcnow
from reports.live_view import publish_live_view
from reports.publish import publish_report
from tasks.notify import LONGEST_SEND

#: Missing this many heartbeats means the process is gone.
STALE_AFTER = timedelta(seconds=HEARTBEAT_SECONDS * 6)

_FINAL = {"COMPLETED": RunState.completed, "FAILED": RunState.failed, "CRASHED": RunState.crashed,
          "CANCELLED": RunState.cancelled}


class PrefectUnreachable(FirebreakError, ConnectionError):
    """Prefect could not be reached, so reconcile judged no run (only Prefect knows whether a run is Running)."""


@dataclass(frozen=True)
class Reconciled:
    incident_id: str
    run_state: RunState
    reason: str


def reconcile_runs(stale_after: timedelta = STALE_AFTER) -> list[Reconciled]:
    """Record the runs that ended without saying so (module docstring); returns what was recorded.
    Raises PrefectUnreachable (having judged nothing more) when Prefect does not answer."""
    done: list[Reconciled] = []
    try:
        with get_client(sync_client=True) as client:
            problem = client.api_healthcheck()
            if problem is not None:
                raise _unreachable(problem, done)
            open_runs = incidents.open_runs()
            for incident in open_runs:
                if not incident.flow_run_id:
                    continue  # still queued in the outbox: no run to judge yet
                try:
                    flow_run = client.read_flow_run(UUID(incident.flow_run_id))
                except (ObjectNotFound, ValueError):
                    # Unknown to this Prefect server (or not a Prefect run id at all: a record written by
                    # hand or by another tool): it cannot say the run is Running; one such incident
                    # never stops the others being judged.
                    continue
                judged = _judge(client, incident, flow_run, stale_after)
                if judged is not None:
                    done.append(judged)
            # Outbox rows handed to a run whose incident already recorded its end: the process died
            # between that and telling Prefect or the outbox (or Prefect's workers ran it).
            for row in run_outbox.unfinished_runs(excluding={i.id for i in open_runs}):
                closed = _close_row(client, row, stale_after)
                if closed is not None:
                    done.append(closed)
    except PrefectUnreachable:
        raise
    except Exception as exc:
        if _is_connection_error(exc):
            raise _unreachable(exc, done) from exc
        raise
    return done


def _judge(client: Any, incident: Any, flow_run: Any, stale_after: timedelta) -> Reconciled | None:
    prefect_state = flow_run.state
    kind = prefect_state.type.value if prefect_state is not None else None
    runbook = (flow_run.parameters or {}).get("runbook")  # the run-runbook flow's `runbook`: the definition it used
    if kind in _FINAL:
        state = _FINAL[kind]
        reason = f"Prefect reports the run {prefect_state.name}: {prefect_state.message or ''}".strip()
    elif kind in ("RUNNING", "PAUSED"):
        # The newest sign of life: the incident's heartbeat, or the moment the run began or paused
        # (a run that just began may not have beaten yet).
        signs = [t for t in (incident.heartbeat_at, prefect_state.timestamp) if t is not None]
        last_sign = max(signs)
        if utcnow() - last_sign <= stale_after:
            return None
        if kind == "PAUSED" and (incident.heartbeat_at is None or flow_run.start_time is None
                                 or incident.heartbeat_at < flow_run.start_time):
            return None  # no heartbeat of this run to go by: a pause says nothing of its process
        state = RunState.crashed
        if kind == "RUNNING":
            reason = (f"no heartbeat since {last_sign:%Y-%m-%d %H:%M:%S}Z while Prefect reports the run Running; "
                      "the process running this runbook stopped without reporting")
        else:  # the engine's process waits at its gate, beating its heartbeat, until a decision comes
            reason = (f"no heartbeat since {last_sign:%Y-%m-%d %H:%M:%S}Z while Prefect shows the run Paused at "
                      "an approval gate; the process waiting there stopped, so a decision would reach nobody")
        from prefect.client.schemas.responses import SetStateStatus

        told = client.set_flow_run_state(incident.flow_run_id, Crashed(message=reason), force=kind == "PAUSED")
        if told.status != SetStateStatus.ACCEPT:
            return None  # it moved on meanwhile (ended, paused …): judged again next time
    else:
        return None  # Scheduled, Pending, Paused, Cancelling: waiting, not dead
    # Pages the run left mid-send are recorded as interrupted now, whether or not it is ever resumed.
    deliveries.record_cut_off_tries(incident.id, started_before=utcnow() - LONGEST_SEND)
    if state in (RunState.failed, RunState.crashed):
        # Nobody was told when it ended (no hook ran, or it died first): no incident ends silently.
        run_failure.raise_alarm(incident.id, outcome=state, reason=reason, flow_run_id=incident.flow_run_id,
                                runbook=runbook if isinstance(runbook, str) else None,
                                actor="firebreak:reconcile")
    incidents.set_run_state(incident.id, state, error=reason, actor="firebreak:reconcile")
    # The run is over in Prefect's eyes: its lease on the incident goes now, not when it would go
    # stale, so an operator's rerun starts at once. Were its process only stalled, the released lease
    # fences it: its next side effect is refused (records.run_locks).
    run_locks.release(incident.id, incident.flow_run_id)
    publish_report(incident.id, incident.flow_run_id)
    publish_live_view(incident.id)  # the live view shows the run's end and tags it needs-attention
    run_outbox.mark_run_finished(incident.id, incident.flow_run_id)
    return Reconciled(incident.id, state, reason)


def _close_row(client: Any, row: run_outbox.RunRequest, stale_after: timedelta) -> Reconciled | None:
    """An outbox row still `started` (or `scheduled`) whose incident recorded the run's end: finished
    once Prefect reports the run ended; if Prefect still reports it Running with a stale heartbeat,
    the process died after recording the end: Prefect is told it crashed (the record keeps the end
    the run recorded; nobody is paged for it, the engine paged before recording a failure)."""
    assert row.flow_run_id is not None
    try:
        flow_run = client.read_flow_run(UUID(row.flow_run_id))
    except ObjectNotFound:
        return None
    state = flow_run.state
    kind = state.type.value if state is not None else None
    if kind in _FINAL:
        run_outbox.mark_run_finished(row.incident_id, row.flow_run_id)
        return None
    if kind != "RUNNING":
        return None
    incident = incidents.get_incident(row.incident_id)
    if incident.flow_run_id != row.flow_run_id:
        return None  # the incident is driven by another run now
    last_sign = max(t for t in (incident.heartbeat_at, incident.run_ended_at, state.timestamp) if t is not None)
    if utcnow() - last_sign <= stale_after:
        return None  # still finishing (its report, its final state)
    recorded = RunState(incident.run_state)
    reason = (f"the run recorded its end ({recorded.value}) but its process stopped before telling Prefect; "
              f"Prefect showed it Running with no heartbeat since {last_sign:%Y-%m-%d %H:%M:%S}Z")
    from prefect.client.schemas.responses import SetStateStatus

    if client.set_flow_run_state(row.flow_run_id, Crashed(message=reason)).status != SetStateStatus.ACCEPT:
        return None
    publish_report(incident.id, row.flow_run_id)  # it may have died before publishing it
    run_outbox.mark_run_finished(row.incident_id, row.flow_run_id)
    return Reconciled(incident.id, recorded, reason)


def _is_connection_error(exc: BaseException) -> bool:
    import httpx

    if isinstance(exc, httpx.TransportError | OSError):
        return True
    response = getattr(exc, "response", None)
    return response is not None and getattr(response, "status_code", 0) >= 500


def _unreachable(problem: BaseException, done: list[Reconciled]) -> PrefectUnreachable:
    from prefect.settings import PREFECT_API_URL

    already = f" ({len(done)} run end(s) recorded before it stopped answering)" if done else ""
    return PrefectUnreachable(
        f"Prefect at {PREFECT_API_URL.value()} cannot be reached ({type(problem).__name__}: {problem}); "
        f"no run was judged{already}: queued, scheduled and pending runs are never judged without it. "
        "Run reconcile again when Prefect answers.")


@flow(name="reconcile-incidents",
      description="Record the end of runbook runs whose process died (Prefect reports them Running, their "
                  "heartbeat stopped) as crashed, and page their incidents; leave waiting runs alone.")
def reconcile_incidents() -> list[str]:
    return [f"{r.incident_id}: {r.run_state.value} ({r.reason})" for r in reconcile_runs()]
