"""Reports produced by real runs: each seed runbook against the simulator on the
session's Prefect server, a failed run, and a crashed run found by reconciliation.
Each report is checked against the records it was built from, and published as
the Prefect artifact report-<incident id>."""
from __future__ import annotations

from datetime import timedelta

import pytest

from records import audit, incidents
from records.incidents import events, get_incident, notifications
from reports.i18n import format_utc
from reports.publish import artifact_key
from reports.render import report_path
from tasks.catalog import load_runbook
from tests.runbook_helpers import run, write_runbook
from tests.seed_runs import run_seed

pytestmark = pytest.mark.usefixtures("prefect_server")

PAYLOAD = "<script>alert(1)</script> {{ 'ab' * 3 }} [x](javascript:alert(1))"


def _artifacts(incident_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(incident_id)])))


def _reports(incident_id: str) -> dict[str, str]:
    files = {f"{lang}.{fmt}": report_path(incident_id, lang, fmt) for lang in ("en", "zh") for fmt in ("md", "html")}
    assert all(path.exists() for path in files.values()), files
    return {name: path.read_text(encoding="utf-8") for name, path in files.items()}


@pytest.mark.parametrize("runbook, fault", [("system-outage", "down"), ("network-congestion", "congested"),
                                            ("staffing-shortage", "short-staffed")])
def test_seed_runbook_run_produces_its_report(simulator, runbook: str, fault: str) -> None:
    state, incident_id = run_seed(runbook, simulator, fault)
    assert state.is_completed()
    incident = get_incident(incident_id)
    texts = _reports(incident_id)
    md, zh = texts["en.md"], texts["zh.html"]
    assert f"# Post-incident report: {incident_id}" in md and "DRILL" in md and "事件复盘报告" in zh
    for step in load_runbook(runbook).runbook.steps:  # every step has its row
        assert f"(`{step.id}`)" in md
    for row in notifications(incident_id):  # every notification, with its channel as recorded
        assert row.contact in md and row.channel.replace("_", "\\_") in md
    for moment in (incident.triggered_at, incident.acknowledged_at, incident.resolved_at, incident.closed_at):
        assert format_utc(moment) in md
    # Mitigated: when the runbook's mitigating step first succeeded, if before the `mitigated` status.
    mitigating = {s.id for s in load_runbook(runbook).runbook.steps if s.mitigates}
    first = next(e for e in events(incident_id) if e.step_id in mitigating and e.status == "succeeded")
    assert first.at <= incident.mitigated_at and f"| Mitigated | {format_utc(first.at)} |" in md
    assert "- **Time to mitigate:** " in md and f"(#{first.seq})" in md
    html = texts["en.html"]
    for event in events(incident_id)[:-1]:  # the whole timeline up to the report's own moment, in the HTML
        assert f"<tr class=\"{'failed' if event.status == 'failed' else 'retry' if event.attempt > 1 else ''}\"><td>{event.seq}</td><td class=\"mono nw\">{event.at:%Y-%m-%d %H:%M:%S}" in html
    # A drill that recovers in seconds meets every commitment its runbook declares; every other
    # commitment of the seed plan is listed too, "not measured" with the reason.
    from reports.incident_record import load_record
    from reports.render import build_view
    from runbooks.commitments import CATALOGUE

    rows = {c["id"]: c for c in build_view(load_record(incident_id), "en")["commitments"]}
    assert list(rows) == list(CATALOGUE)
    declared = {c.id for c in load_runbook(runbook).runbook.commitments}
    # Technical support's response is their own acknowledgement: the drill responder clicks every page's link,
    # but the scenario lead's click may stop the escalation first and the run end before technical support's.
    from records.acknowledgements import list_acknowledgements

    support = {n.contact for n in notifications(incident_id) if "technical_support" in n.role}
    support_acks = [a for a in list_acknowledgements(incident_id) if a.contact_id in support]
    unanswered = {"technical_support_24h"} if "technical_support_24h" in declared and not support_acks else set()
    assert {i for i, c in rows.items() if c["raw_result"] == "pass"} == declared - unanswered
    assert all(c["raw_result"] == "not_measured" and c["note"] for i, c in rows.items()
               if i not in declared or i in unanswered)
    assert "**FAIL**" not in md and md.count("**PASS**") == len(declared - unanswered)
    # Charts: the steps' Gantt, and one chart per metric a wait_until step watched.
    watched = {e.step_id for e in events(incident_id) if e.action == "wait_until" and e.phase == "outcome"}
    assert html.count("<svg") == 1 + len(watched) and watched
    # The Chinese report carries no English step title, and neither do the pages sent to Chinese-speaking
    # contacts; the runbook's notes are told in Chinese (their `message_zh`), never as the English note.
    for step in load_runbook(runbook).runbook.steps:
        assert f">{step.title}<" not in texts["zh.html"] and f"| {step.title} (" not in texts["zh.md"]
        assert step.title_zh in texts["zh.html"]
    english_titles = [load_runbook(runbook).runbook.title] + [s.title for s in load_runbook(runbook).runbook.steps]
    zh_pages = [n for n in notifications(incident_id) if n.locale == "zh"]
    assert zh_pages
    for page in zh_pages:
        assert not any(title in page.title or title in page.body for title in english_titles), page.contact
    notes = [e for e in events(incident_id) if e.action == "record" and e.status == "info"]
    assert notes and all((e.data or {}).get("message_zh") for e in notes)
    for note in notes:
        assert " ".join(note.summary.split()) not in texts["zh.html"]
        assert " ".join(note.data["message_zh"].split()) in texts["zh.html"]
    # Technical support's response is technical support's own acknowledgement, where the runbook pages them.
    row = rows["technical_support_24h"]
    if support_acks and "technical_support_24h" in declared:
        assert f"(acknowledged by {support_acks[0].by} (Technical Support), #{row['seq']})" in row["measured"]
    elif unanswered:
        assert row["note"] == "nobody paged as Technical Support acknowledged"
    assert "REVIEW PENDING" in md
    # The report names the head it was rendered from. The drill responder may still click a page's link after
    # the run wrote it (its late acknowledgement extends the chain), so the record verifies as that head or
    # extended since it, which is what `firebreak audit verify --expect-head` checks.
    import re

    (head_seq, head_hash) = re.search(r"\(#(\d+)\): `([0-9a-f]{64})`", md).groups()
    verification = audit.verify(incident_id, expect_head=head_hash)
    assert verification.intact and verification.status in ("intact", "extended", "anchor-unchecked"), verification
    assert verification.head_hash == head_hash or verification.since == int(head_seq), verification
    published = _artifacts(incident_id)
    assert published and published[-1].type == "markdown"
    assert any(a.flow_run_id and str(a.flow_run_id) == incident.flow_run_id for a in published)
    assert incident_id in published[-1].data


def test_failed_run_still_gets_a_report_that_says_so(tmp_path) -> None:
    path = write_runbook(tmp_path, "doomed", [
        {"id": "note", "action": "record", "with": {"message": "Alert said: {{ incident.summary }}"}},
        {"id": "call_service", "action": "http", "needs": ["note"],
         "with": {"method": "POST", "url": "http://127.0.0.1:9/failover"}, "timeout": 5},
        {"id": "after", "action": "record", "needs": ["call_service"], "with": {"message": "never"}},
    ])
    state, incident_id = run(path, summary=PAYLOAD)
    assert state.is_failed()
    incident = get_incident(incident_id)
    assert incident.run_state == "failed"
    texts = _reports(incident_id)
    md, html = texts["en.md"], texts["en.html"]
    assert "> **Run outcome: failed** — step 'call\\_service' failed and its policy is abort" in md
    assert "Run outcome: failed" in html and "执行结果: 失败" in texts["zh.html"]
    # Run from a file outside the runbooks directory: the report still lists each step from the records.
    assert "| call\\_service (`call_service`) | failed | 1 |" in md
    assert "| after (`after`) | skipped |" in md
    # The alert text went through the runbook's template as data: recorded literally, shown inert.
    note = next(e for e in events(incident_id) if e.step_id == "note" and e.phase == "note")
    assert note.summary == f"Alert said: {PAYLOAD}"
    assert "ababab" not in md + html and "<script>" not in html and "&lt;script&gt;" in html
    assert "[x](javascript" not in md
    assert _artifacts(incident_id)


def test_crashed_run_found_by_reconcile_gets_a_report(backend: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows.reconcile import reconcile_runs
    from flows.seed_runbooks import ENTRY_FLOWS

    incident = incidents.open_incident(runbook_id="staffing-shortage", runbook_version="1.0", title="Agents short",
                                       level="II", source="operator", parameters={})
    # A run Prefect reports Running whose process died (no heartbeat): reconcile judges only such runs.
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(ENTRY_FLOWS["staffing-shortage"], state=Running())
    incidents.attach_run(incident.id, str(flow_run.id))
    incidents.append_event(incident.id, phase="intent", status="started", actor="runbook:staffing-shortage",
                           step_id="call_in_reserve", action="http", summary="Call in reserve staff")
    done = reconcile_runs(stale_after=timedelta(seconds=0))
    assert [r.incident_id for r in done] == [incident.id]
    texts = _reports(incident.id)
    md = texts["en.md"]
    assert "> **Run outcome: crashed** — no heartbeat since" in md
    assert "| Call in reserve staff (`call_in_reserve`) | started | 1 |" in md  # the attempt that never ended
    assert "崩溃" in texts["zh.md"]
    assert audit.verify(incident.id).intact


def test_review_form_flow_and_regeneration_flow(backend: str) -> None:
    from flows.report import regenerate_report, review_incident
    from records.reviews import ReviewInput

    incident = incidents.open_incident(runbook_id="system-outage", runbook_version="1.0", title="Chat down",
                                       level="II", source="operator", parameters={})
    paths = regenerate_report(incident_id=incident.id)
    assert "REVIEW PENDING" in open(paths["en.md"], encoding="utf-8").read()
    review = ReviewInput(root_cause="Disk full on the primary", lessons=["Alert at 80%"], entered_by="qian-li",
                         action_items=[{"text": "Add a disk alert", "owner": "chen-jing", "due": "2026-12-31"}])
    result = review_incident(incident_id=incident.id, review=review)
    assert result["revision"] == "1"
    md = open(result["en.md"], encoding="utf-8").read()
    assert "Disk full on the primary" in md and "| Add a disk alert | chen-jing | 2026-12-31 |" in md
    assert "整改措施" in open(result["zh.html"], encoding="utf-8").read()
    assert _artifacts(incident.id)
    bad = review_incident(incident_id="not-an-id", review=review, return_state=True)
    assert bad.is_failed()  # the form's pattern refuses it before anything is written
