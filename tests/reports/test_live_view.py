"""The live incident view in Prefect (reports.live_view): the artifact `incident-<id>` follows the
incident while its run goes on (a gate waiting, its decision, the end), the run's tags say when a
person is needed, and a run's many timeline events become few artifact versions (coalesced by
one updater thread, not one Prefect call per event)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from records.incidents import events, get_incident
from reports.live_view import AWAITING_APPROVAL, NEEDS_ATTENTION, artifact_key
from tests.gated_runs import Background, gated, resume
from tests.polling import wait_for
from tests.report_support import artifact_versions, latest
from tests.runbook_helpers import run, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")




def run_tags(flow_run_id: str) -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return set(client.read_flow_run(flow_run_id).tags)


def test_key_follows_prefect_rules() -> None:
    assert artifact_key("INC-2026-0001") == "incident-inc-2026-0001"
    assert artifact_key("INC_2026.7") == "incident-inc-2026-7"


def test_a_gate_shows_and_tags_the_run_until_it_is_decided(tmp_path: Path) -> None:
    background = Background(gated(tmp_path, "live-gate", timeout=120))
    incident_id, flow_run_id = background.paused_incident()
    view = wait_for(lambda: (text := latest(incident_id)) and "Waiting for a decision" in text and text,
                    what="the live view to show the waiting gate")
    assert "Approve the fail-over" in view and "Resume" in view and "## Now and next" in view
    wait_for(lambda: {AWAITING_APPROVAL, NEEDS_ATTENTION} <= run_tags(flow_run_id), what="attention tags")

    resume(flow_run_id, run_input={"decision": "approve", "approver": "Qian Li", "comment": "go"})
    assert background.finish().is_completed()
    final = latest(incident_id)
    assert "Waiting for a decision" not in final
    # The decision was shown in the recent timeline, as the contacts name her (under load, later events
    # such as the approvers' pages in flight can push it out of the final view's last 12).
    assert any("approved by 钱丽 Qian Li" in version.data for version in artifact_versions(incident_id))
    tags = run_tags(flow_run_id)
    # The run completed with the incident still open (this runbook has no status steps): a person is
    # needed, but no gate waits any more.
    assert AWAITING_APPROVAL not in tags and NEEDS_ATTENTION in tags
    assert "NEEDS ATTENTION" in final


def test_a_whole_drill_is_a_few_versions_ending_in_the_closed_incident(simulator: Any) -> None:
    from tests.seed_runs import run_seed

    state, incident_id = run_seed("system-outage", simulator, "down")
    assert state.is_completed()
    incident = get_incident(incident_id)
    final = latest(incident.id)
    assert f"# {incident.id}" in final and "**closed**" in final and "## Paged" in final
    assert "Report: [report-" in final  # the link to the report artifact, written as the run ended
    assert "Acknowledged** by" in final  # the drill responder acknowledged by the page's link
    # Coalesced: many events, far fewer versions (at most one per second of the run, and only on change).
    versions = artifact_versions(incident.id)
    assert 1 < len(versions) < len(events(incident.id)) / 2
    assert NEEDS_ATTENTION not in run_tags(incident.flow_run_id)
    assert get_incident(incident.id).status == "closed"


def test_a_failed_run_is_tagged_needs_attention(tmp_path: Path) -> None:
    path = write_runbook(tmp_path, "live-fails", [
        {"id": "broken", "action": "http", "with": {"url": "http://127.0.0.1:9/nothing"}, "timeout": 5},
    ], allowed_hosts=["127.0.0.1"], on_run_failure={"notify": ["technical_support"], "by_level": False})
    state, incident_id = run(path)
    assert state.is_failed()
    final = latest(incident_id)
    assert "NEEDS ATTENTION" in final and "run failed" in final
    assert NEEDS_ATTENTION in run_tags(get_incident(incident_id).flow_run_id)


def test_the_first_view_waits_for_the_first_page_and_the_head_is_anchored_as_it_moves(
        tmp_path: Path, simulator: Any) -> None:
    """In a burst of new incidents no page waits behind a live-view write to Prefect: the view is first
    published once the run's first page was tried (or FIRST_VIEW_WAIT_SECONDS later). While the run
    goes on, the view follows it, and the audit head is anchored in Prefect with it, not only at the end."""
    from sqlalchemy import select

    from records.audit import AuditAnchoring
    from records.db import session_scope
    from records.models import Notification

    path = write_runbook(tmp_path, "live-page-first", [
        {"id": "look", "action": "wait", "with": {"seconds": 1.5}},
        {"id": "page", "action": "notify", "needs": ["look"],
         "with": {"to": ["technical_support"], "title": "page first", "message": "the view comes after me"}},
        {"id": "watch", "action": "wait", "needs": ["page"], "with": {"seconds": 3}},
    ])
    state, incident_id = run(path)
    assert state.is_completed()
    with session_scope() as session:
        first_page = min(session.scalars(select(Notification.created_at)
                                         .where(Notification.incident_id == incident_id)))
        anchored = list(session.scalars(select(AuditAnchoring).where(AuditAnchoring.incident_id == incident_id)
                                        .order_by(AuditAnchoring.id)))
    versions = sorted(artifact_versions(incident_id), key=lambda a: a.created)
    # Published after the page was tried, while the run still watched (a view before the final one) …
    assert len(versions) >= 2
    assert versions[0].created.replace(tzinfo=None) >= first_page.replace(tzinfo=None)
    # … and the head was anchored while the run went on (with its first view: at most every
    # ANCHOR_INTERVAL_SECONDS after that), then again at its end with the report.
    assert len(anchored) >= 2 and all(a.ok for a in anchored), [(a.seq, a.ok, a.error) for a in anchored]
    assert anchored[0].seq < anchored[-1].seq
