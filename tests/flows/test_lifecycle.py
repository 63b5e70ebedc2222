"""Operators run the incident by hand (flows.operator_actions) through its three ways in: the CLI in
a real process, the lifecycle deployments' flows and forms, and the intake's authenticated
`POST /v1/incidents/{id}/{action}`. Each action is on the timeline with who did it, a name that is
no contact is refused, a level change pages the roles the new level newly engages, a retried
request acts once, and the live view follows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from records import operator_actions
from records.incidents import events, get_incident, notifications
from tests.runbook_helpers import run, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = Path(__file__).resolve().parents[2]


def open_incident(tmp_path: Path, name: str = "ops-manual") -> str:
    """A run that records one fact and completes, leaving its incident triggered with no run driving it."""
    path = write_runbook(tmp_path, name, [{"id": "look", "action": "record", "with": {"message": "looked"}}])
    state, incident_id = run(path)
    assert state.is_completed() and get_incident(incident_id).needs_attention
    return incident_id


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "firebreak", "incident", *args], cwd=REPO, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def latest_view(incident_id: str) -> str:
    from tests.report_support import latest

    return latest(incident_id)


def test_the_cli_runs_an_incident_from_triggered_to_closed(tmp_path: Path, simulator: Any) -> None:
    incident_id = open_incident(tmp_path)
    cli("note", incident_id, "--by", "li-wei", "--text", "vendor on site")
    out = cli("level", incident_id, "I", "--by", "Qian Li", "--reason", "10,000 customers affected").stdout
    assert "Level II → I" in out and "commander_in_chief" in out
    # Level I is commanded by the commander-in-chief on duty (Zhao Gang), who hands over to Sun Hao.
    assert "already commands" in cli("handover", incident_id, "--to", "zhao-gang", "--by", "qian-li",
                                     check=False).stderr
    handed = cli("handover", incident_id, "--to", "sun-hao", "--by", "zhao-gang", "--note", "you run the floor")
    assert "孙浩 Sun Hao paged" in handed.stdout, handed.stdout
    cli("acknowledge", incident_id, "--by", "sun-hao")
    cli("resolve", incident_id, "--by", "sun-hao", "--reason", "standby serving")
    cli("close", incident_id, "--by", "sun-hao", "--reason", "responders stood down")

    incident = get_incident(incident_id)
    assert (incident.status, incident.level, incident.commander) == ("closed", "I", "sun-hao")
    timeline = {e.status: e for e in events(incident_id)}
    assert timeline["operator-note"].actor == "cli:li-wei" and "vendor on site" in timeline["operator-note"].summary
    assert timeline["level-changed"].actor == "cli:qian-li"
    assert timeline["command-handed-over"].data["to"] == "sun-hao"
    assert "from 赵刚 Zhao Gang to 孙浩 Sun Hao by 赵刚 Zhao Gang" in timeline["command-handed-over"].summary
    assert timeline["resolved"].actor == "cli:sun-hao" and "standby serving" in timeline["resolved"].summary
    assert timeline["closed"].data["reason"] == "responders stood down"
    # The level change paged who level I engages and level II did not (level_routing.yaml, default groups).
    pages = [n for n in notifications(incident_id) if n.step_id.startswith("level_change__")]
    assert {n.role for n in pages} >= {"commander_in_chief"} and all(n.status == "delivered" for n in pages)
    assert "scenario_lead" not in {n.role for n in pages}  # already engaged at II
    # The handover paged the new commander, by name, whatever their roles.
    told = [n for n in notifications(incident_id) if n.step_id.startswith("handover__")]
    assert told and {n.contact for n in told} == {"sun-hao"} and all(n.status == "delivered" for n in told)
    assert [a.action for a in operator_actions.of_incident(incident_id)] == [
        "note", "level", "handover", "acknowledge", "resolve", "close"]
    view = latest_view(incident_id)
    assert "**closed**" in view and "Sun Hao (sun-hao; command handed over)" in view


def test_a_triggered_incident_closes_without_claiming_milestones(tmp_path: Path) -> None:
    incident_id = open_incident(tmp_path, "ops-false-alarm")
    cli("close", incident_id, "--by", "sun-hao", "--reason", "false alarm")
    incident = get_incident(incident_id)
    assert incident.status == "closed" and incident.closed_at is not None
    assert incident.acknowledged_at is None and incident.resolved_at is None  # nobody did those
    assert not incident.needs_attention


def test_a_name_that_is_no_contact_is_refused(tmp_path: Path) -> None:
    incident_id = open_incident(tmp_path, "ops-stranger")
    before = len(events(incident_id))
    refused = cli("resolve", incident_id, "--by", "Mallory", "--reason", "trust me", check=False)
    assert refused.returncode == 2 and "'Mallory' is not a contact" in refused.stderr
    assert len(events(incident_id)) == before and get_incident(incident_id).status == "triggered"
    closed_twice = cli("close", incident_id, "--by", "li-wei", "--reason", "x")
    assert closed_twice.returncode == 0
    again = cli("close", incident_id, "--by", "li-wei", "--reason", "x", check=False)
    assert again.returncode == 1 and "already closed" in again.stderr


def test_the_lifecycle_flows_act_once_per_flow_run(tmp_path: Path) -> None:
    from flows.lifecycle import close, note

    incident_id = open_incident(tmp_path, "ops-flows")
    state = note(incident_id=incident_id, by="林娜 Lin Na (lin-na)", note="customers told by phone", return_state=True)
    assert state.is_completed() and state.result().by == "lin-na"
    result = close(incident_id=incident_id, by="钱丽 Qian Li (qian-li)", reason="duplicate of INC-2026-0001")
    assert result.status == "closed" and result.via == "ui"
    assert next(e for e in events(incident_id) if e.status == "closed").actor == "ui:qian-li"
    # A repeated request (same key, as a retried flow run has) gets the first answer and does nothing again.
    from flows import operator_actions as service

    first = service.note(incident_id, by="lin-na", via="api", text="once", request_key="api:test:k1")
    second = service.note(incident_id, by="lin-na", via="api", text="once", request_key="api:test:k1")
    assert not first.repeated and second.repeated and second.details == first.details
    assert sum(e.summary.endswith(": once") for e in events(incident_id)) == 1


def test_the_forms_offer_contacts_and_have_no_null_toggles() -> None:
    import yaml
    from prefect.deployments.runner import RunnerDeployment

    declared = [d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
                if d["name"].startswith("incident-")]
    from flows.lifecycle import LIFECYCLE_FLOWS

    assert len(declared) == len(LIFECYCLE_FLOWS) == 9  # one deployment per action
    for entry in declared:
        deployment = RunnerDeployment.from_entrypoint(entrypoint=str(REPO / entry["entrypoint"]), name=entry["name"])
        schema = deployment._parameter_openapi_schema.model_dump_for_openapi()
        text = json.dumps(schema)
        assert '"null"' not in text, f"{entry['name']}: a None toggle in the form"
        contact = schema["definitions"]["Contact"]["enum"]
        assert "李伟 Li Wei (li-wei)" in contact and schema["properties"]["by"]["$ref"].endswith("/Contact")
        assert "incident_id" in schema["required"] and "by" in schema["required"]
        assert all(p.get("description") for p in schema["properties"].values()), entry["name"]


def operator_post(url: str, body: dict[str, Any], operator: str = "li-wei", **headers: str) -> httpx.Response:
    """POST `body` with an operator's own token (tests.intake_harness: li-wei, chen-jing)."""
    from tests.intake_harness import TOKENS

    token = TOKENS[f"FIREBREAK_TEST_OPERATOR_{operator.upper().replace('-', '_')}"]
    return httpx.post(url, json=body, timeout=60, headers={"Authorization": f"Bearer {token}", **headers})


def test_the_intake_acts_for_an_operator_with_their_own_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from intake.sources import sign
    from tests.intake_harness import READ_AUTH, TOKENS, RunningIntake, write_config

    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    incident_id = open_incident(tmp_path, "ops-api")
    sources, routes = write_config(tmp_path, {"runbook": None})
    with RunningIntake(sources, routes, executor="none") as intake:
        url = f"{intake.url}/v1/incidents/{incident_id}"
        # Nothing, a read token, a monitor's bearer token or a monitor's valid HMAC signature: none is a person.
        raw = json.dumps({"by": "li-wei", "text": "x"}).encode()
        stamp, signature = sign(TOKENS["FIREBREAK_TEST_HMAC"], raw)
        for headers in ({}, READ_AUTH, {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_GRAFANA_TOKEN']}",
                                        "X-Firebreak-Source": "grafana"},
                        {"X-Firebreak-Source": "generic", "X-Firebreak-Timestamp": stamp,
                         "X-Firebreak-Signature": signature}):
            refused = httpx.post(f"{url}/note", content=raw, timeout=60,
                                 headers={"Content-Type": "application/json", **headers})
            assert refused.status_code == 401, (headers.keys(), refused.text)
            assert "operator" in refused.json()["error"]
        # The token decides who acts: `by` may be left out, or name the token's own contact.
        answer = operator_post(f"{url}/note", {"text": "rerouted the hotline"}, **{"Idempotency-Key": "n-1"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["by"] == "li-wei" and answer.json()["via"] == "api"
        resent = operator_post(f"{url}/note", {"text": "rerouted the hotline"}, **{"Idempotency-Key": "n-1"})
        assert resent.status_code == 200 and resent.json()["repeated"] is True
        assert operator_post(f"{url}/note", {"by": "Li Wei", "text": "again, by name"}).status_code == 200
        # One person's token cannot speak for another: the commander's name in the body is refused.
        impersonating = operator_post(f"{url}/resolve", {"by": "zhao-gang", "reason": "x"})
        assert impersonating.status_code == 403 and "acts for 'li-wei'" in impersonating.json()["error"]
        acknowledged = operator_post(f"{url}/acknowledge", {}, operator="chen-jing")
        assert acknowledged.status_code == 200 and acknowledged.json()["status"] == "acknowledged"
        missing = operator_post(f"{url}/close", {})
        assert missing.status_code == 422 and missing.json()["details"][0]["field"] == "reason"
        assert operator_post(f"{url}/close", {"reason": "done"}).status_code == 200
        assert operator_post(f"{url}/close", {"reason": "done"}).status_code == 409
        assert operator_post(f"{intake.url}/v1/incidents/INC-1999-9999/note", {"text": "x"}).status_code == 404
        assert operator_post(f"{url}/explode", {}).status_code == 404
    actors = [e.actor for e in events(incident_id) if e.actor.startswith("api:")]
    # (an acknowledgement is recorded by the acknowledgement service, under the contact's name)
    assert actors == ["api:li-wei", "api:li-wei", "api:Chen Jing", "api:li-wei"]
    assert not any(e.actor == "api:zhao-gang" for e in events(incident_id))


def test_an_operator_whose_contact_left_the_directory_is_refused(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.intake_harness import SOURCES, TOKENS, RunningIntake, write_config

    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    incident_id = open_incident(tmp_path, "ops-gone")
    access = {**SOURCES, "operators": {"gone": {"contact": "someone-who-left",
                                                "token_env": "FIREBREAK_TEST_OPERATOR_LI_WEI"}}}
    sources, routes = write_config(tmp_path, {"runbook": None}, access)
    with RunningIntake(sources, routes, executor="none") as intake:
        answer = operator_post(f"{intake.url}/v1/incidents/{incident_id}/note", {"text": "x"})
    assert answer.status_code == 422 and "not a contact" in answer.json()["error"]
    assert not [e for e in events(incident_id) if e.actor.startswith("api:")]
