"""Every figure of the post-incident report, each from the event it came from (issue 11).

Each test builds an incident through the records API at fixed offsets from its opening, renders
the report, and checks the figure and the event seq printed beside it: time to acknowledge (a
person or a monitor, never a runbook setting the status), time to mitigate (the first mitigating
step or `mitigated` status), time to resolve and close, who acknowledged which page, gate decisions
as recorded, every seed commitment listed (measured, or "not measured — why"), monitor-closed
incidents, a resolve after closure, and the Markdown artifact's narrow tables.
"""
from __future__ import annotations

import re
import time
from datetime import timedelta

from pydantic import BaseModel

from records import incidents
from records.alert_ingest import IncomingAlert, RunPlan, ingest
from records.models import EventPhase, IncidentStatus, RunState
from reports import render
from reports.incident_record import load_record
from reports.metrics import FINAL_RUN_STATES
from runbooks.commitments import CATALOGUE
from tests.report_support import Outage, acknowledge_at

ACTOR = "runbook:system-outage"




def duration(view: dict, label: str) -> dict:
    return next(d for d in view["durations"] if d["label"] == label)


def commitment(view: dict, commitment_id: str) -> dict:
    return next(c for c in view["commitments"] if c["id"] == commitment_id)


def test_time_to_mitigate_is_the_fail_over_not_the_acknowledgement(backend: str) -> None:
    """Finding 2: the fail-over at 3 min 30 s mitigated it, whatever time the `mitigated` status came."""
    o = Outage()
    fail_over = o.step("fail_over", "http", timedelta(minutes=3, seconds=29), timedelta(minutes=3, seconds=30))
    acknowledge_at(o.id, "li-wei", "Li Wei", "link", o.at(minutes=10))
    o.status(IncidentStatus.mitigated, minutes=10, seconds=32)  # waited for the acknowledgement
    view = o.view()
    ttm = duration(view, "Time to mitigate")
    assert (ttm["value"], ttm["seq"]) == ("3 min 30 s", fail_over)
    mitigated = next(m for m in view["milestones"] if m["label"] == "Mitigated")
    assert mitigated["source"] == f"#{fail_over} · {ACTOR} · step “Fail over to the standby”"
    # With no mitigating step, the `mitigated` status is the moment.
    other = Outage()
    status_seq = other.status(IncidentStatus.mitigated, minutes=7)
    assert (duration(other.view(), "Time to mitigate")["value"], duration(other.view(), "Time to mitigate")["seq"]) \
        == ("7 min 00 s", status_seq)


def test_time_to_acknowledge_is_a_person_or_a_monitor(backend: str) -> None:
    o = Outage()
    o.status(IncidentStatus.acknowledged, minutes=1)  # the runbook set it: not an acknowledgement
    view = o.view()
    tta = duration(view, "Time to acknowledge")
    assert tta["value"] == "—" and tta["seq"] is None
    assert tta["why"].startswith("no person or monitor acknowledged; runbook:system-outage set the status at #")
    assert "not measured — no person or monitor acknowledged" in o.markdown()
    acknowledge_at(o.id, "li-wei", "Li Wei", "link", o.at(minutes=4, seconds=5))
    ack_seq = incidents.events(o.id)[-1].seq
    tta = duration(o.view(), "Time to acknowledge")
    assert (tta["value"], tta["seq"]) == ("4 min 05 s", ack_seq)
    assert commitment(o.view(), "response_time")["measured"] == f"4 min 05 s (acknowledged by Li Wei, #{ack_seq})"
    # A monitor's acknowledgement counts too (intake: acknowledge_incident(by="monitor:…", via="monitor")).
    m = Outage(source="alert")
    acknowledge_at(m.id, None, "monitor:alertmanager", "monitor", m.at(seconds=42))
    tta = duration(m.view(), "Time to acknowledge")
    assert (tta["value"], tta["seq"]) == ("42.0 s", incidents.events(m.id)[-1].seq)


def test_time_to_resolve_and_close_come_from_their_own_events(backend: str) -> None:
    o = Outage()
    resolved = o.status(IncidentStatus.resolved, reason="healthy 3 checks in a row", hours=1, minutes=2)
    closed = o.status(IncidentStatus.closed, actor="qian-li", reason="customers told", hours=1, minutes=20)
    view = o.view()
    assert (duration(view, "Time to resolve")["value"], duration(view, "Time to resolve")["seq"]) == ("1 h 02 min", resolved)
    assert (duration(view, "Time to close")["value"], duration(view, "Time to close")["seq"]) == ("1 h 20 min", closed)
    assert view["closing"]["resolved"] == f"runbook system-outage: healthy 3 checks in a row (#{resolved})"
    assert view["closing"]["closed"] == f"qian-li (by hand): customers told (#{closed})"
    md = o.markdown()
    assert f"- **Time to close:** 1 h 20 min (#{closed})" in md
    # The jump triggered → resolved implies acknowledged and mitigated: they are not invented as measurements.
    assert duration(view, "Time to acknowledge")["value"] == "—"
    mitigated = next(m for m in view["milestones"] if m["label"] == "Mitigated")
    assert mitigated["source"].startswith(f"#{resolved} · {ACTOR} · implied")


def test_each_page_shows_only_its_own_acknowledgement(backend: str) -> None:
    """Finding 3: the incident's acknowledgement is not copied onto every page."""
    o = Outage()
    o.page("li-wei", "technical_support", o.at(seconds=4))
    o.page("chen-jing", "technical_support", o.at(seconds=4))
    o.page("qian-li", "scenario_lead", None)
    acknowledge_at(o.id, "li-wei", "Li Wei", "link", o.at(minutes=2))
    ack_seq = incidents.events(o.id)[-1].seq
    rows = {n["contact"]: n for n in o.view()["notifications"]}
    assert rows["li-wei"]["acknowledged"] == f"acknowledged by Li Wei (#{ack_seq}) {o.at(minutes=2):%H:%M:%S}"
    assert rows["chen-jing"]["acknowledged"] == "—" and rows["qian-li"]["acknowledged"] == "—"
    assert rows["li-wei"]["sent"] != "—" and rows["qian-li"]["raw_status"] == "failed"
    # A repeat by another person is hers alone (the CLI: matched by name, no contact id).
    acknowledge_at(o.id, None, "chen-jing", "cli", o.at(minutes=3))
    rows = {n["contact"]: n for n in o.view()["notifications"]}
    assert rows["chen-jing"]["acknowledged"].startswith("acknowledged by chen-jing (#")
    decisions = [(d["who"], d["kind"]) for d in o.view()["decisions"]]
    assert decisions == [("Li Wei", "acknowledged"), ("chen-jing", "ack-repeated")]


def test_gate_decisions_as_recorded(backend: str) -> None:
    """Finding 1: a person's rejection is reported as a rejection by that person, not as a timeout."""
    o = Outage(level="I")
    incidents.append_event(o.id, phase=EventPhase.note, status="awaiting-approval", actor=ACTOR,
                           step_id="approve_failover", action="approval", summary="waiting", at=o.at(minutes=1),
                           data={"timeout": 600, "on_timeout": "escalate"})
    rejected = incidents.append_event(
        o.id, phase=EventPhase.note, status="rejected", actor="Zhao Gang", step_id="approve_failover",
        action="approval", summary="Commander approves the fail-over (level I): rejected by Zhao Gang: standby is cold",
        at=o.at(minutes=2), data={"decision": "rejected", "approver": "Zhao Gang", "comment": "standby is cold"}).seq
    incidents.append_event(o.id, phase=EventPhase.outcome, status="failed", actor=ACTOR, step_id="approve_failover",
                           action="approval", summary="failed", at=o.at(minutes=2),
                           error="ApprovalRejected: rejected by Zhao Gang: standby is cold")
    # A second gate nobody answered, proceeding by its policy.
    incidents.append_event(o.id, phase=EventPhase.note, status="awaiting-approval", actor=ACTOR, step_id="other_gate",
                           action="approval", summary="waiting", at=o.at(minutes=3),
                           data={"timeout": 900, "on_timeout": "proceed"})
    timed_out = incidents.append_event(o.id, phase=EventPhase.note, status="approval-timed-out", actor=ACTOR,
                                       step_id="other_gate", action="approval", summary="nobody decided",
                                       at=o.at(minutes=18), data={"decision": "proceeded-on-timeout"}).seq
    view = o.view()
    gates = [(d["who"], d["kind"], d["comment"], d["seq"]) for d in view["decisions"]]
    assert gates == [("Zhao Gang", "rejected", "standby is cold", rejected),
                     ("—", "timed-out", "900s, on_timeout: proceed", timed_out)]
    step = next(s for s in view["steps"] if s["id"] == "approve_failover")
    assert step["status"] == "rejected"
    assert step["words"] == f"rejected by Zhao Gang: standby is cold (#{rejected})"
    assert "timed out" not in step["words"]
    zh = next(s for s in o.view("zh")["steps"] if s["id"] == "approve_failover")
    assert zh["status"] == "驳回" and zh["words"].startswith("Zhao Gang 驳回：standby is cold")


def test_a_failure_the_action_decided_is_not_called_a_timeout(backend: str) -> None:
    """tasks.base: a rejection that arrives after the step's own timeout is still a rejection."""
    from tasks.approval import ApprovalRejected
    from tasks.base import StepContext, action

    class Nothing(BaseModel):
        pass

    def decide_late(_inp: Nothing, attempt) -> None:
        time.sleep(max(0.0, attempt.remaining()) + 0.05)  # the person answers after the step's deadline
        raise ApprovalRejected("rejected by Zhao Gang: standby is cold")

    name = f"test.reject_late_{time.monotonic_ns()}"
    late = action(name, Nothing, describe=lambda _inp: "decide late", in_flow=True)(decide_late)
    o = Outage()
    context = StepContext(incident_id=o.id, runbook_id="system-outage", step_id="approve_failover",
                          step_title="Commander approves the fail-over (level I)", action=name, level="I",
                          timeout=0.2)
    try:
        late.run_in_flow(context, {})
    except ApprovalRejected:
        pass
    outcome = incidents.events(o.id)[-1]
    assert (outcome.phase, outcome.status) == ("outcome", "failed")
    assert outcome.error == "ApprovalRejected: rejected by Zhao Gang: standby is cold"


def test_every_seed_commitment_is_listed_measured_or_with_the_reason(backend: str) -> None:
    """Finding 5: chat 1 min, social 30 min, first-contact resolution ≥ 85 %, satisfaction ≥ 90 % (and every
    other commitment of the seed plan) always appear; what the runbook recorded is scored."""
    o = Outage(runbook="staffing-shortage")
    start = incidents.append_event(o.id, phase=EventPhase.note, status="info", actor=o.actor, step_id="record_gap",
                                   action="record", summary="gap", at=o.at(seconds=5),
                                   data={"measurements": {"first_contact_resolution": 0.63, "satisfaction": 0.53,
                                                          "chat_first_reply_seconds": 315.0}}).seq
    after = incidents.append_event(o.id, phase=EventPhase.note, status="info", actor=o.actor,
                                   step_id="record_service_figures", action="record", summary="figures",
                                   at=o.at(minutes=5),
                                   data={"measurements": {"first_contact_resolution": 0.87, "satisfaction": 0.89,
                                                          "chat_first_reply_seconds": 15.0,
                                                          "social_first_reply_seconds": 1801.0,
                                                          "ivr_greeting_seconds": 6.0, "complaint_rate": 0.02}}).seq
    incidents.set_run_state(o.id, RunState.completed)
    view = o.view()
    assert [c["id"] for c in view["commitments"]] == list(CATALOGUE)
    for wanted in ("chat_reply_1min", "social_media_30min", "first_contact_resolution_85", "satisfaction_90"):
        assert commitment(view, wanted)["raw_result"] in ("pass", "fail")
    fcr = commitment(view, "first_contact_resolution_85")
    assert (fcr["raw_result"], fcr["target"], fcr["measured"], fcr["seq"]) == \
        ("pass", "≥ 85 %", f"87.0 % (recorded at #{after})", after)
    assert fcr["note"] == f"at the start 63.0 % (#{start})"
    satisfaction = commitment(view, "satisfaction_90")
    assert (satisfaction["raw_result"], satisfaction["measured"]) == ("fail", f"89.0 % (recorded at #{after})")
    social = commitment(view, "social_media_30min")
    assert (social["raw_result"], social["target"], social["measured"]) == \
        ("fail", "≤ 30 min 00 s", f"30 min 01 s (recorded at #{after})")
    assert commitment(view, "chat_reply_1min")["measured"] == f"15.0 s (recorded at #{after})"
    # Commitments nothing in the record can show: "not measured" and why.
    walk_in = commitment(view, "walk_in_on_the_spot")
    assert (walk_in["raw_result"], walk_in["measured"]) == ("not_measured", "—")
    assert walk_in["note"] == "walk-in service points report nothing to Firebreak"
    repair = commitment(view, "major_fault_repair_4h")
    assert repair["raw_result"] == "not_measured" and repair["note"].startswith("staffing-shortage does not declare it")
    # Never acknowledged, nothing delivered, never resolved: those declared commitments are missed.
    assert view["score"] == "Scored against the plan: 4 met, 5 missed, 9 not measured, 0 pending, of 18 commitments."
    md = o.markdown()
    for c in CATALOGUE.values():
        assert c.title_en in md
    zh = o.view("zh")
    assert commitment(zh, "first_contact_resolution_85")["measured"] == f"87.0%（记录于 #{after}）"
    assert commitment(zh, "walk_in_on_the_spot")["note"] == "线下网点不向 Firebreak 报送数据"


def test_monitor_closed_incident_says_what_closed_it(backend: str) -> None:
    """Finding 8: resolved on the monitor's word; and a resolve after closure is on the timeline."""
    plan = RunPlan(route="test", runbook_id="system-outage", runbook_version="1.0", level="II",
                   flow_name="system-outage")
    fingerprint = f"alertmanager/fp-{time.monotonic_ns()}"
    firing = IncomingAlert(source="alertmanager", format="alertmanager", fingerprint=fingerprint, status="firing",
                           summary="chat down")
    (opened,) = ingest([(firing, plan)])
    incident_id = opened.incident_id
    incidents.attach_run(incident_id, None)
    resolved_alert = IncomingAlert(source="alertmanager", format="alertmanager", fingerprint=fingerprint,
                                   status="resolved", summary="chat down")
    (first,) = ingest([(resolved_alert, plan)])
    assert first.disposition == "resolved"
    monitor_seq = incidents.events(incident_id)[-1].seq
    output = {"satisfied": True, "checks": 2, "consecutive": 0, "elapsed_seconds": 1.0, "last_status": 503,
              "last_json": {"status": "down"}, "resolved_by_monitor": True, "condition": "status == 200",
              "bounds": [], "samples": []}
    incidents.append_event(incident_id, phase=EventPhase.outcome, status="succeeded", actor=ACTOR,
                           step_id="verify_recovery", action="wait_until", summary="Wait until healthy: done",
                           data={"output": output})
    incidents.transition(incident_id, IncidentStatus.resolved, actor=ACTOR,
                         reason="the monitor reported the alert resolved (2 health checks, the last 0 healthy in a row)")
    resolved_seq = incidents.events(incident_id)[-1].seq
    incidents.transition(incident_id, IncidentStatus.closed, actor=ACTOR, reason="recovery confirmed")
    incidents.set_run_state(incident_id, RunState.completed)
    # The monitor says "resolved" again after closure: stored with the incident and on its timeline.
    (late,) = ingest([(resolved_alert, plan)])
    assert (late.disposition, late.incident_id) == ("after-close", incident_id)
    late_event = incidents.events(incident_id)[-1]
    assert late_event.status == "monitor-late-resolve" and late_event.actor == "monitor:alertmanager"

    view = render.build_view(load_record(incident_id), "en")
    assert view["closing"]["resolved"].startswith("the monitor alertmanager reported the alert resolved")
    assert view["closing"]["resolved"].endswith(f"(#{resolved_seq})")
    resolved = next(m for m in view["milestones"] if m["label"] == "Resolved")
    assert resolved["source"] == f"#{resolved_seq} · monitor:alertmanager · monitor #{monitor_seq}"
    assert len(view["closing"]["after"]) == 1 and view["closing"]["after"][0].startswith(f"#{late_event.seq} ")
    assert "after the incident was closed" in view["closing"]["after"][0]
    assert "healthy 0 checks" not in render.render(load_record(incident_id), "en").markdown
    zh = render.build_view(load_record(incident_id), "zh")
    assert "事件关闭后，监控报告告警已恢复" in zh["closing"]["after"][0]


def test_markdown_artifact_tables_are_narrow(backend: str) -> None:
    """Finding 7: the Prefect artifact (Markdown) has no wide tables and no overlong cells."""
    o = Outage()
    for n in range(30):
        o.step(f"extra_{n}", "http", timedelta(seconds=n), timedelta(seconds=n, milliseconds=500),
               output={"status": 200, "json": {"text": "x" * 600}, "elapsed_ms": 3.0})
    o.page("li-wei", "technical_support", o.at(seconds=4))
    incidents.append_event(o.id, phase=EventPhase.note, status="info", actor=ACTOR, summary="y " * 400)
    md = o.markdown()
    for line in md.splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line)[1:-1]
            assert len(cells) <= 6, line
            assert all(len(cell) <= 220 for cell in cells), line
    # Long timelines are grouped by phase, each attempt on one line (its intent folded into its outcome).
    assert "### Triggered (#1–#" in md
    assert re.search(r"\| \d+→\d+ \| [0-9:.]+Z \(0\.5 s\) \| succeeded \| extra\\_0: succeeded \|", md)


def test_technical_support_responds_is_technical_support_s_own_acknowledgement(backend: str) -> None:
    """The scenario lead acknowledging first is the incident's response, not technical support's."""
    o = Outage()
    o.page("qian-li", "scenario_lead", o.at(seconds=4), step="engage_by_level")
    o.page("li-wei", "technical_support", o.at(seconds=4))
    acknowledge_at(o.id, "qian-li", "Qian Li", "link", o.at(minutes=1))
    first = incidents.events(o.id)[-1].seq
    incidents.set_run_state(o.id, RunState.completed)
    view = o.view()
    assert commitment(view, "response_time")["measured"] == f"1 min 00 s (acknowledged by Qian Li, #{first})"
    silent = commitment(view, "technical_support_24h")
    assert (silent["raw_result"], silent["measured"]) == ("not_measured", "—")
    assert silent["note"] == "nobody paged as Technical Support acknowledged"
    assert commitment(o.view("zh"), "technical_support_24h")["note"] == "被呼叫的技术支持人员均未确认"
    # Li Wei answers two minutes later: a repeat for the incident, technical support's response all the same.
    acknowledge_at(o.id, "li-wei", "Li Wei", "link", o.at(minutes=3))
    answered = incidents.events(o.id)[-1].seq
    view = o.view()
    row = commitment(view, "technical_support_24h")
    assert (row["raw_result"], row["seq"]) == ("pass", answered)
    assert row["measured"] == f"3 min 00 s (acknowledged by Li Wei (Technical Support), #{answered})"
    assert commitment(o.view("zh"), "technical_support_24h")["measured"] == \
        f"3 分 00 秒（Li Wei（技术支持）确认，#{answered}）"
    assert commitment(view, "response_time")["seq"] == first  # the incident's response is still the first
    # Header: the command roles and the roles paged in this incident, in words.
    assert view["commander"] == "钱丽 Qian Li (Scenario lead)" and view["roles"] == "Technical Support, Scenario lead"
    assert o.view("zh")["roles"] == "技术支持、场景负责人"


def test_a_level_change_or_handover_is_not_a_status_change(backend: str) -> None:
    """records.incidents.change_level and hand_over_command note {from, to} too: not a status, in any language."""
    o = Outage()
    incidents.change_level(o.id, "I", actor="cli:li-wei", reason="10,000 customers")
    incidents.hand_over_command(o.id, "sun-hao", actor="cli:li-wei", summary="Command handed to sun-hao")
    view = o.view()
    assert [d["kind"] for d in view["decisions"]] == []  # neither is a person's status change
    assert duration(view, "Time to acknowledge")["value"] == "—"
    zh = o.view("zh")
    words = [row["summary"] for row in zh["timeline"]]
    assert "响应级别 II 级 → I 级（cli:li-wei）" in words
    assert "指挥权由 — 移交给 sun-hao（cli:li-wei）" in words
    assert not any(w.startswith("状态 II") for w in words)


#: Every timeline status the code records, as literals (status="…") in the packages that write events.
_STATUS_LITERAL = re.compile(r'status="([a-z][a-z-]+)"')


def _recorded_statuses() -> set[str]:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found: set[str] = set()
    for package in ("tasks", "notifications", "records", "flows", "intake"):
        for path in (root / package).rglob("*.py"):
            found |= set(_STATUS_LITERAL.findall(path.read_text(encoding="utf-8")))
    # f-strings: the run's end (flows: run-<final state>) and a monitor's word (records.alert_ingest).
    found |= {f"run-{state}" for state in FINAL_RUN_STATES} | {"monitor-resolved", "monitor-acknowledged"}
    return found


def test_every_recorded_status_has_its_chinese_word(backend: str) -> None:
    """A Chinese report prints no English status: each status the code records has its word (finding 6)."""
    from reports.i18n import word

    statuses = _recorded_statuses()
    assert {"escalation-stopped", "level-changed", "run-completed", "operator-note"} <= statuses
    untranslated = sorted(s for s in statuses if word(s, "zh") == s)
    assert untranslated == []
    # And as rendered: an escalation stopped by someone else's acknowledgement, in Chinese words.
    o = Outage()
    incidents.append_event(o.id, phase=EventPhase.note, status="escalation-stopped", actor=ACTOR,
                           step_id="page_technical_support", action="notify", at=o.at(minutes=1),
                           summary="stopped: acknowledged by Qian Li via link; tier 2 (duty_manager) not paged",
                           data={"kind": "acknowledged", "by": "Qian Li", "via": "link", "next_tier": 2})
    row = o.view("zh")["timeline"][-1]
    assert (row["status"], row["summary"]) == ("停止升级", "呼叫技术支持：Qian Li 经确认链接确认，停止升级（第 2 级未呼叫）")
    html = render.render(load_record(o.id), "zh").html
    assert "escalation-stopped<" not in html and "stopped: acknowledged" not in html


def test_a_note_is_told_in_the_reader_s_language(backend: str) -> None:
    """tasks.note keeps `message_zh`: the Chinese report prints it, never the English note."""
    o = Outage()
    seq = incidents.append_event(o.id, phase=EventPhase.note, status="info", actor=ACTOR, step_id="record_facts",
                                 action="record", at=o.at(seconds=3),
                                 summary="online_chat reported down (HTTP 503); about 2000 customers affected",
                                 data={"message_zh": "online_chat 报告状态 down（HTTP 503）；约 2000 名客户受影响"}).seq
    assert o.view("zh")["facts"] == [f"#{seq} 记录事实情况：online_chat 报告状态 down（HTTP 503）；约 2000 名客户受影响"]
    assert o.view()["facts"] == [f"#{seq} online_chat reported down (HTTP 503); about 2000 customers affected"]
    assert "customers affected" not in render.render(load_record(o.id), "zh").html


def test_charts_fit_their_labels_and_speak_the_reader_s_language(backend: str) -> None:
    """The Gantt breaks a long step title over two lines (never mid-word, no ellipsis); axes in 秒/分 in
    Chinese; a health check's chart plots the HTTP status each check got, against the status it waited for."""
    o = Outage()
    o.step("engage_by_level", "notify", timedelta(seconds=1), timedelta(seconds=2), output={"delivered": 1})
    samples = [{"t": 0.0, "at": o.at(seconds=30 + 10 * i).isoformat(), "status": status, "holds": status == 200,
                "values": {}} for i, status in enumerate([503, 503, 200, 200, 200])]
    o.step("verify_recovery", "wait_until", timedelta(seconds=30), timedelta(seconds=70),
           output={"satisfied": True, "checks": 5, "consecutive": 3, "elapsed_seconds": 40.0,
                   "condition": "status == 200 and json.status == 'ok'", "bounds": [], "samples": samples})
    o.status(IncidentStatus.resolved, minutes=2, seconds=10)
    view = o.view()
    gantt = str(view["charts"]["gantt"])
    assert '>Engage the responders</tspan><tspan x="264" dy="11">of the response level</tspan>' in gantt
    assert "…" not in gantt and "<script" not in gantt
    assert ">1 min</text>" in gantt and ">time since detection</text>" in gantt
    (watch,) = view["charts"]["watched"]
    svg = str(watch["svg"])
    assert "HTTP status (→ 200)" in svg and "threshold = 200" in svg and "<path d=\"M" in svg
    zh = o.view("zh")
    assert ">1 分</text>" in str(zh["charts"]["gantt"]) and ">自发现起的时间</text>" in str(zh["charts"]["gantt"])
    assert '>按响应级别通知响应人员</tspan>' in str(zh["charts"]["gantt"])
    assert "HTTP 状态码 (→ 200)" in str(zh["charts"]["watched"][0]["svg"])
    # The Prefect artifact (Markdown, which shows no SVG) tells what the watched metric did, in words.
    assert "HTTP status 503 → 200; the condition held in 3 of 5 checks" in o.markdown()
    assert "HTTP 状态码 503 → 200；5 次检查中条件成立 3 次" in o.markdown("zh")
