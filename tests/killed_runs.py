"""Runs killed outright (SIGKILL) at a chosen step: any runbook run in a process of its own
(`kill_when_step_begins`), and a system-outage run in a `firebreak worker`, then reconciled and
resumed with what it did checked (`run_trial`: the chaos trials in tests/chaos and the resume
tests; see tests/chaos/test_run_killed_mid_step.py for what is checked and why)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx

from flows import operator_actions
from flows.reconcile import reconcile_runs
from flows.run_failure import ALARM_STEP_PREFIX
from notifications.drill_responder import AckServer, DrillResponder
from records import alert_ingest
from records.deliveries import attempts_of
from records.incidents import events, get_incident, list_incidents, notifications
from records.models import Incident
from simulator import start_simulator
from tests.environment import environment
from tests.polling import wait_for
from tests.records_env import records_database_at
from tests.run_workers import WorkerProcess, number_incidents_apart

#: A runbook run in a process of its own (the run-runbook flow, as a shell would start it).
RUNNER = """
import sys
from flows.engine import run_runbook
run_runbook(runbook=sys.argv[1])
"""


def kill_when_step_begins(runbook: Path, step_id: str) -> Incident:
    """Run `runbook` in a process of its own, SIGKILL it once `step_id` records its intent on a new
    incident (no hook runs, nothing is told), and return that incident."""
    known = {i.id for i in list_incidents(500)}
    process = subprocess.Popen([sys.executable, "-c", RUNNER, str(runbook)], env=dict(os.environ),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def begun() -> Incident | None:
            return next((i for i in list_incidents(500) if i.id not in known and any(
                e.step_id == step_id and e.phase == "intent" for e in events(i.id))), None)

        incident = wait_for(begun, what=f"{step_id} to begin")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return incident


#: Where a trial may kill the run: just after one of these steps records its intent (mid-step) or
#: its outcome (between steps). Side-effecting and waiting steps, and the status changes.
KILL_POINTS = [(step, phase) for step in ("assess", "page_technical_support", "engage_by_level",
                                          "isolate_failed_node", "fail_over", "publish_fault_notice",
                                          "mitigated", "verify_recovery", "announce_recovery",
                                          "tell_responders", "close")
               for phase in ("intent", "outcome")]


@dataclass
class Trial:
    seed: int
    step: str
    phase: str
    delay: float
    incident_id: str = ""
    ended_before_kill: bool = False
    alarm_pages: int = 0
    resumed: str = ""
    reused: int = 0
    mutations: int = 0
    replays: int = 0
    pages: int = 0


def run_trial(trial: Trial, home: Path, prefect_api_url: str) -> None:
    home.mkdir(parents=True)
    records = f"sqlite:///{home / 'firebreak.db'}"
    simulator = start_simulator(fault="down", recovery_seconds=0.5)
    parameters = {"service_url": simulator.url, "check_interval_seconds": 0.2, "healthy_checks": 2,
                  "recovery_deadline_seconds": 60}
    try:
        with (environment(FIREBREAK_INBOX=simulator.inbox_address), records_database_at(records), AckServer(),
              DrillResponder(simulator.inbox_url, delay=0.05)):
            number_incidents_apart(records)
            incident_id = _ask_for_the_run(parameters)
            trial.incident_id = incident_id
            # The worker's environment is this one: the records, the inbox and the ack links' public URL.
            first = WorkerProcess(home, records_url=records, prefect_api_url=prefect_api_url, slots=2, name="first")
            first.start()
            try:
                wait_for(lambda: any(e.step_id == trial.step and e.phase == trial.phase
                                     for e in events(incident_id)) or get_incident(incident_id).run_ended_at,
                         timeout=180, what=f"{trial.step} {trial.phase}")
                time.sleep(trial.delay)
                first.kill()
            finally:
                first.stop()

            _check_reconcile(trial, incident_id)
            if get_incident(incident_id).status != "closed":
                resumed = operator_actions.resume(incident_id, by="li-wei", via="cli", reason="chaos trial")
                assert resumed.details["runs_on"] == "queued for the run executors", resumed
                with WorkerProcess(home, records_url=records, prefect_api_url=prefect_api_url, slots=2,
                                   name="second"):
                    wait_for(lambda: get_incident(incident_id).run_state not in ("running", "pending", "crashed"),
                             timeout=300, what="the resumed run to end")
                incident = get_incident(incident_id)
                assert incident.status == "closed" and incident.run_state == "completed", _timeline(incident_id)
                trial.resumed = "finished, incident closed"
                trial.reused = sum(e.status == "reused" for e in events(incident_id))
            else:
                trial.resumed = "not needed, the incident was closed"
            _check_no_repeats(trial, incident_id, simulator.url, simulator.inbox_url)
    finally:
        simulator.stop()


def _ask_for_the_run(parameters: dict[str, object]) -> str:
    """A new incident and its outbox row, as the intake writes them for an alert."""
    plan = alert_ingest.RunPlan(route="chaos", runbook_id="system-outage", runbook_version="1.0", level="II",
                                parameters=parameters, flow_name="system-outage")
    alert = alert_ingest.IncomingAlert(source="chaos", format="generic", fingerprint=f"chaos-{time.time_ns()}",
                                       status="firing", summary="online chat down", labels={})
    (result,) = alert_ingest.ingest([(alert, plan)])
    assert result.disposition == "opened" and result.incident_id
    return result.incident_id


def _timeline(incident_id: str) -> str:
    incident = get_incident(incident_id)
    lines = [f"{incident_id} {incident.status}, run {incident.run_state}"]
    lines += [f"  {e.at:%H:%M:%S.%f} {e.step_id or '-'} {e.phase} {e.status}: {e.summary[:100]}"
              for e in events(incident_id)]
    return "\n".join(lines)


def _check_reconcile(trial: Trial, incident_id: str) -> None:
    """Reconcile (twice, as its schedule would) records the dead run and pages once; a run that
    had ended before the kill is left as it recorded itself."""
    reconcile_runs(stale_after=timedelta(seconds=0))
    reconcile_runs(stale_after=timedelta(seconds=0))
    incident = get_incident(incident_id)
    alarms = [n for n in notifications(incident_id)
              if n.step_id.startswith(ALARM_STEP_PREFIX) and n.status == "delivered"]
    trial.alarm_pages = len(alarms)
    if incident.run_state == "crashed":
        # Open and shown as needing attention; once the service is back (resolved) only the closing
        # steps are left, which the records do not count as needing attention (records.incidents).
        assert incident.needs_attention or incident.status in ("resolved", "closed"), (incident.status,
                                                                                       incident.run_state)
        # Once per contact: the alarm's pages are keyed by the run, so a second reconcile reuses them.
        contacts = Counter(n.contact for n in alarms)
        assert alarms and set(contacts.values()) == {1}, contacts
        assert sum(e.status == "alarm" for e in events(incident_id)) == 1
    else:
        # The run recorded its own end just before the kill (only possible after `close`).
        assert incident.run_state == "completed" and incident.status == "closed", incident
        trial.ended_before_kill = True


def _check_no_repeats(trial: Trial, incident_id: str, simulator_url: str, inbox_url: str) -> None:
    requests = [r for r in httpx.get(f"{simulator_url}/state", timeout=10).json()["requests"]
                if not r["path"].startswith("/inbox") and not r["path"].startswith("/faults")]
    assert all(r["idempotency_key"] for r in requests), [r for r in requests if not r["idempotency_key"]]
    executed = Counter((r["path"], r["idempotency_key"]) for r in requests
                       if not r["replayed"] and 200 <= r["status"] < 300)
    assert set(executed.values()) <= {1}, executed
    for path in ("/isolate", "/failover"):
        assert sum(n for (p, _), n in executed.items() if p.startswith(path)) <= 1, executed
    trial.mutations, trial.replays = len(requests), sum(r["replayed"] for r in requests)

    # Each page reaches the inbox at most once per try that may have delivered it: a delivered try, or one
    # cut off by the kill (recorded `interrupted`, or its row still `sending`), whose outcome nobody knows, so
    # the page is sent again, word for word (tasks.notify: the ack link in the text is signed for its page).
    inbox = httpx.get(f"{inbox_url}/inbox", timeout=10).json()
    received = Counter((m["recipient"], m["message"].get("title"), m["message"].get("message")) for m in inbox)
    attempts = attempts_of(incident_id)
    tries = Counter(a.notification_id for a in attempts if a.outcome in ("delivered", "interrupted"))
    recorded = {(a.notification_id, a.attempt) for a in attempts}
    allowed: Counter[tuple[str, str, str]] = Counter()
    for n in notifications(incident_id):
        # A row still `sending` whose try reconcile has not yet recorded as interrupted: that try, once.
        unrecorded = n.status == "sending" and (n.id, n.attempts) not in recorded
        allowed[(n.contact, n.title, n.body)] += tries[n.id] + unrecorded
    repeated = {text: count for text, count in received.items() if count > allowed[text]}
    assert not repeated, [(text[0], text[1], count, allowed[text]) for text, count in repeated.items()]
    trial.pages = len(inbox)
