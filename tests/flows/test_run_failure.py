"""No incident ends silently (issue 9): a run that fails, aborts or crashes, or a dead run found
by reconcile, pages the incident's responsible roles once, with the manual checklist, and the
incident shows as needing attention everywhere it is shown; and `system-outage` treats a
service that refuses connections as the outage it is.

Against a real Prefect server, the simulator (its `unreachable` fault refuses TCP connections),
real HTTP receivers for the pages, and the records database."""
from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from records.incidents import events, get_incident, list_incidents, notifications
from tests.environment import environment
from tests.http_receivers import ScriptedServer
from tests.killed_runs import kill_when_step_begins
from tests.notifications_support import closed_port, contact
from tests.runbook_helpers import write_runbook
from tests.seed_runs import QUICK, outcomes

pytestmark = pytest.mark.usefixtures("prefect_server")

OK = [(200, {"ok": True})]
REPO = Path(__file__).resolve().parents[2]


def page_bodies(receiver: ScriptedServer, incident_id: str) -> list[dict]:
    """The pages this receiver got about one incident (a reconcile pages every dead run it finds)."""
    return [body for body in (json.loads(r["body"]) for r in receiver.requests) if incident_id in body["title"]]


def people(notify_config, lead: ScriptedServer, tech: ScriptedServer, **kwargs) -> None:
    """The scenario lead and technical support (whom every level engages: tests.notifications_support.LEVELS)."""
    notify_config.write([contact("lead", ["scenario_lead"], [f"json://{lead.url[7:]}/inbox"], department="Customer Service"),
                         contact("tech", ["technical_support"], [f"json://{tech.url[7:]}/inbox"])], **kwargs)


def alarm_pages(incident_id: str) -> list:
    return [n for n in notifications(incident_id) if n.step_id.startswith("run_failed__")]


def inbox_at(simulator) -> AbstractContextManager[None]:
    """The demo contacts' channels (json://${FIREBREAK_INBOX}/inbox/<id>) point at this simulator's inbox."""
    return environment(FIREBREAK_INBOX=simulator.inbox_address)


# ------------------------------------------------------------------ (a) the unreachable outage

def test_unreachable_outage_pages_support_and_the_level_and_leaves_the_incident_needing_attention() -> None:
    """The reproduction of issue 9: against a service that refuses connections the old runbook failed
    `assess` three times, skipped everything else and paged nobody."""
    from flows.seed_runbooks import ENTRY_FLOWS
    from notifications.drill_responder import AckServer, DrillResponder
    from simulator import start_simulator

    with start_simulator(fault="unreachable") as sim, inbox_at(sim), AckServer(), DrillResponder(sim.inbox_url):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{sim.url}/health", timeout=5)
        state = ENTRY_FLOWS["system-outage"](parameters={"service_url": sim.url, **QUICK}, drill=True,
                                             source="drill", return_state=True)
        inbox = httpx.get(f"{sim.inbox_url}/inbox").json()
    summary = state.result()
    incident_id = summary.incident_id

    # Pages went out: technical support, and the level II responders (task group and scenario lead).
    delivered = {(n.contact, n.step_id) for n in notifications(incident_id) if n.status == "delivered"}
    assert {("li-wei", "page_technical_support"), ("chen-jing", "page_technical_support")} <= delivered
    assert {("li-wei", "engage_by_level"), ("chen-jing", "engage_by_level"), ("sun-hao", "engage_by_level"),
            ("qian-li", "engage_by_level")} <= delivered
    assert {m["recipient"] for m in inbox} >= {"li-wei", "chen-jing", "sun-hao", "qian-li"}

    result = outcomes(incident_id)
    assert result["assess"] == "failed"
    assert result["record_facts"] == result["page_technical_support"] == result["engage_by_level"] == "succeeded"
    facts = next(e for e in events(incident_id) if e.step_id == "record_facts" and e.status == "info")
    assert "online_chat unreachable: ConnectError" in facts.summary and facts.data["health"]["status"] == "unreachable"
    page = next(n for n in notifications(incident_id) if n.step_id == "page_technical_support" and n.locale == "en")
    assert "is unreachable (ConnectError" in page.body
    # It tried to publish the notice, isolate and fail over; what it could not do went to people.
    assert result["publish_fault_notice"] == result["isolate_failed_node"] == result["fail_over"] == "failed"
    notice = [n for n in notifications(incident_id) if n.step_id == "hand_over_fault_notice"]
    assert notice and all(n.role == "customer_service" and n.event == "customer_notice" for n in notice)
    assert any(n.status == "delivered" and "temporary hotline 400-800-1234" in n.body for n in notice)
    for step in ("isolate_failed_node", "fail_over"):
        assert result[f"{step}__escalation"] == "succeeded"
    # Nothing pretends the service is back.
    assert result["mitigated"] == result["verify_recovery"] == result["resolved"] == result["close"] == "skipped"

    incident = get_incident(incident_id)
    assert incident.status == "acknowledged" and incident.run_state == "completed"
    assert incident.needs_attention and "still acknowledged" in incident.attention_reason
    assert summary.needs_attention and state.is_completed()
    assert state.message.startswith(f"{incident_id} NEEDS ATTENTION")


def test_down_and_unreachable_read_the_health_check_the_same_way_when_it_answers() -> None:
    """The reworked templates still read an answering service's health (the `down` drill is
    asserted whole in tests/runbooks/test_seed_runbooks.py)."""
    from runbooks.templating import render_value
    from tasks.catalog import load_runbook

    runbook = load_runbook("system-outage").runbook
    answered = {"status": "succeeded", "output": {"status": 503, "json": {"status": "down", "active_node": "primary"}},
                "error": None}
    refused = {"status": "failed", "output": None, "error": "ConnectError: [Errno 111] Connection refused"}
    base = {"params": {"affected_service": "online_chat", "affected_customers": 2000}, "level": "II"}
    facts = runbook.step("record_facts").with_
    assert render_value(facts, {**base, "steps": {"assess": answered}})["message"].startswith(
        "online_chat reported down (HTTP 503); active node primary")
    assert render_value(facts, {**base, "steps": {"assess": refused}})["message"].startswith(
        "online_chat unreachable: ConnectError: [Errno 111] Connection refused")


# ------------------------------------------------------------------ (b) an aborting run

def test_an_aborting_run_pages_its_on_run_failure_roles_once_and_a_flow_retry_does_not_page_again(
        tmp_path: Path, notify_config) -> None:
    from flows.engine import run_runbook

    with ScriptedServer(OK) as lead, ScriptedServer(OK) as tech:
        people(notify_config, lead, tech)
        path = write_runbook(tmp_path, "aborting-alarm", [
            {"id": "probe", "title": "Probe the service", "description": "Check that the service answers.",
             "action": "http", "with": {"url": f"http://127.0.0.1:{closed_port()}/health"}},
            {"id": "restart", "title": "Restart the service", "action": "http", "needs": ["probe"],
             "with": {"method": "POST", "url": "http://127.0.0.1:9/restart"}},
            {"id": "tell_customers", "title": "Tell customers", "action": "record", "needs": ["restart"],
             "with": {"message": "customers told"}},
        ], on_run_failure={"notify": ["scenario_lead"], "by_level": False})
        retried = run_runbook.with_options(retries=1, retry_delay_seconds=0)
        state = retried(runbook=str(path), return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    incident = next(i for i in list_incidents(200) if i.flow_run_id == flow_run_id)

    assert state.is_failed()
    # The retry ran (the probe was tried once per attempt) and carried on the same incident.
    assert [e.attempt for e in events(incident.id) if e.step_id == "probe" and e.phase == "intent"] == [1, 1]
    assert [e.status for e in events(incident.id)].count("run-attached") == 1
    # One page, to the scenario lead only (by_level: false), however many attempts ended the same way.
    assert len(page_bodies(lead, incident.id)) == 1 and page_bodies(tech, incident.id) == []
    assert [(n.contact, n.status, n.event) for n in alarm_pages(incident.id)] == [("lead", "delivered", "run_failed")]
    reused = [e for e in events(incident.id) if e.step_id == f"run_failed__{flow_run_id}" and e.status == "reused"]
    assert len(reused) == 1
    message = page_bodies(lead, incident.id)[0]
    assert "RUN FAILED, NEEDS ATTENTION" in message["title"]
    body = message["message"]
    assert "What failed:\n- Probe the service (probe): " in body
    assert "[ ] Probe the service (probe; failed)\n    Check that the service answers. (GET http://127.0.0.1:" in body
    assert "[ ] Restart the service (restart; did not run: run aborted after step 'probe' failed)" in body
    assert "POST http://127.0.0.1:9/restart" in body
    assert "[ ] Tell customers (tell_customers; did not run" in body
    assert "/ack/" in body  # acknowledging it stops escalation, like any page

    final = get_incident(incident.id)
    assert final.run_state == "failed" and final.status == "triggered" and final.needs_attention
    assert f"{incident.id} NEEDS ATTENTION (still triggered): the responsible roles were paged" in state.message


def test_the_default_audience_is_the_level_and_the_scenario_lead(tmp_path: Path, notify_config) -> None:
    from runbooks.schema import Runbook

    with ScriptedServer(OK) as lead, ScriptedServer(OK) as tech:
        people(notify_config, lead, tech)
        path = write_runbook(tmp_path, "default-alarm", [
            {"id": "probe", "action": "http", "with": {"url": f"http://127.0.0.1:{closed_port()}/health"}}])
        from tests.runbook_helpers import run

        state, incident_id = run(path)
    assert state.is_failed()
    # The scenario lead, and the level (technical support).
    assert len(page_bodies(lead, incident_id)) == len(page_bodies(tech, incident_id)) == 1
    assert {n.contact for n in alarm_pages(incident_id)} == {"lead", "tech"}
    declared = Runbook.model_validate({"id": "x", "title": "x", "description": "x", "version": "1",
                                       "level": {"default": "II"}, "roles": ["technical_support"],
                                       "steps": [{"id": "a", "action": "record", "with": {"message": "m"}}]})
    default = declared.run_failure_paging()
    assert (default.notify, default.by_level, default.escalation) == ([], True, None)  # no lead declared: the level


def test_the_engine_follows_the_escalation_policy_of_the_alarm(tmp_path: Path, notify_config) -> None:
    from tests.runbook_helpers import run

    with ScriptedServer(OK) as lead, ScriptedServer(OK) as tech:
        people(notify_config, lead, tech, policies={"quick": {"description": "test", "ack_timeout": 0.3,
                                                              "tiers": [{"roles": ["scenario_lead"], "ack_timeout": 0.3}]}})
        path = write_runbook(tmp_path, "escalating-alarm", [
            {"id": "probe", "action": "http", "with": {"url": f"http://127.0.0.1:{closed_port()}/health"}}],
            on_run_failure={"notify": ["technical_support"], "by_level": False, "escalation": "quick"})
        state, incident_id = run(path)
    assert state.is_failed()
    # Tier 1 technical support, then (nobody acknowledged) tier 2 the scenario lead, with the checklist.
    assert len(page_bodies(tech, incident_id)) == 1 and len(page_bodies(lead, incident_id)) == 1
    escalated = page_bodies(lead, incident_id)[0]
    assert "ESCALATED" in escalated["title"] and "do by hand:\n[ ] probe (probe)" in escalated["message"]
    assert any(e.status == "alarm-unanswered" for e in events(incident_id))
    assert "nobody acknowledged" in state.message


def test_paging_that_fails_is_recorded_and_never_raises(tmp_path: Path, notify_config) -> None:
    from flows import run_failure
    from tests.runbook_helpers import run

    notify_config.write([contact("lead", ["scenario_lead"], [f"json://127.0.0.1:{closed_port()}/inbox"]),
                         contact("tech", ["technical_support"], [f"json://127.0.0.1:{closed_port()}/inbox"])])
    path = write_runbook(tmp_path, "unpageable", [
        {"id": "probe", "action": "http", "with": {"url": f"http://127.0.0.1:{closed_port()}/health"}}])
    state, incident_id = run(path)
    assert state.is_failed()  # the run's end is still recorded
    assert get_incident(incident_id).run_state == "failed"
    failed = [e for e in events(incident_id) if e.status == "alarm-failed"]
    assert len(failed) == 1 and "NobodyReached" in failed[0].error
    assert "paging the responsible roles FAILED" in state.message
    # Called again (a second reconcile, a hook), it still answers instead of raising.
    alarm = run_failure.raise_alarm("INC-1999-9999", outcome="crashed", reason="gone", flow_run_id=None)
    assert alarm.error and "IncidentNotFound" in alarm.error


@pytest.mark.parametrize("locale", ["en", "zh"])
def test_the_run_failed_message_in_both_languages(locale: str) -> None:
    from notifications.messages import render

    details = {"outcome": "crashed", "status": "mitigated", "runbook_title_zh": "系统故障",
               "failed": [{"id": "fail_over", "title": "Fail over", "error": "HTTP 409 {{ 7 * 7 }}"}],
               "checklist": [{"id": "fail_over", "title": "Fail over", "description": "POST http://ops/failover",
                              "state": "failed", "why": ""},
                             {"id": "close", "title": "Close", "description": "", "state": "skipped",
                              "why": "condition `steps.resolved.status == 'succeeded'` is false"}]}
    message = render("run_failed", locale, {
        "incident": {"id": "INC-2026-0042", "level": "I", "title": "t", "summary": "", "drill": False},
        "runbook": {"id": "system-outage", "title": "System outage"}, "title": "System outage",
        "message": "no heartbeat since 08:00:00Z", "step": "Run-failure alarm", "tier": 1,
        "ack_link": "http://127.0.0.1:8700/ack/abc.def", "run_link": None, "escalated_after": 0,
        "recipient": {"id": "x", "name": "X"}, "details": details})
    assert "INC-2026-0042" in message.title and "http://127.0.0.1:8700/ack/abc.def" in message.body
    assert "no heartbeat since 08:00:00Z" in message.body and "POST http://ops/failover" in message.body
    assert "{{ 7 * 7 }}" in message.body and "49" not in message.body  # recorded text is data
    if locale == "en":
        assert "RUN CRASHED, NEEDS ATTENTION: System outage" in message.title
        assert "the incident is still mitigated" in message.body and "[ ] Close (close; skipped: condition" in message.body
    else:
        assert "【预案运行中断，需人工处理】系统故障" in message.title
        assert "「已缓解」" in message.body and "[ ] Fail over（fail_over；失败）" in message.body


# ------------------------------------------------------------------ (c) a dead run found by reconcile



def test_a_crashed_run_found_by_reconcile_is_paged_once_however_often_reconcile_runs(
        tmp_path: Path, notify_config) -> None:
    from flows import run_failure
    from flows.reconcile import reconcile_runs

    with ScriptedServer(OK) as lead, ScriptedServer(OK) as tech:
        people(notify_config, lead, tech)
        path = write_runbook(tmp_path, "killed-alarm", [
            {"id": "note", "action": "record", "with": {"message": "before the long wait"}},
            {"id": "long_wait", "title": "Wait for the vendor", "action": "wait", "needs": ["note"],
             "with": {"seconds": 600}, "timeout": 900},
            {"id": "after", "title": "Confirm recovery", "action": "record", "needs": ["long_wait"],
             "with": {"message": "recovered"}},
        ], on_run_failure={"notify": ["scenario_lead"]})
        incident = kill_when_step_begins(path, "long_wait")
        # Killed outright: no hook ran, nobody told yet.
        assert page_bodies(lead, incident.id) == [] and page_bodies(tech, incident.id) == []

        first = reconcile_runs(stale_after=timedelta(seconds=0))
        second = reconcile_runs(stale_after=timedelta(seconds=0))
        # Two reconcilers racing, or an operator running the alarm by hand: the same run end, the same page.
        again = run_failure.raise_alarm(incident.id, outcome="crashed", reason="again",
                                        flow_run_id=incident.flow_run_id)
    assert incident.id in {r.incident_id for r in first} and incident.id not in {r.incident_id for r in second}
    # The lead, and the level (technical support): once each.
    assert len(page_bodies(lead, incident.id)) == 1 and len(page_bodies(tech, incident.id)) == 1
    assert again.reused and again.delivered == 2 and again.error is None
    assert sorted(n.contact for n in alarm_pages(incident.id)) == ["lead", "tech"]
    body = page_bodies(lead, incident.id)[0]["message"]
    assert "RUN CRASHED" in page_bodies(lead, incident.id)[0]["title"] and "no heartbeat since" in body
    assert "[ ] Wait for the vendor (long_wait; interrupted)\n    wait 600s" in body
    assert "[ ] Confirm recovery (after; did not run)" in body
    assert "(note;" not in body  # it succeeded: nothing to do by hand
    after = get_incident(incident.id)
    assert after.run_state == "crashed" and after.needs_attention
    statuses = [e.status for e in events(incident.id)]
    assert statuses.index("alarm") < statuses.index("run-crashed")  # paged before the end was recorded


def test_each_resume_of_a_run_gives_its_next_end_a_page_of_its_own(tmp_path: Path, notify_config) -> None:
    """The alarm is keyed by the flow run, so reconcile racing itself pages once; a run an operator
    resumed (flows.operator_actions.resume) that dies again must page again, not be taken as told."""
    from flows import run_failure
    from records import incidents
    from records.models import EventPhase, RunState

    with ScriptedServer(OK) as lead, ScriptedServer(OK) as tech:
        people(notify_config, lead, tech)
        incident = incidents.open_incident(runbook_id="system-outage", runbook_version="1.0", title="resumed twice",
                                           level="II", source="alert", parameters={}, flow_run_id="run-resumed")
        first = run_failure.raise_alarm(incident.id, outcome="crashed", reason="killed", flow_run_id="run-resumed")
        again = run_failure.raise_alarm(incident.id, outcome="crashed", reason="killed", flow_run_id="run-resumed")
        incidents.append_event(incident.id, phase=EventPhase.note, status="resume-requested", actor="cli:li-wei",
                               summary="Run resumed", flow_run_id="run-resumed")
        after_resume = run_failure.raise_alarm(incident.id, outcome="crashed", reason="killed again",
                                               flow_run_id="run-resumed")
        incidents.set_run_state(incident.id, RunState.crashed)  # no run is left for reconcile to judge
    assert not first.reused and again.reused and not after_resume.reused, (first, again, after_resume)
    assert first.step_id == "run_failed__run-resumed" and after_resume.step_id == "run_failed__run-resumed__resume-1"
    received = page_bodies(lead, incident.id) + page_bodies(tech, incident.id)
    assert first.delivered >= 1 and after_resume.delivered == first.delivered
    assert len(received) == first.delivered + after_resume.delivered
    assert sum("killed again" in body["message"] for body in received) == after_resume.delivered


def test_an_exception_outside_the_steps_pages_through_the_flow_run_hook(tmp_path: Path, notify_config) -> None:
    from prefect import flow
    from prefect.runtime import flow_run as current_flow_run

    from flows.hooks import RUN_HOOKS
    from records import incidents

    with ScriptedServer(OK) as lead, ScriptedServer(OK) as tech:
        people(notify_config, lead, tech)
        path = write_runbook(tmp_path, "broken-engine", [
            {"id": "first", "title": "First step", "action": "record", "with": {"message": "never"}}],
            on_run_failure={"notify": ["scenario_lead"], "by_level": False})

        @flow(**RUN_HOOKS)
        def broken_engine(runbook: str) -> None:
            incidents.open_incident(runbook_id="broken-engine", runbook_version="1", title="Engine broke",
                                    level="II", source="cli", parameters={}, flow_run_id=str(current_flow_run.id))
            raise RuntimeError("the engine itself broke before any step")

        state = broken_engine(runbook=str(path), return_state=True)
    assert state.is_failed()
    incident = next(i for i in list_incidents(200) if i.flow_run_id == str(state.state_details.flow_run_id))
    assert len(page_bodies(lead, incident.id)) == 1 and page_bodies(tech, incident.id) == []
    body = page_bodies(lead, incident.id)[0]["message"]
    assert "the engine itself broke before any step" in body and "[ ] First step (first; did not run)" in body
    assert get_incident(incident.id).run_state == "failed" and get_incident(incident.id).needs_attention


# (d) the CLI drill against an unreachable service: tests/chaos/test_unreachable_outage.py (`make chaos`)


# ------------------------------------------------------------------ (e) where "needs attention" shows

def _incident(status: str, run_state: str, error: str | None = None) -> str:
    from records import incidents
    from records.models import RunState

    incident = incidents.open_incident(runbook_id="system-outage", runbook_version="1.0", title=f"{status}/{run_state}",
                                       level="II", source="alert", parameters={}, flow_run_id="run-attention")
    if status != "triggered":
        incidents.transition(incident.id, status, actor="test")
    if run_state != "running":
        incidents.set_run_state(incident.id, RunState(run_state), error=error)
    return incident.id


def test_needs_attention_is_derived_from_status_and_run_state() -> None:
    cases = {("triggered", "running"): False, ("acknowledged", "completed"): True, ("closed", "completed"): False,
             ("resolved", "failed"): False, ("triggered", "failed"): True, ("mitigated", "crashed"): True,
             ("triggered", "cancelled"): True}
    from records import incidents
    from records.models import RunState

    for (status, run_state), expected in cases.items():
        incident = get_incident(_incident(status, run_state))
        assert incident.needs_attention is expected, (status, run_state)
        assert (incident.attention_reason is not None) is expected
        if run_state == "running":  # leave no run for a later reconcile to find dead
            incidents.set_run_state(incident.id, RunState.cancelled)


def test_the_incidents_api_and_the_report_show_needs_attention(tmp_path: Path) -> None:
    from reports import render
    from tests.intake_harness import READ_AUTH, RunningIntake, write_config

    open_one = _incident("triggered", "failed", error="step 'probe' failed and its policy is abort")
    closed_one = _incident("closed", "completed")
    sources, routes = write_config(tmp_path, {"runbook": None})
    with RunningIntake(sources, routes, executor="none") as intake:
        shown = httpx.get(f"{intake.url}/v1/incidents/{open_one}", headers=READ_AUTH).json()
        listed = {i["id"]: i for i in httpx.get(f"{intake.url}/v1/incidents", params={"limit": 100},
                                                headers=READ_AUTH).json()["incidents"]}
        closed = httpx.get(f"{intake.url}/v1/incidents/{closed_one}", headers=READ_AUTH).json()
    assert shown["needs_attention"] is True
    assert shown["attention_reason"] == ("the runbook run failed but the incident is still triggered "
                                         "(step 'probe' failed and its policy is abort)")
    assert listed[open_one]["needs_attention"] is True and listed[closed_one]["needs_attention"] is False
    assert closed["needs_attention"] is False and closed["attention_reason"] is None

    paths = render.write_reports(open_one)
    md = paths[("en", "md")].read_text()
    assert md.split("\n\n")[1].startswith("> **NEEDS ATTENTION — the incident is still triggered and no runbook "
                                          "run is driving it (the run failed)")
    assert 'class="banner bad attention">NEEDS ATTENTION' in paths[("en", "html")].read_text()
    assert "需要人工处理 —— 事件仍处于「已触发」状态" in paths[("zh", "md")].read_text()
    assert "需要人工处理" in paths[("zh", "html")].read_text()
    assert "NEEDS ATTENTION" not in render.write_reports(closed_one)[("en", "md")].read_text()
