"""Post-incident reports built from records with fixed timestamps: milestones and
metrics, commitment thresholds, injection payloads, reviews, index, export.

Each test gets a fresh records database (the SQLite/PostgreSQL `backend` fixture).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from records import audit, incidents
from records.db import session_scope
from records.models import EventPhase, IncidentStatus, Notification, RunState
from reports import commitments, render
from reports.commitments import Evidence
from reports.incident_record import export_document, load_record
from reports.metrics import Fact
from runbooks.commitments import CATALOGUE
from runbooks.schema import CommitmentRef
from tests.report_support import acknowledge_at

XSS = "<script>alert('x')</script><img src=x onerror=alert(1)>"
TEMPLATE = "{{ 'ab' * 3 }}{% for x in range(2) %}loop{% endfor %}"
MARKDOWN = "[click](javascript:alert(1)) | cell | **bold** `code`"
PAYLOAD = f"{XSS} {TEMPLATE} {MARKDOWN}"




def _check(commitment: str, ref: CommitmentRef | None = None, *, level: str = "II", detected: datetime,
           acknowledged: datetime | None = None, resolved: datetime | None = None,
           first_delivery: datetime | None = None, steps: dict | None = None, figures: list | None = None,
           parameters: dict | None = None, run_ended: bool = True) -> commitments.CheckResult:
    return commitments.check(CATALOGUE[commitment], ref if ref is not None else CommitmentRef(id=commitment),
                             level=level, detected=Fact(detected, 1), acknowledged=Fact(acknowledged, 2 if acknowledged else None),
                             resolved=Fact(resolved, 3 if resolved else None),
                             first_delivery=Fact(first_delivery, 4 if first_delivery else None), reached=Fact(None),
                             steps=steps or {}, figures=figures or [], parameters=parameters or {}, titles={},
                             run_ended=run_ended)


def _firebreak(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firebreak", *args], capture_output=True, text=True, timeout=120)


def _build_outage(title: str = "Chat down", level: str = "II", *, ack_after: timedelta = timedelta(minutes=10),
                  summary: str | None = None, fault: str = "down") -> tuple[str, datetime]:
    """A system-outage incident recorded step by step at fixed offsets from its opening."""
    incident = incidents.open_incident(runbook_id="system-outage", runbook_version="1.0", title=title, level=level,
                                       source="drill", drill=True, summary=summary,
                                       parameters={"service_url": "http://sim", "affected_service": "online_chat",
                                                   "affected_customers": 2000})
    t0 = incident.triggered_at
    at = lambda **kw: t0 + timedelta(**kw)  # noqa: E731
    actor = "runbook:system-outage"

    def step(step_id: str, action: str, start: timedelta, end: timedelta, status: str = "succeeded",
             attempt: int = 1, output: object = None, error: str | None = None) -> None:
        incidents.append_event(incident.id, phase=EventPhase.intent, status="started", actor=actor, step_id=step_id,
                               action=action, attempt=attempt, summary=f"{step_id}: start", at=t0 + start)
        incidents.append_event(incident.id, phase=EventPhase.outcome, status=status, actor=actor, step_id=step_id,
                               action=action, attempt=attempt, summary=f"{step_id}: {status}", error=error,
                               data={"output": output} if output is not None else {}, at=t0 + end)

    step("assess", "http", timedelta(seconds=1), timedelta(seconds=2), output={"status": 503, "json": {"status": fault}})
    incidents.append_event(incident.id, phase=EventPhase.note, status="info", actor=actor, step_id="record_facts",
                           action="record", summary=summary or "online_chat reported down", at=at(seconds=3))
    step("page_technical_support", "notify", timedelta(seconds=3), timedelta(seconds=4), output={"delivered": 2})
    step("publish_fault_notice", "http", timedelta(minutes=30), timedelta(hours=3, minutes=59, seconds=59))
    step("isolate_failed_node", "http", timedelta(hours=4), timedelta(hours=4, seconds=1), status="failed",
         error="HTTP 500")
    step("isolate_failed_node", "http", timedelta(hours=4, seconds=2), timedelta(hours=4, seconds=3), attempt=2)
    step("fail_over", "http", timedelta(hours=4, seconds=4), timedelta(hours=4, seconds=5))
    acknowledge_at(incident.id, "li-wei", "Li Wei", "link", t0 + ack_after)
    incidents.transition(incident.id, IncidentStatus.mitigated, actor=actor, at=at(hours=4, seconds=6))
    incidents.transition(incident.id, IncidentStatus.resolved, actor=actor, at=at(hours=5))
    incidents.transition(incident.id, IncidentStatus.closed, actor="li-wei", reason="confirmed with customers",
                         at=at(hours=5, minutes=30))
    with session_scope() as session:
        for contact, role, sent in [("li-wei", "technical_support", at(seconds=4)),
                                    ("chen-jing", "technical_support", None)]:
            session.add(Notification(incident_id=incident.id, step_id="page_technical_support", contact=contact,
                                     role=role, channel=f"json://127.0.0.1/inbox/{contact}",
                                     idempotency_key=f"{incident.id}:page:{contact}", attempts=1 if sent else 3,
                                     status="delivered" if sent else "failed", error=None if sent else "HTTP 502",
                                     title="t", body="b", drill=True, created_at=at(seconds=3), sent_at=sent))
    incidents.set_run_state(incident.id, RunState.completed)
    return incident.id, t0


def test_report_has_every_section_with_metrics_from_fixed_timestamps(backend: str) -> None:
    incident_id, t0 = _build_outage()
    md = render.render(load_record(incident_id), "en").markdown
    for heading in ("Header", "Summary and impact", "Detection", "Milestones and metrics", "Commitment checks",
                    "Steps", "Notifications", "Decisions", "Root cause, lessons and action items", "Timeline",
                    "Integrity"):
        assert f"## {heading}" in md
    # Milestones in UTC and in Asia/Shanghai (UTC+8).
    resolved = t0 + timedelta(hours=5)
    assert f"| Resolved | {resolved:%Y-%m-%d %H:%M:%S}Z | {resolved + timedelta(hours=8):%Y-%m-%d %H:%M:%S} CST" in md
    seq = {e.status: e.seq for e in reversed(incidents.events(incident_id)) if e.phase == "note"}
    fail_over = next(e.seq for e in incidents.events(incident_id) if e.step_id == "fail_over" and e.phase == "outcome")
    assert f"| Time to acknowledge | 10 min 00 s | detected | #{seq['acknowledged']} |" in md
    # fail_over (mitigates: true) succeeded 1 s before the `mitigated` status: that is when it was mitigated.
    assert f"| Time to mitigate | 4 h 00 min | detected | #{fail_over} |" in md
    assert f"| Time to resolve | 5 h 00 min | detected | #{seq['resolved']} |" in md
    assert f"| Time to close | 5 h 30 min | detected | #{seq['closed']} |" in md
    assert "| Incident open (to closure or run end) | 5 h 30 min | started |" in md
    # Every declared step has a row; the retried step shows both attempts and its policy.
    from tasks.catalog import load_runbook

    for step in load_runbook("system-outage").runbook.steps:
        assert f"(`{step.id}`)" in md
    assert re.search(r"\| Isolate the failed node \(`isolate_failed_node`\) \| succeeded \| 2 \|", md)
    assert re.search(r"\| Close the incident \(`close`\) \| not run \| 0 \| — \| abort \|", md)
    # Both notifications, the failure visible, channels as recorded (redacted upstream).
    assert "| li\\_wei" not in md and "li-wei" in md and "chen-jing" in md and "failed: HTTP 502" in md
    # The timeline keeps the failed first attempt of isolate_failed_node.
    assert re.search(r"\| \d+→\d+ \| [0-9:.]+Z \(1\.0 s\) \| failed \| isolate\\_failed\\_node: failed ✗ HTTP 500 \|", md)
    assert "Closed" in md and "| li-wei | status (closed) |" in md  # a person's transition is a decision
    assert "**What closed it:** li-wei (by hand): confirmed with customers" in md
    assert "REVIEW PENDING" in md
    head = audit.verify(incident_id).head_hash
    assert f"`{head}`" in md and "The audit chain is intact." in md


def test_commitment_results_in_the_report(backend: str) -> None:
    incident_id, _ = _build_outage()
    rows = {c["title"]: c for c in render.build_view(load_record(incident_id), "en")["commitments"]}
    assert rows[CATALOGUE["response_time"].title_en]["raw_result"] == "pass"  # 10 min ≤ 2 h at level II
    assert rows[CATALOGUE["specialist_assigned_5min"].title_en]["raw_result"] == "pass"  # 4 s
    assert rows[CATALOGUE["workaround_4h"].title_en]["raw_result"] == "pass"  # 3 h 59 min 59 s
    assert rows[CATALOGUE["major_fault_repair_4h"].title_en]["raw_result"] == "pass"  # started at exactly 4 h
    assert rows[CATALOGUE["resolution_24h"].title_en]["raw_result"] == "pass"


def test_level_one_response_over_an_hour_is_a_breach_in_report_and_index(backend: str) -> None:
    incident_id, _ = _build_outage(level="I", ack_after=timedelta(hours=1, seconds=1))
    view = render.build_view(load_record(incident_id), "en")
    response = next(c for c in view["commitments"] if c["title"] == CATALOGUE["response_time"].title_en)
    assert (response["raw_result"], response["target"]) == ("fail", "≤ 1 h 00 min")
    assert response["measured"].startswith("1 h 00 min (acknowledged by Li Wei, #")
    assert view["breaches"] == 1
    listing = _firebreak("reports")
    assert listing.returncode == 0, listing.stderr
    assert re.search(rf"{incident_id} .*level I .*breaches: response_time", listing.stdout)
    assert "index.html" in listing.stdout


@pytest.mark.parametrize("level, delay, expected", [
    ("I", timedelta(hours=1), "pass"), ("I", timedelta(hours=1, microseconds=1), "fail"),
    ("II", timedelta(hours=2), "pass"), ("II", timedelta(hours=2, seconds=1), "fail"),
])
def test_response_commitment_threshold(level: str, delay: timedelta, expected: str) -> None:
    t0 = datetime(2026, 1, 28, 1, 0, tzinfo=timezone.utc)
    result = _check("response_time", level=level, detected=t0, acknowledged=t0 + delay)
    assert result.result == expected and result.value == delay and result.seq == 2


@pytest.mark.parametrize("commitment, evidence_delay, expected", [
    ("workaround_4h", timedelta(hours=4), "pass"), ("workaround_4h", timedelta(hours=4, seconds=1), "fail"),
    ("major_fault_repair_4h", timedelta(hours=4), "pass"),
    ("major_fault_repair_4h", timedelta(hours=4, seconds=1), "fail"),
    ("specialist_assigned_5min", timedelta(minutes=5), "pass"),
    ("specialist_assigned_5min", timedelta(minutes=5, seconds=1), "fail"),
])
def test_time_commitment_thresholds(commitment: str, evidence_delay: timedelta, expected: str) -> None:
    t0 = datetime(2026, 1, 28, 1, 0, tzinfo=timezone.utc)
    moment = t0 + evidence_delay
    steps = {"evidence": Evidence(first_started=moment, first_succeeded=moment, final_status="succeeded",
                                  started_seq=7, succeeded_seq=8)}
    result = _check(commitment, CommitmentRef(id=commitment, evidence=["evidence"]), detected=t0,
                    first_delivery=moment, steps=steps)
    assert (result.result, result.value) == (expected, evidence_delay)


def test_commitment_without_evidence_or_not_yet_due() -> None:
    t0 = datetime(2026, 1, 28, 1, 0, tzinfo=timezone.utc)
    ref = CommitmentRef(id="workaround_4h", evidence=["publish_fault_notice"])
    skipped = {"publish_fault_notice": Evidence(None, None, "skipped")}
    not_run = _check("workaround_4h", ref, detected=t0, steps=skipped)
    assert not_run.result == "not_measured" and "did not run" in not_run.note["en"]
    assert _check("workaround_4h", ref, detected=t0, run_ended=False).result == "pending"
    # The run ended and the incident was never acknowledged: a breach, not "pending".
    never = _check("response_time", detected=t0)
    assert never.result == "fail" and "never" in never.note["en"] and never.measured["en"] == "never"


@pytest.mark.parametrize("answer_target, confirmed, expected", [(30, True, "pass"), (31, True, "fail"),
                                                                 (30, False, "fail")])
def test_first_answer_commitment(answer_target: int, confirmed: bool, expected: str) -> None:
    t0 = datetime(2026, 1, 28, 1, 0, tzinfo=timezone.utc)
    output = {"last_json": {"service_level": 0.9412, "answer_target_seconds": answer_target}}
    wait = Evidence(t0, t0 + timedelta(minutes=3) if confirmed else None, "succeeded" if confirmed else "failed",
                    output if confirmed else None, 5, 6 if confirmed else None)
    result = _check("first_answer_30s", CommitmentRef(id="first_answer_30s", evidence=["wait_for_service_level"]),
                    detected=t0, steps={"wait_for_service_level": wait},
                    parameters={"answer_target_seconds": answer_target})
    assert result.result == expected
    if expected == "pass":  # what was measured, from the event that measured it; never the target itself
        assert result.measured["en"].startswith("94.1 % answered within 30 s once restored (#6")
        assert result.value == pytest.approx(0.9412) and result.seq == 6


def test_injection_payloads_are_inert_in_html_and_markdown(backend: str) -> None:
    incident_id, _ = _build_outage(title=PAYLOAD, summary=PAYLOAD)
    incidents.append_event(incident_id, phase=EventPhase.note, status="info", actor=XSS, summary=PAYLOAD,
                           error=PAYLOAD, data={"output": PAYLOAD})
    for lang in ("en", "zh"):
        rendered = render.render(load_record(incident_id), lang)
        html, md = rendered.html, rendered.markdown
        # HTML: no tag from the payload survives; it is shown as text.
        assert "<script" not in html.lower() and "<img" not in html.lower()
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
        assert "onerror=alert(1)&gt;" in html  # the attribute is inside escaped text, not a tag
        # Template syntax in data stays text (never evaluated): no "ababab", no "looploop".
        assert "ababab" not in html + md and "looploop" not in html + md
        assert "{{ &#39;ab&#39; * 3 }}" in html and "{{ 'ab' \\* 3 }}" in md
        # Markdown: no raw HTML, no live link, no broken table row, no emphasis.
        assert "<script" not in md.lower() and "<img" not in md.lower() and "&lt;script&gt;" in md
        assert "[click](javascript" not in md and "\\[click\\](javascript" in md
        assert "\\| cell \\|" in md and "\\*\\*bold\\*\\*" in md and "\\`code\\`" in md
        title_row = next(line for line in md.splitlines() if line.startswith(("| Title |", "| 标题 |")))
        assert len(re.findall(r"(?<!\\)\|", title_row)) == 3  # the injected pipes did not add cells
    # The standalone HTML loads nothing from anywhere.
    assert not re.search(r"<(script|link|iframe|object|embed)\b", html)
    assert not re.search(r"<[a-zA-Z][^<>]*\ssrc=", html)


def test_failed_run_report_says_so(backend: str) -> None:
    incident_id, _ = _build_outage()
    incident = incidents.open_incident(runbook_id="system-outage", runbook_version="1.0", title="Failover refused",
                                       level="II", source="alert", parameters={}, flow_run_id="run-x")
    incidents.append_event(incident.id, phase=EventPhase.outcome, status="failed", actor="runbook:system-outage",
                           step_id="fail_over", action="http", summary="Fail over: failed", error="HTTP 409")
    incidents.set_run_state(incident.id, RunState.failed, error="step 'fail_over' failed and its policy is abort")
    paths = render.write_reports(incident.id)
    md = paths[("en", "md")].read_text()
    assert "> **Run outcome: failed** — step 'fail\\_over' failed and its policy is abort" in md
    zh = paths[("zh", "html")].read_text()
    assert "执行结果: 失败" in zh and "复盘待完成" in zh
    assert "HTTP 409" in paths[("en", "html")].read_text()


def test_review_cli_fills_the_pending_section(backend: str) -> None:
    incident_id, _ = _build_outage()
    assert "REVIEW PENDING" in render.render(load_record(incident_id), "en").markdown
    bad = _firebreak("review", incident_id, "--root-cause", "x", "--action", "no owner here", "--by", "li-wei")
    assert bad.returncode == 2 and "WHAT|OWNER|YYYY-MM-DD" in bad.stderr.replace("what|owner|YYYY-MM-DD", "WHAT|OWNER|YYYY-MM-DD")
    bad_date = _firebreak("review", incident_id, "--root-cause", "x", "--action", "a|b|31-12-2026", "--by", "li-wei")
    assert bad_date.returncode == 2 and "due" in bad_date.stderr
    unknown = _firebreak("review", "INC-1999-0001", "--root-cause", "x", "--by", "li-wei")
    assert unknown.returncode == 2 and "INC-1999-0001" in unknown.stderr
    ok = _firebreak("review", incident_id, "--root-cause", "Primary DB disk full <b>", "--by", "li-wei",
                    "--lesson", "Alert on disk at 80%", "--action", "Add disk alert|chen-jing|2026-12-31")
    assert ok.returncode == 0, ok.stderr
    md = render.render(load_record(incident_id), "en").markdown
    assert "REVIEW PENDING" not in md and "Primary DB disk full &lt;b&gt;" in md
    assert "| Add disk alert | chen-jing | 2026-12-31 |" in md and "- Alert on disk at 80%" in md
    zh = render.render(load_record(incident_id), "zh").html
    assert "根本原因" in zh and "Add disk alert" in zh
    assert audit.verify(incident_id).intact  # the review is sealed into the chain, not outside it


def test_export_holds_the_whole_record_and_verifies_offline(backend: str, tmp_path) -> None:
    incident_id, _ = _build_outage()
    out = tmp_path / "export.json"
    result = _firebreak("export", incident_id, "--output", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["incident"]["id"] == incident_id
    assert {n["contact"] for n in document["notifications"]} == {"li-wei", "chen-jing"}
    assert len(document["events"]) == len(incidents.events(incident_id))
    # Anyone can re-walk the chain from the export alone.
    previous = audit.GENESIS
    for event in document["events"]:
        fields = {**event, "at": datetime.fromisoformat(event["at"])}
        assert event["prev_hash"] == previous and audit.chain_hash(previous, fields) == event["hash"]
        previous = event["hash"]
    assert previous == document["audit"]["head_hash"] == export_document(incident_id)["audit"]["head_hash"]
    assert _firebreak("export", "INC-1999-0001").returncode == 2


def test_expect_head_catches_a_rewritten_chain(backend: str) -> None:
    incident_id, _ = _build_outage()
    head = audit.verify(incident_id).head_hash
    assert _firebreak("audit", "verify", incident_id, "--expect-head", head).returncode == 0
    # A legitimate event after the head was printed extends it (issue 10): not a false alarm.
    incidents.append_event(incident_id, phase=EventPhase.note, status="info", actor="x", summary="later")
    moved = _firebreak("audit", "verify", incident_id, "--expect-head", head)
    assert moved.returncode == 0 and "extended since" in moved.stdout, moved.stdout
    # A head that is nowhere in the chain (it was rewritten, or this is another chain's head) is broken.
    other = _firebreak("audit", "verify", incident_id, "--expect-head", "ab" * 32)
    assert other.returncode == 1 and "anchor mismatch" in other.stdout and "nowhere in the chain" in other.stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_html_report_renders_in_a_browser(backend: str, tmp_path) -> None:
    incident_id, _ = _build_outage(title=PAYLOAD)
    html_path = render.write_reports(incident_id, ("en",), ("html",))[("en", "html")]
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", f"--screenshot={shot}", "--window-size=1200,1600",
                    f"file://{html_path}"], capture_output=True, timeout=90, check=False)
    assert shot.exists(), "chromium produced no screenshot"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 1600)
    # A page that rendered text compresses far worse than a blank one (a blank 1200x1600 PNG is ~5 KB).
    assert len(data) > 50_000
    # The script in the title stayed text: with it executed, chromium would have blocked on alert().
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--dump-dom", f"file://{html_path}"],
                         capture_output=True, text=True, timeout=90, check=False).stdout
    assert "<script" not in dom.lower() and "&lt;script&gt;" in dom


def test_validator_checks_declared_commitments(tmp_path) -> None:
    from tasks.catalog import validate_file
    from tests.runbook_helpers import write_runbook

    steps = [{"id": "notice", "action": "record", "with": {"message": "m"}}]
    path = write_runbook(tmp_path, "commits", steps, commitments=[
        "response_time", "no_such_commitment", {"id": "workaround_4h"},
        {"id": "major_fault_repair_4h", "evidence": ["missing_step"]}])
    _, problems = validate_file(path)
    messages = [str(p) for p in problems]
    assert any("commitments[1].id" in m and "unknown commitment 'no_such_commitment'" in m for m in messages)
    assert any("commitments[2]" in m and "needs evidence" in m for m in messages)
    assert any("commitments[3].evidence[0]" in m and "unknown step 'missing_step'" in m for m in messages)
    assert len(problems) == 3


def test_export_leaves_out_signed_acknowledgement_links(backend: str) -> None:
    incident_id, t0 = _build_outage()
    with session_scope() as session:
        session.add(Notification(incident_id=incident_id, step_id="page", contact="li-wei", role="technical_support",
                                 channel="json://127.0.0.1/inbox/li-wei", idempotency_key=f"{incident_id}:ack-test",
                                 attempts=1, status="delivered", title="t", drill=True, created_at=t0, sent_at=t0,
                                 body="Acknowledge: http://ops.example.com/ack/SU5DLTIw.7c7ec8fB8IV7-GBJ_CEIMD8"))
    exported = json.dumps(export_document(incident_id))
    assert "SU5DLTIw" not in exported and "http://ops.example.com/ack/[redacted]" in exported


def test_validator_requires_every_chinese_twin_once_one_is_there(tmp_path) -> None:
    """A runbook with any `_zh` twin has all of them (the Chinese report and pages are never half English)."""
    from tasks.catalog import validate_file
    from tests.runbook_helpers import write_runbook

    steps = [{"id": "note", "title": "Note it", "title_zh": "记录", "action": "record", "with": {"message": "m"}},
             {"id": "tell", "title": "Tell them", "description": "Page the lead.", "action": "notify",
              "with": {"to": ["scenario_lead"], "title": "t", "message": "m"}},
             {"id": "gate", "title": "Lead decides", "title_zh": "负责人决定", "action": "approval",
              "with": {"action": "publish", "reason": "busy", "approvers": ["scenario_lead"]}}]
    path = write_runbook(tmp_path, "half-chinese", steps)
    _, problems = validate_file(path)
    messages = sorted(str(p).split(": ", 1)[1] for p in problems)
    assert any("title: title_zh is missing" in m for m in messages)
    assert any("description: description_zh is missing" in m for m in messages)
    assert any("steps[1].id: step 'tell' has no title_zh" in m for m in messages)
    assert any("steps[1].description: step 'tell' has a description but no description_zh" in m for m in messages)
    assert any("steps[1].with.title: notify step 'tell' has `title` but no `title_zh`" in m for m in messages)
    assert any("steps[1].with.message: notify step 'tell' has `message` but no `message_zh`" in m for m in messages)
    # A note on the timeline and a gate's question are read by people too (the Chinese report, the approvers).
    assert any("steps[0].with.message: record step 'note' has `message` but no `message_zh`" in m for m in messages)
    assert any("steps[2].with.action: approval step 'gate' has `action` but no `action_zh`" in m for m in messages)
    assert any("steps[2].with.reason: approval step 'gate' has `reason` but no `reason_zh`" in m for m in messages)
    assert len(problems) == 9, messages
    whole = write_runbook(tmp_path, "all-chinese", [
        {**steps[0], "with": {"message": "m", "message_zh": "记录内容"}},
        {**steps[1], "title_zh": "通知", "description_zh": "呼叫负责人。",
         "with": {**steps[1]["with"], "title_zh": "标题", "message_zh": "内容"}},
        {**steps[2], "with": {**steps[2]["with"], "action_zh": "发布", "reason_zh": "繁忙"}}],
        title_zh="测试", description_zh="测试预案。")
    assert validate_file(whole)[1] == []
    # The seed runbooks carry every twin.
    for seed in ("system-outage", "network-congestion", "staffing-shortage"):
        from tasks.catalog import load_runbook

        assert load_runbook(seed).runbook.has_zh


def test_reports_written_in_a_burst_share_one_index_rewrite_and_the_index_misses_none(backend: str) -> None:
    """Runs ending together (a burst of incidents) each write their report; index.html, rebuilt from every
    incident's summary, is rewritten at most once per interval, and once the pending rewrite is done it lists
    every one of them. (A refresher of the test's own, with an interval the whole burst falls in, and the real
    write_index, counted.)"""
    ids = [_build_outage(title=f"Burst {n}")[0] for n in range(4)]
    rewrites = []

    def write_index() -> object:
        rewrites.append(1)
        return render.write_index()

    refresher = render._IndexRefresher(interval=3600.0, write=write_index)
    for incident_id in ids:
        assert render.write_reports(incident_id, ("en",), ("md",))[("en", "md")].exists()  # its summary
        refresher.request()
    assert len(rewrites) == 1  # the first at once, the other three folded into one pending rewrite
    refresher.flush()  # what the rewrite when the interval is over, or the process's exit, does
    assert len(rewrites) == 2
    index = (render.reports_dir() / "index.html").read_text(encoding="utf-8")
    assert all(incident_id in index for incident_id in ids)
    refresher.flush()
    assert len(rewrites) == 2  # nothing pending: nothing rewritten


def test_the_index_flush_at_exit_waits_for_a_rewrite_under_way_and_then_does_the_pending_one() -> None:
    """A report written while a rewrite is under way (begun before it, so missing it) leaves one pending;
    the flush a process does at exit waits for the rewrite under way, then does the pending one."""
    under_way, go_on, rewrites = threading.Event(), threading.Event(), []

    def write_index() -> None:
        rewrites.append(1)
        if len(rewrites) == 1:
            under_way.set()
            go_on.wait(30)

    refresher = render._IndexRefresher(interval=3600.0, write=write_index)
    first = threading.Thread(target=refresher.request)  # rewrites at once, and is held mid-rewrite
    first.start()
    assert under_way.wait(30)
    refresher.request()  # a report meanwhile: pending
    flusher = threading.Thread(target=refresher.flush)
    flusher.start()
    flusher.join(0.5)
    assert flusher.is_alive() and len(rewrites) == 1  # waiting for the rewrite under way, not skipping
    go_on.set()
    flusher.join(30)
    first.join(30)
    assert len(rewrites) == 2  # the pending rewrite, done once
