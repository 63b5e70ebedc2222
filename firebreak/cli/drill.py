"""Drills: a seed runbook run end to end against the local simulator.

This is what `make demo` runs. The simulator is started in this process with
the runbook's fault injected, the notification channels point at its inbox,
and the flow runs in-process against the Prefect server (so it shows in the UI
immediately, without a worker's start-up delay).
"""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID
from zoneinfo import ZoneInfo

from firebreak.settings import get_settings

if TYPE_CHECKING:  # Prefect and the engine are imported only when a drill runs
    from prefect.client.schemas.objects import State

    from flows.engine import RunSummary

SIMULATED_FAULT = {"system-outage": "down", "network-congestion": "congested", "staffing-shortage": "short-staffed"}

#: Drill speed: checks every half second, so a drill takes seconds, not minutes.
QUICK_PARAMETERS = {"check_interval_seconds": 0.5, "recovery_deadline_seconds": 60}


def run_drill(runbook: str, *, level: str | None = None, fault: str | None = None, quick: bool = True) -> int:
    from firebreak.cli.prefect_server import ensure_server

    server = ensure_server()  # before Prefect is imported, so the run reports there
    from flows.reconcile import reconcile_runs

    for stale in reconcile_runs():
        print(f"earlier run of {stale.incident_id} recorded as {stale.run_state.value}: {stale.reason}")
    from simulator import start_simulator

    simulator = start_simulator(fault=fault or SIMULATED_FAULT[runbook], recovery_seconds=2.0)
    # The demo contacts' channels point at the simulator's inbox (its own port when the service is unreachable).
    os.environ.setdefault("FIREBREAK_INBOX", simulator.inbox_address)
    print(f"simulator: {simulator.url} (fault: {fault or SIMULATED_FAULT[runbook]})", flush=True)
    if simulator.inbox_url != simulator.url:
        print(f"           refuses connections; its notification inbox listens at {simulator.inbox_url}", flush=True)

    from flows.seed_runbooks import ENTRY_FLOWS

    entry = ENTRY_FLOWS[runbook]
    parameters = {"service_url": simulator.url, **(QUICK_PARAMETERS if quick else {})}
    from notifications.drill_responder import AckServer, DrillResponder

    started = time.monotonic()
    # Pages escalate until acknowledged; a stand-in on-call person clicks the signed link in the first page.
    with AckServer() as acks, DrillResponder(simulator.inbox_url) as responder:
        print(f"acknowledgement links served at {acks.url}; drill responder: {', '.join(responder.responders)}",
              flush=True)
        # Prefect's Flow[..., R] overloads cannot tell return_state=True apart (P is `...`): it gives State[R].
        state: State[RunSummary] = entry(  # type: ignore[assignment]  # return_state=True gives a State
            parameters=parameters, level=level, drill=True, source="drill", return_state=True)
    elapsed = time.monotonic() - started
    flow_run_id = str(state.state_details.flow_run_id)
    try:
        incident_id = _incident_of_run(flow_run_id)
        if incident_id:
            print_record(incident_id, inbox=simulator.inbox_url)
        print()
        print(f"run: {state.name} in {elapsed:.1f}s")
        if incident_id:
            _print_start_latency(incident_id, flow_run_id)
            print(f"incident: {incident_id}")
            _print_attention(incident_id)
        print(f"flow run: {server.ui_url}/runs/flow-run/{flow_run_id}")
        if incident_id:
            print(f"live view: {server.ui_url}/artifacts/key/incident-{incident_id.lower()}   (Prefect artifact)")
        if incident_id:
            print(f"timeline and notifications: .venv/bin/firebreak timeline {incident_id}   "
                  f"(records: {get_settings().records_url})")
            _print_report(incident_id)
        print(f"Prefect UI: {server.ui_url}  (the local server keeps running; `make stop` ends it)")
    finally:
        simulator.stop()
    return 0 if state.is_completed() else 1


def _print_attention(incident_id: str) -> None:
    """Whether the drill left the incident open with nothing driving it, and who was paged."""
    from notifications.summary import pages
    from records.incidents import get_incident

    incident = get_incident(incident_id)
    rows = pages(incident_id)
    delivered = sum(row.status == "delivered" for row in rows)
    print(f"pages: {delivered} of {len(rows)} delivered")
    if incident.needs_attention:
        print(f"NEEDS ATTENTION: {incident_id} is still {incident.status} and no run is driving it: "
              f"{incident.attention_reason}")


def _print_report(incident_id: str) -> None:
    """Where the report the run wrote at its end is (reports.publish)."""
    from reports.render import report_path, reports_dir

    html = report_path(incident_id, "en", "html")
    if not html.exists():
        print(f"report: not written; render it with .venv/bin/firebreak report {incident_id}")
        return
    print(f"report: {html}")
    print(f"        also {report_path(incident_id, 'en', 'md').name}, {report_path(incident_id, 'zh', 'html').name} "
          f"and {report_path(incident_id, 'zh', 'md').name} beside it; index of all: {reports_dir() / 'index.html'}")
    print(f"audit:  .venv/bin/firebreak audit verify {incident_id}")


def _incident_of_run(flow_run_id: object) -> str | None:
    from sqlalchemy import select

    from records.db import session_scope
    from records.models import Incident

    with session_scope() as session:
        return session.scalars(select(Incident.id).where(Incident.flow_run_id == str(flow_run_id))).first()


def _print_start_latency(incident_id: str, flow_run_id: str) -> None:
    from prefect.client.orchestration import get_client

    from records.incidents import events

    with get_client(sync_client=True) as client:
        created = client.read_flow_run(UUID(flow_run_id)).created
    first = next((e for e in events(incident_id) if e.phase == "intent"), None)
    if created and first:
        print(f"first step started {(first.at - created).total_seconds():.2f}s after the flow run was created")


def _local(at: datetime) -> str:
    zone = ZoneInfo(get_settings().local_timezone)
    return f"{at:%H:%M:%S.%f}"[:-3] + f"Z ({at.astimezone(zone):%H:%M:%S} {zone.key})"


def print_record(incident_id: str, inbox: str | None = None) -> None:
    """Print the incident, its timeline and its notifications, from the records database."""
    from records.incidents import events, get_incident

    incident = get_incident(incident_id)
    out = sys.stdout
    out.write(f"\n{incident.id} · {incident.title} · level {incident.level} · status {incident.status} · "
              f"run {incident.run_state}{' · DRILL' if incident.drill else ''}\n")
    if incident.needs_attention:
        out.write(f"  NEEDS ATTENTION: {incident.attention_reason}\n")
    for label, value in [("triggered", incident.triggered_at), ("acknowledged", incident.acknowledged_at),
                         ("mitigated", incident.mitigated_at), ("resolved", incident.resolved_at),
                         ("closed", incident.closed_at)]:
        out.write(f"  {label:<13}{_local(value) if value else '—'}\n")
    out.write("\ntimeline (records database):\n")
    for event in events(incident_id):
        attempt = f" try {event.attempt}" if event.attempt > 1 else ""
        step = f"[{event.step_id}{attempt}] " if event.step_id else ""
        error = f"  ✗ {event.error}" if event.error else ""
        out.write(f"  {event.seq:>3} {event.at:%H:%M:%S.%f}"[:-3] + f"  {event.phase:<7} {event.status:<12} {step}{event.summary}{error}\n")
    from notifications.summary import who_was_told

    out.write("\n")
    for line in who_was_told(incident_id):
        out.write(line + "\n")
    if inbox:
        import httpx

        received = httpx.get(f"{inbox}/inbox", timeout=5).json()
        out.write(f"  (the demo inbox, the simulator's receiver, holds {len(received)} message(s))\n")
