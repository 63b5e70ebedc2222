"""Every delivery attempt is its own record (issue 10, item 9).

A real local HTTP receiver answers 500, 500, then 200: the page is delivered on the third
try (the channel's two tries, then the step's retry). Each try is a delivery_attempts row
(when, page, contact, redacted channel, number, outcome, redacted error) beside the
channel's summary row, shown by `firebreak timeline` and in the report; the table is
append-only; a secret in the channel URL reaches none of it.

A try whose process is killed mid-send (the receiver holds the request, unanswered) records nothing
itself; the next try of that page records it as `interrupted`, then itself, on SQLite and PostgreSQL.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import tasks.notify as notify_task
from firebreak.settings import reload_settings
from records import deliveries, incidents
from records.db import get_engine
from records.deliveries import attempts_of
from records.incidents import notifications
from reports.render import load_record, render
from tasks.base import StepContext
from tasks.catalog import ACTIONS
from tests.environment import environment
from tests.http_receivers import ScriptedServer
from tests.notifications_support import WHAT, contact, page_step
from tests.polling import wait_for
from tests.runbook_helpers import run, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_each_try_is_recorded_shown_and_kept(tmp_path: Path, notify_config, monkeypatch) -> None:
    canary = "canary-5e0c41a7-attempts"
    monkeypatch.setenv("FB_TEST_CANARY", canary)
    monkeypatch.setattr(notify_task, "CHANNEL_BACKOFF", 0.05)
    with ScriptedServer([(500, {"error": "boom"}), (500, {"error": "boom"}), (200, {"ok": True})]) as receiver:
        notify_config.write([contact("li-wei", ["technical_support"],
                                     [f"json://ops:${{FB_TEST_CANARY}}@{receiver.url[7:]}/inbox"])])
        step = page_step(retries=1, retry_delay=0.1)
        state, incident_id = run(write_runbook(tmp_path, "tries", [step], parameters=WHAT))
    assert state.is_completed()
    assert len(receiver.requests) == 3

    (summary,) = notifications(incident_id)  # the per-page/channel row stays the summary
    assert (summary.status, summary.attempts, summary.error) == ("delivered", 3, None)
    tries = attempts_of(incident_id)
    assert [(t.attempt, t.outcome) for t in tries] == [(1, "failed"), (2, "failed"), (3, "delivered")]
    assert all(t.notification_id == summary.id and t.page_key == summary.page_key and t.contact == "li-wei"
               and t.channel == summary.channel for t in tries)
    assert "500" in tries[0].error and "500" in tries[1].error and tries[2].error is None
    assert all(t.started_at <= t.finished_at for t in tries)
    assert tries[0].finished_at <= tries[1].started_at and tries[1].finished_at <= tries[2].started_at
    assert all(canary not in (t.channel + (t.error or "")) for t in tries)

    from firebreak.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["timeline", incident_id]) == 0
    line = next(line for line in out.getvalue().splitlines() if line.strip().startswith("delivered") and "li-wei" in line)
    assert "attempts: 3 (2 failed: " in line and "500" in line

    record = load_record(incident_id)
    assert "attempts: 3 (2 failed: " in render(record, "en").markdown
    assert "尝试 3 次（2 次失败：" in render(record, "zh").html
    assert canary not in render(record, "en").markdown + render(record, "en").html

    for sql in ("UPDATE delivery_attempts SET outcome = 'delivered'", "DELETE FROM delivery_attempts"):
        with pytest.raises(DBAPIError, match="append-only"):
            with get_engine().begin() as conn:
                conn.execute(text(sql))


#: A notify step's page in a process of its own, as a run's task makes it: context and arguments from argv.
SENDER = """
import json, sys
from tasks.base import StepContext
from tasks.catalog import ACTIONS
ACTIONS["notify"].run_in_flow(StepContext.model_validate_json(sys.argv[1]), json.loads(sys.argv[2]))
"""


def test_a_try_cut_off_by_a_killed_process_is_recorded_by_the_next_try(backend: str, notify_config) -> None:
    incident = incidents.open_incident(runbook_id="paging", runbook_version="1", title="Chat down", level="II",
                                       source="operator", parameters={})
    # One run generation for both processes: the second is the retry (or resume) of the first's page.
    context = StepContext(incident_id=incident.id, incident_uid=incident.uid, runbook_id="paging", step_id="page",
                          step_title="Page technical support", action="notify", level="II", run_generation=1)
    arguments = {"to": ["technical_support"], "title": "Chat down", "message": "Online chat fails."}
    answer = threading.Event()
    with ScriptedServer([(200, {"ok": True})], hold=answer) as receiver:
        notify_config.write([contact("li-wei", ["technical_support"], [f"json://{receiver.url[7:]}/inbox"])])
        sender = subprocess.Popen([sys.executable, "-c", SENDER, context.model_dump_json(), json.dumps(arguments)],
                                  env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # The page has reached the receiver, which holds its answer: the sender is mid-send.
            wait_for(lambda: receiver.requests or sender.poll() is not None, what="the page to reach the receiver")
            assert sender.poll() is None, "the sender ended before its page arrived"
            sender.send_signal(signal.SIGKILL)
            sender.wait(timeout=30)
        finally:
            if sender.poll() is None:
                sender.kill()
        (cut_off,) = notifications(incident.id)
        assert (cut_off.status, cut_off.attempts) == ("sending", 1)
        assert attempts_of(incident.id) == []  # the killed try recorded nothing of how it ended

        answer.set()
        # A message rendered now would carry an ack link of a later expiry (whole seconds) than the cut-off one.
        time.sleep(1.1)
        output = ACTIONS["notify"].run_in_flow(context, arguments)
    assert len(receiver.requests) == 2
    # The resend repeats the cut-off message word for word (it may have arrived), and that is the text recorded.
    first, again = (json.loads(r["body"]) for r in receiver.requests)
    assert again == first and "/ack/" in first["message"]
    assert [(d["status"], d["attempts"]) for d in output["deliveries"]] == [("delivered", 2)]

    (summary,) = notifications(incident.id)  # the same channel row, counted on
    assert (summary.id, summary.status, summary.attempts) == (cut_off.id, "delivered", 2)
    assert (summary.title, summary.body) == (cut_off.title, cut_off.body) == (first["title"], first["message"])
    interrupted, delivered = attempts_of(incident.id)
    assert [(t.attempt, t.outcome) for t in (interrupted, delivered)] == [(1, "interrupted"), (2, "delivered")]
    assert "process ended" in interrupted.error and "unknown" in interrupted.error and delivered.error is None
    assert all(t.notification_id == summary.id and t.channel == summary.channel for t in (interrupted, delivered))
    assert interrupted.started_at <= interrupted.finished_at <= delivered.started_at <= delivered.finished_at

    from notifications.summary import who_was_told

    line = next(line for line in who_was_told(incident.id) if "li-wei" in line)
    assert line.strip().startswith("delivered") and "attempts: 2 (1 interrupted, outcome unknown)" in line
    record = load_record(incident.id)
    assert "attempts: 2 (1 interrupted, outcome unknown)" in render(record, "en").markdown
    assert "尝试 2 次（1 次中断，结果未知）" in render(record, "zh").html


def test_a_cut_off_page_whose_ack_link_would_soon_expire_is_sent_afresh(backend: str, notify_config) -> None:
    """Repeating a cut-off message word for word stops once its ack link has under an hour left: the contact
    then gets a fresh message whose link works (here the links live one hour, so any earlier text is too old)."""
    incident = incidents.open_incident(runbook_id="paging", runbook_version="1", title="Chat down", level="II",
                                       source="operator", parameters={})
    context = StepContext(incident_id=incident.id, incident_uid=incident.uid, runbook_id="paging", step_id="page",
                          step_title="Page technical support", action="notify", level="II", run_generation=1)
    arguments = {"to": ["technical_support"], "title": "Chat down", "message": "Online chat fails."}
    try:
        with environment(FIREBREAK_ACK_LINK_TTL_HOURS="1"), ScriptedServer([(200, {"ok": True})]) as receiver:
            reload_settings()
            notify_config.write([contact("li-wei", ["technical_support"], [f"json://{receiver.url[7:]}/inbox"])])
            # What a process killed mid-send leaves: the channel's row claimed for a try, never finished.
            page_key = f"{context.idempotency_key}:li-wei:c0:t1"
            deliveries.begin_attempt(key=f"{page_key}:ch0", page_key=page_key, incident_id=incident.id,
                                     step_id="page", contact="li-wei", role="technical_support",
                                     channel="json://127.0.0.1/inbox", title="an earlier text",
                                     body="an earlier body, its ack link about to expire", drill=False)
            output = ACTIONS["notify"].run_in_flow(context, arguments)
    finally:
        reload_settings()  # outside the environment: the cached settings must not keep its 1 h link lifetime
    assert [(d["status"], d["attempts"]) for d in output["deliveries"]] == [("delivered", 2)]
    (sent,) = (json.loads(r["body"]) for r in receiver.requests)
    assert "Chat down" in sent["title"] and "/ack/" in sent["message"] and "earlier" not in sent["message"]
    (summary,) = notifications(incident.id)
    assert (summary.title, summary.body) == (sent["title"], sent["message"])
    assert [t.outcome for t in attempts_of(incident.id)] == ["interrupted", "delivered"]


def test_reconcile_records_a_cut_off_try_once_and_a_resend_does_not_record_it_again(backend: str,
                                                                                    notify_config) -> None:
    """What reconcile does for a run it judges dead (flows.reconcile): each try left `sending` longer ago than any
    send can take is recorded `interrupted`, once however often it is asked; a resumed run's resend then counts
    itself without recording that try a second time."""
    incident = incidents.open_incident(runbook_id="paging", runbook_version="1", title="Chat down", level="II",
                                       source="operator", parameters={})
    context = StepContext(incident_id=incident.id, incident_uid=incident.uid, runbook_id="paging", step_id="page",
                          step_title="Page technical support", action="notify", level="II", run_generation=1)
    arguments = {"to": ["technical_support"], "title": "Chat down", "message": "Online chat fails."}
    with ScriptedServer([(200, {"ok": True})]) as receiver:
        notify_config.write([contact("li-wei", ["technical_support"], [f"json://{receiver.url[7:]}/inbox"])])
        page_key = f"{context.idempotency_key}:li-wei:c0:t1"
        cut_off = deliveries.begin_attempt(key=f"{page_key}:ch0", page_key=page_key, incident_id=incident.id,
                                           step_id="page", contact="li-wei", role="technical_support",
                                           channel="json://127.0.0.1/inbox", title="t", body="b", drill=False)
        assert cut_off.attempt_started_at is not None
        # A try that began at the cut-off time or later may still be under way: left alone.
        assert deliveries.record_cut_off_tries(incident.id, started_before=cut_off.attempt_started_at) == 0
        assert attempts_of(incident.id) == []
        later = cut_off.attempt_started_at + timedelta(seconds=1)
        assert deliveries.record_cut_off_tries(incident.id, started_before=later) == 1
        assert deliveries.record_cut_off_tries(incident.id, started_before=later) == 0
        (interrupted,) = attempts_of(incident.id)
        assert (interrupted.attempt, interrupted.outcome) == (1, "interrupted") and "unknown" in interrupted.error
        assert notifications(incident.id)[0].status == "sending"  # its outcome is still unknown

        output = ACTIONS["notify"].run_in_flow(context, arguments)
    assert [(d["status"], d["attempts"]) for d in output["deliveries"]] == [("delivered", 2)]
    assert [(t.attempt, t.outcome) for t in attempts_of(incident.id)] == [(1, "interrupted"), (2, "delivered")]
