"""Every delivery attempt is its own record (issue 10, item 9).

A real local HTTP receiver answers 500, 500, then 200: the page is delivered on the third
try (the channel's two tries, then the step's retry). Each try is a delivery_attempts row
(when, page, contact, redacted channel, number, outcome, redacted error) beside the
channel's summary row, shown by `firebreak timeline` and in the report; the table is
append-only; a secret in the channel URL reaches none of it.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import tasks.notify as notify_task
from records.db import get_engine
from records.deliveries import attempts_of
from records.incidents import notifications
from reports.render import load_record, render
from tests.http_receivers import ScriptedServer
from tests.notifications_support import WHAT, contact, page_step
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
