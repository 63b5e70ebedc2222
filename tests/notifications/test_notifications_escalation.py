"""Escalation until acknowledged, against a real Prefect server and real HTTP receivers.

Short timeouts stand in for minutes. The Grafana OnCall #4760 regression: an
acknowledgement during tier 1 means tier 2 is never paged — by any path (signed
link over HTTP, `firebreak ack`, the Prefect UI flow, a monitor)."""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import httpx
import pytest

from firebreak.cli import main as cli
from records.acknowledgements import list_acknowledgements, paged_tiers
from records.incidents import events, get_incident, notifications
from tests.http_receivers import ScriptedServer
from tests.notifications_support import contact
from tests.polling import wait_for
from tests.runbook_helpers import run, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")

OK = [(200, {"ok": True})]


def escalating_step(**extra) -> dict:
    return {"id": "page", "title": "Page technical support", "action": "notify", "timeout": 120,
            "with": {"to": ["technical_support"], "event": "triggered", "escalation": "quick",
                     "title": "Chat down", "message": "Online chat fails."}, **extra}


def write_people(notify_config, tech: ScriptedServer, lead: ScriptedServer, chief: ScriptedServer, *,
                 ack_timeout: float | tuple[float, float, float], repeat: int = 0) -> None:
    """Tier 1 technical support (li-wei), tier 2 scenario lead (qian-li), tier 3 commander (zhao-gang).
    A test that acknowledges in some tier gives that tier a generous timeout: an acknowledgement
    ends the wait at once, so the test stays fast and a slow machine cannot page the next tier."""
    first, second, third = ack_timeout if isinstance(ack_timeout, tuple) else (ack_timeout,) * 3
    notify_config.write(
        [contact("li-wei", ["technical_support"], [f"json://{tech.url[7:]}/inbox"]),
         contact("qian-li", ["scenario_lead"], [f"json://{lead.url[7:]}/inbox"], department="Customer Service", locale="zh"),
         contact("zhao-gang", ["commander_in_chief"], [f"json://{chief.url[7:]}/inbox"], department="Administration")],
        policies={"quick": {"description": "test", "ack_timeout": first, "repeat": repeat,
                            "tiers": [{"roles": ["scenario_lead"], "ack_timeout": second},
                                      {"roles": ["commander_in_chief"], "ack_timeout": third}]}})


def test_without_acknowledgement_every_tier_is_paged_then_the_step_fails(tmp_path: Path, notify_config) -> None:
    with ScriptedServer(OK) as tech, ScriptedServer(OK) as lead, ScriptedServer(OK) as chief:
        write_people(notify_config, tech, lead, chief, ack_timeout=0.3)
        state, incident_id = run(write_runbook(tmp_path, "unanswered", [escalating_step(on_failure="continue")]))
    assert state.is_completed()
    assert (len(tech.requests), len(lead.requests), len(chief.requests)) == (1, 1, 1)
    escalated = json.loads(lead.requests[0]["body"])
    assert "【升级】" in escalated["title"] and "第 2 级" in escalated["message"]
    assert [(t.tier, t.delivered) for t in paged_tiers(incident_id, "page")] == [(1, 1), (2, 1), (3, 1)]
    outcome = [e for e in events(incident_id) if e.step_id == "page" and e.phase == "outcome"]
    assert outcome[-1].status == "failed" and "nobody acknowledged after 3 tier(s)" in outcome[-1].error
    assert sum(e.status == "escalating" for e in events(incident_id)) == 2
    assert {(r.contact, r.tier, r.event) for r in notifications(incident_id)} == {
        ("li-wei", 1, "triggered"), ("qian-li", 2, "escalated"), ("zhao-gang", 3, "escalated")}


def test_repeat_pages_the_sequence_again(tmp_path: Path, notify_config) -> None:
    with ScriptedServer(OK) as tech, ScriptedServer(OK) as lead, ScriptedServer(OK) as chief:
        write_people(notify_config, tech, lead, chief, ack_timeout=0.2, repeat=1)
        state, incident_id = run(write_runbook(tmp_path, "repeated", [escalating_step(on_failure="continue")]))
    assert (len(tech.requests), len(lead.requests), len(chief.requests)) == (2, 2, 2)
    assert [(t.cycle, t.tier) for t in paged_tiers(incident_id, "page")] == [
        (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]


def _ack_by_link(link: str, incident_id: str) -> None:
    from notifications.drill_responder import form_fields

    page = httpx.get(link)
    assert page.status_code == 200
    answer = httpx.post(link, data={**form_fields(page.text), "comment": "on it"})  # as the browser sends the form
    assert answer.status_code == 200 and "Escalation has stopped" in answer.text


def _ack_by_cli(link: str, incident_id: str) -> None:
    assert cli(["ack", incident_id, "--by", "Li Wei", "--comment", "on it"]) == 0


def _ack_by_ui(link: str, incident_id: str) -> None:
    from flows.acknowledge import AcknowledgementForm, acknowledge

    result = acknowledge(AcknowledgementForm(incident_id=incident_id, by="Li Wei", comment="on it"))
    assert result.first and result.via == "ui"


def _ack_by_monitor(link: str, incident_id: str) -> None:
    from notifications.acknowledgement.service import acknowledge_incident

    acknowledge_incident(incident_id, by="zabbix", via="monitor", comment="problem acknowledged in the monitor")


@pytest.mark.parametrize("path, acknowledge", [("link", _ack_by_link), ("cli", _ack_by_cli), ("ui", _ack_by_ui),
                                               ("monitor", _ack_by_monitor)])
def test_acknowledgement_during_tier_one_means_tier_two_is_never_paged(tmp_path: Path, notify_config, path,
                                                                       acknowledge) -> None:
    """Grafana OnCall #4760: paging went on after acknowledgement. Here it stops."""
    from notifications.drill_responder import ACK_LINK, AckServer

    errors: list[BaseException] = []

    def on_call_person() -> None:
        try:
            wait_for(lambda: tech.requests, timeout=30)
            page = json.loads(tech.requests[0]["body"])
            incident_id = re.search(r"INC-\d{4}-\d+", page["title"]).group(0)
            acknowledge(ACK_LINK.search(page["message"]).group(0), incident_id)
        except BaseException as exc:  # reported by the test thread below
            errors.append(exc)

    with AckServer(), ScriptedServer(OK) as tech, ScriptedServer(OK) as lead, ScriptedServer(OK) as chief:
        write_people(notify_config, tech, lead, chief, ack_timeout=(30.0, 30.0, 30.0))
        person = threading.Thread(target=on_call_person)
        person.start()
        state, incident_id = run(write_runbook(tmp_path, f"acked-{path}", [escalating_step()]))
        person.join()
    assert not errors, errors
    assert state.is_completed()
    assert len(tech.requests) == 1 and not lead.requests and not chief.requests
    assert [t.tier for t in paged_tiers(incident_id, "page")] == [1]
    acks = list_acknowledgements(incident_id)
    assert [(a.via, a.effective) for a in acks] == [(path, True)]
    output = next(e for e in events(incident_id) if e.step_id == "page" and e.status == "succeeded").data["output"]
    assert output["acknowledged_via"] == path and output["tiers_paged"] == 1
    assert get_incident(incident_id).status == "acknowledged"
    row = notifications(incident_id)[0]
    assert row.acknowledged_at is not None and row.acknowledged_by == acks[0].by


def test_acknowledgement_after_escalation_stops_the_next_tier(tmp_path: Path, notify_config) -> None:
    from notifications.acknowledgement.service import acknowledge_incident

    def scenario_lead_answers() -> None:
        wait_for(lambda: lead.requests, timeout=30)
        incident_id = re.search(r"INC-\d{4}-\d+", json.loads(lead.requests[0]["body"])["title"]).group(0)
        acknowledge_incident(incident_id, by="Qian Li", via="cli")

    with ScriptedServer(OK) as tech, ScriptedServer(OK) as lead, ScriptedServer(OK) as chief:
        write_people(notify_config, tech, lead, chief, ack_timeout=(0.3, 30.0, 30.0))
        responder = threading.Thread(target=scenario_lead_answers)
        responder.start()
        state, incident_id = run(write_runbook(tmp_path, "late-ack", [escalating_step()]))
        responder.join()
    assert state.is_completed()
    assert (len(tech.requests), len(lead.requests), len(chief.requests)) == (1, 1, 0)


def test_an_interrupted_escalation_resumes_where_it_stopped(tmp_path: Path, notify_config) -> None:
    """Each attempt is cut off by the step timeout; every retry resumes from the recorded
    tiers: a paged tier is never paged again, and the clock runs from when it was first paged."""
    from notifications.acknowledgement.service import acknowledge_incident

    def chief_answers() -> None:
        wait_for(lambda: chief.requests, timeout=30)
        incident_id = re.search(r"INC-\d{4}-\d+", json.loads(chief.requests[0]["body"])["title"]).group(0)
        acknowledge_incident(incident_id, by="Zhao Gang", via="cli")

    with ScriptedServer(OK) as tech, ScriptedServer(OK) as lead, ScriptedServer(OK) as chief:
        write_people(notify_config, tech, lead, chief, ack_timeout=(1.0, 1.0, 8.0))
        responder = threading.Thread(target=chief_answers)
        responder.start()
        step = escalating_step(timeout=0.6, retries=20, retry_delay=0)
        state, incident_id = run(write_runbook(tmp_path, "resumable", [step]))
        responder.join()
    assert state.is_completed()
    assert (len(tech.requests), len(lead.requests), len(chief.requests)) == (1, 1, 1)
    attempts = [e for e in events(incident_id) if e.step_id == "page" and e.phase == "outcome"]
    assert len(attempts) >= 3 and all(e.status == "failed" for e in attempts[:-1])  # cut off by the timeout
    assert attempts[-1].status == "succeeded"
    tiers = paged_tiers(incident_id, "page")
    assert [t.tier for t in tiers] == [1, 2, 3]
    # Tier 2 went out one timeout after tier 1, although the attempt that paged tier 1 had ended.
    assert 0.9 <= (tiers[1].paged_at - tiers[0].paged_at).total_seconds()


# ------------------------------------------------------------------ acknowledgement is per page (issue 9 #9, #10)

def test_an_older_acknowledgement_does_not_stop_a_new_escalating_page(tmp_path: Path, notify_config) -> None:
    """Issue 9 #9: escalation stopped on the incident's first acknowledgement ever, so a page sent hours after
    an acknowledgement never escalated. An acknowledgement counts only for pages sent before it."""
    from notifications.acknowledgement.service import acknowledge_incident
    from records import incidents

    incident_id = incidents.open_incident(runbook_id="later-page", runbook_version="1", title="Chat down", level="II",
                                          source="cli", parameters={}).id
    acknowledge_incident(incident_id, by="Li Wei", via="cli", comment="looking")  # t0, before any page
    with ScriptedServer(OK) as tech, ScriptedServer(OK) as lead, ScriptedServer(OK) as chief:
        write_people(notify_config, tech, lead, chief, ack_timeout=0.3)
        state, _ = run(write_runbook(tmp_path, "later-page", [escalating_step(on_failure="continue")]),
                       incident_id=incident_id)
    assert state.is_completed()
    assert (len(tech.requests), len(lead.requests), len(chief.requests)) == (1, 1, 1)  # it still escalated
    assert [t.tier for t in paged_tiers(incident_id, "page")] == [1, 2, 3]
    assert not any(e.status == "escalation-stopped" for e in events(incident_id))


def test_a_monitor_resolve_through_the_intake_stops_the_escalation(tmp_path: Path, notify_config, monkeypatch) -> None:
    """Issue 9 #10: with Prometheus → Alertmanager → intake, the duty manager was paged 4 min 52 s after the
    resolve, because escalation only looked for acknowledgements. A resolve received after the page was sent
    stops it before the next tier, and the timeline says so."""
    from tests.intake_harness import TOKENS, RunningIntake, group, write_config

    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    fingerprint = f"escalation-resolve-{tmp_path.name}"
    with ScriptedServer(OK) as tech, ScriptedServer(OK) as lead, ScriptedServer(OK) as chief:
        write_people(notify_config, tech, lead, chief, ack_timeout=(30.0, 30.0, 30.0))
        runbook = write_runbook(tmp_path, "resolve-stops-paging", [escalating_step(on_failure="continue")])
        sources, routes = write_config(tmp_path, {"runbook": str(runbook)})
        auth = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_AM_TOKEN']}"}
        with RunningIntake(sources, routes, executor="warm") as intake:
            firing = group(fingerprint)
            incident_id = httpx.post(f"{intake.url}/v1/alerts/alertmanager", headers=auth,
                                     json=firing).json()["alerts"][0]["incident_id"]
            wait_for(lambda: tech.requests, timeout=60, what="tier 1 to be paged")
            resolved = json.loads(json.dumps(firing))
            resolved["status"] = "resolved"
            for alert in resolved["alerts"]:
                alert["status"], alert["endsAt"] = "resolved", "2026-11-23T12:00:00Z"
            assert httpx.post(f"{intake.url}/v1/alerts/alertmanager", headers=auth, json=resolved).status_code == 202
            intake.wait_runs(timeout=60)  # well before tier 1's 30 s are up
    assert (len(tech.requests), len(lead.requests), len(chief.requests)) == (1, 0, 0)
    assert [t.tier for t in paged_tiers(incident_id, "page")] == [1]
    stopped = next(e for e in events(incident_id) if e.status == "escalation-stopped")
    assert stopped.step_id == "page" and stopped.summary.startswith("stopped: monitor resolved")
    assert "tier 2 (scenario_lead) not paged" in stopped.summary
    output = next(e for e in events(incident_id) if e.step_id == "page" and e.status == "succeeded").data["output"]
    assert output["stopped"] == "monitor-resolved" and output["tiers_paged"] == 1
    assert list_acknowledgements(incident_id) == []  # a resolve is not somebody's acknowledgement


def test_an_acknowledgement_and_its_status_change_are_one_transaction(notify_config) -> None:
    """Issue 9 #9: the acknowledgement row and the incident's move to `acknowledged` were two transactions,
    so a failure in between left an acknowledgement whose status change never happened. A real trigger
    refuses this incident's status change: nothing of the acknowledgement may remain."""
    from sqlalchemy import text

    from notifications.acknowledgement.service import acknowledge_incident
    from records import incidents
    from records.db import session_scope

    incident_id = incidents.open_incident(runbook_id="atomic", runbook_version="1", title="Chat down", level="II",
                                          source="cli", parameters={}).id
    before = len(events(incident_id))
    with session_scope() as session:
        assert session.get_bind().dialect.name == "sqlite"
        session.execute(text(
            f"CREATE TRIGGER refuse_ack_{incident_id.replace('-', '_')} BEFORE UPDATE OF status ON incidents "
            f"WHEN NEW.id = '{incident_id}' AND NEW.status = 'acknowledged' "
            "BEGIN SELECT RAISE(ABORT, 'status change refused by the test'); END"))
    try:
        with pytest.raises(Exception, match="status change refused by the test"):
            acknowledge_incident(incident_id, by="Li Wei", via="cli", comment="on it")
    finally:
        with session_scope() as session:
            session.execute(text(f"DROP TRIGGER refuse_ack_{incident_id.replace('-', '_')}"))
    assert list_acknowledgements(incident_id) == []
    assert len(events(incident_id)) == before and get_incident(incident_id).status == "triggered"
    # Without the fault, the same acknowledgement is stored with its status change.
    assert acknowledge_incident(incident_id, by="Li Wei", via="cli").incident_status == "acknowledged"
    assert [a.by for a in list_acknowledgements(incident_id)] == ["Li Wei"]
