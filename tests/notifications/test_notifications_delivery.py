"""Real delivery through the engine: json:// to local HTTP receivers, mailto:// to a local
SMTP server (aiosmtpd); failures (HTTP 500, closed port, slow receiver, SMTP reject) fall
back to the next channel; a task retry never sends a delivered page again; a canary
secret never reaches records, logs or messages."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

import tasks.notify as notify_task
from firebreak.settings import get_settings
from records.incidents import events, get_incident, notifications
from tests.http_receivers import ScriptedServer
from tests.notifications_support import WHAT, SmtpServer, body_parts, closed_port, contact, page_step
from tests.runbook_helpers import run, step_events, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")

OK = [(200, {"ok": True})]






def test_json_and_mailto_deliveries_carry_the_facts(tmp_path: Path, notify_config) -> None:
    with ScriptedServer(OK) as receiver, SmtpServer() as smtp:
        notify_config.write([
            contact("li-wei", ["technical_support"], [f"json://{receiver.url[7:]}/inbox/li-wei"], locale="en"),
            contact("chen-jing", ["technical_support"], [smtp.url("chen@example.com")], locale="zh"),
        ])
        state, incident_id = run(write_runbook(tmp_path, "deliver", [page_step()], parameters=WHAT),
                                 summary="Chat outage in region east", drill=True)
    assert state.is_completed()
    flow_run_id = get_incident(incident_id).flow_run_id

    assert len(receiver.requests) == 1 and receiver.requests[0]["path"] == "/inbox/li-wei"
    sent = json.loads(receiver.requests[0]["body"])
    assert sent["title"].startswith("[DRILL] [" + incident_id + " · level II]")
    body = sent["message"]
    for fact in (incident_id, "Level: II", "Step: Page technical support", "Summary: Chat outage in region east",
                 f"{get_settings().public_url}/ack/", f"/runs/flow-run/{flow_run_id}", "This is a DRILL"):
        assert fact in body
    assert "<b>HTTP 503</b> {{ 7 * 7 }}" in body  # alert text is data: not evaluated (JSON is not HTML)

    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert incident_id in mail["Subject"] and "演练" in mail["Subject"]
    parts = body_parts(mail)
    html = parts["text/html"]
    assert "&lt;b&gt;HTTP 503&lt;/b&gt;" in html and "<b>HTTP 503</b>" not in html  # escaped where HTML renders
    assert "&lt;script&gt;" in html or "script" not in html
    assert "确认接警" in html and "/ack/" in html

    rows = {row.contact: row for row in notifications(incident_id)}
    assert {name: (r.status, r.event, r.locale, r.tier, r.attempts) for name, r in rows.items()} == {
        "li-wei": ("delivered", "triggered", "en", 1, 1), "chen-jing": ("delivered", "triggered", "zh", 1, 1)}
    assert rows["chen-jing"].channel.startswith("mailto://") and rows["li-wei"].sent_at is not None


def test_failing_channels_are_retried_then_fall_back(tmp_path: Path, notify_config, monkeypatch) -> None:
    monkeypatch.setattr(notify_task, "SEND_TIMEOUT", 0.5)
    monkeypatch.setattr(notify_task, "CHANNEL_BACKOFF", 0.05)
    with ScriptedServer([(500, {"error": "boom"})]) as broken, ScriptedServer(OK, delay=3) as slow, \
            SmtpServer(reject="550 5.1.1 mailbox unavailable") as smtp, ScriptedServer(OK) as good:
        notify_config.write([contact("li-wei", ["technical_support"], [
            f"json://{broken.url[7:]}/inbox",
            f"json://127.0.0.1:{closed_port()}/inbox",
            f"json://{slow.url[7:]}/inbox",
            smtp.url("li@example.com"),
            f"json://{good.url[7:]}/inbox",
        ])])
        state, incident_id = run(write_runbook(tmp_path, "fallback", [page_step()], parameters=WHAT))
    assert state.is_completed()
    rows = sorted(notifications(incident_id), key=lambda r: r.channel_index)
    assert [(r.channel_index, r.status, r.attempts) for r in rows] == [
        (0, "failed", 2), (1, "failed", 2), (2, "failed", 2), (3, "failed", 2), (4, "delivered", 1)]
    assert "500" in rows[0].error
    assert rows[1].error and rows[2].error and "li@example.com" in rows[3].error
    assert len(broken.requests) == 2 and len(good.requests) == 1 and not smtp.messages
    assert len({r.page_key for r in rows}) == 1  # one page, five channels tried

    from notifications.summary import who_was_told

    lines = list(who_was_told(incident_id))  # what `make demo` ends with
    assert lines[0].startswith("messages that reached whom (1 of 1 page(s) delivered")
    assert lines[1].split()[:3] == ["delivered", "li-wei", "page"] and "/inbox" in lines[1]
    assert lines[2:] == ["  nobody acknowledged"]


def test_every_channel_failing_fails_the_step_and_is_recorded(tmp_path: Path, notify_config) -> None:
    notify_config.write([contact("li-wei", ["technical_support"], [f"json://127.0.0.1:{closed_port()}/inbox"])])
    state, incident_id = run(write_runbook(tmp_path, "unreachable", [page_step(on_failure="continue")],
                                           parameters=WHAT))
    assert state.is_completed()  # on_failure: continue
    outcome = [e for e in events(incident_id) if e.step_id == "page" and e.phase == "outcome"]
    assert [e.status for e in outcome] == ["failed"]
    assert "nobody in role(s) ['technical_support'] was reached" in outcome[0].error
    assert [(r.status, r.attempts) for r in notifications(incident_id)] == [("failed", 2)]


def test_task_retry_after_a_delivered_page_does_not_send_it_again(tmp_path: Path, notify_config) -> None:
    with ScriptedServer(OK) as li_wei, ScriptedServer([(500, {}), (500, {}), (200, {})]) as qian_li:
        notify_config.write([
            contact("li-wei", ["technical_support"], [f"json://{li_wei.url[7:]}/inbox"]),
            contact("qian-li", ["scenario_lead"], [f"json://{qian_li.url[7:]}/inbox"], department="Customer Service"),
        ])
        step = page_step(to=["technical_support", "scenario_lead"], retries=1, retry_delay=0.1)
        state, incident_id = run(write_runbook(tmp_path, "retried", [step], parameters=WHAT))
    assert state.is_completed()
    attempts = [e for e in step_events(incident_id, "page") if e[0] != "note"]
    assert attempts == [("intent", "started", 1), ("outcome", "failed", 1),
                        ("intent", "started", 2), ("outcome", "succeeded", 2)]
    assert len(li_wei.requests) == 1  # delivered on the first try, never again
    assert len(qian_li.requests) == 3
    rows = {r.contact: r for r in notifications(incident_id)}
    assert (rows["li-wei"].status, rows["li-wei"].attempts) == ("delivered", 1)
    assert (rows["qian-li"].status, rows["qian-li"].attempts) == ("delivered", 3)


def test_a_slow_channel_does_not_hold_up_the_others(tmp_path: Path, notify_config) -> None:
    with ScriptedServer(OK, delay=1.5) as slow, ScriptedServer(OK) as fast:
        notify_config.write([
            contact("li-wei", ["technical_support"], [f"json://{slow.url[7:]}/inbox"]),
            contact("chen-jing", ["technical_support"], [f"json://{fast.url[7:]}/inbox"]),
        ])
        state, incident_id = run(write_runbook(tmp_path, "slow", [page_step()], parameters=WHAT))
    assert state.is_completed()
    rows = {r.contact: r for r in notifications(incident_id)}
    # Both were sent at once: the fast page was delivered while the slow one was still being answered.
    assert fast.requests[0]["at"] < slow.requests[0]["at"] + 1.5
    assert rows["chen-jing"].sent_at < rows["li-wei"].sent_at


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_canary_secret_never_reaches_records_logs_or_messages(tmp_path: Path, notify_config, monkeypatch) -> None:
    canary = "canary-7d1f0c3e9b-secret"
    monkeypatch.setenv("FB_TEST_CANARY", canary)
    monkeypatch.setattr(notify_task, "CHANNEL_BACKOFF", 0.05)
    handler = _Everything()
    loggers = [logging.getLogger(name) for name in ("", "prefect", "apprise", "firebreak")]
    previous = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    logging.getLogger("apprise").setLevel(logging.DEBUG)
    try:
        with ScriptedServer([(500, {})]) as failing, ScriptedServer(OK) as receiver:
            notify_config.write([contact("li-wei", ["technical_support"], [
                f"json://ops:${{FB_TEST_CANARY}}@{failing.url[7:]}/inbox?+X-Token=${{FB_TEST_CANARY}}",
                f"json://ops:${{FB_TEST_CANARY}}@{receiver.url[7:]}/inbox",
            ])])
            state, incident_id = run(write_runbook(tmp_path, "canary", [page_step()], parameters=WHAT))
    finally:
        for logger, level in previous:
            logger.removeHandler(handler)
            logger.setLevel(level)
    assert state.is_completed()
    # The secret was really used: it reached the receiver as HTTP basic auth, and only there.
    assert receiver.requests[0]["headers"].get("Authorization", "").startswith("Basic ")
    assert canary not in receiver.requests[0]["body"]
    rows = notifications(incident_id)
    assert [r.status for r in sorted(rows, key=lambda r: r.channel_index)] == ["failed", "delivered"]
    recorded = [r.channel + (r.error or "") + r.title + r.body for r in rows]
    recorded += [e.summary + (e.error or "") + json.dumps(e.data) for e in events(incident_id)]
    assert all(canary not in text for text in recorded)
    assert all("****" in r.channel or "ops" not in r.channel for r in rows)
    assert handler.lines and all(canary not in line for line in handler.lines)
    database = Path(re.sub(r"^sqlite:///", "", get_settings().records_url))
    for path in (database, database.with_name(database.name + "-wal")):
        if path.exists():
            assert canary.encode() not in path.read_bytes()
