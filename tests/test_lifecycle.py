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

REPO = Path(__file__).resolve().parents[1]


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
    from tests.test_live_view import latest

    return latest(incident_id)


def test_the_cli_runs_an_incident_from_triggered_to_closed(tmp_path: Path, simulator: Any) -> None:
    incident_id = open_incident(tmp_path)
    cli("note", incident_id, "--by", "li-wei", "--text", "vendor on site")
    out = cli("level", incident_id, "I", "--by", "Qian Li", "--reason", "10,000 customers affected").stdout
    assert "Level II → I" in out and "commander_in_chief" in out
    # Level I is commanded by the commander-in-chief on duty (Zhao Gang), who hands over to Sun Hao.
    assert "already commands" in cli("handover", incident_id, "--to", "zhao-gang", "--by", "qian-li",
                                     check=False).stderr
    cli("handover", incident_id, "--to", "sun-hao", "--by", "zhao-gang", "--note", "you run the floor")
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
    assert len(declared) == 8
    for entry in declared:
        deployment = RunnerDeployment.from_entrypoint(entrypoint=str(REPO / entry["entrypoint"]), name=entry["name"])
        schema = deployment._parameter_openapi_schema.model_dump_for_openapi()
        text = json.dumps(schema)
        assert '"null"' not in text, f"{entry['name']}: a None toggle in the form"
        contact = schema["definitions"]["Contact"]["enum"]
        assert "李伟 Li Wei (li-wei)" in contact and schema["properties"]["by"]["$ref"].endswith("/Contact")
        assert "incident_id" in schema["required"] and "by" in schema["required"]
        assert all(p.get("description") for p in schema["properties"].values()), entry["name"]


_stamps: list[int] = []


def signed_post(url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    """POST `body` signed as the `generic` source, each time with a timestamp of its own (an equal
    body signed in the same second is the same signature: a replay)."""
    import time

    from intake.sources import sign
    from tests.intake_harness import TOKENS

    raw = json.dumps(body).encode()
    stamp = min([int(time.time())] + [s - 1 for s in _stamps[-1:]])
    _stamps.append(stamp)
    stamp_text, signature = sign(TOKENS["FIREBREAK_TEST_HMAC"], raw, stamp)
    assert stamp_text == str(stamp)
    return httpx.post(url, content=raw, headers={"Content-Type": "application/json", "X-Firebreak-Timestamp": stamp_text,
                                                 "X-Firebreak-Signature": signature, **headers}, timeout=60)


def test_the_intake_acts_for_an_authenticated_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.intake_harness import READ_AUTH, TOKENS, RunningIntake, write_config

    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    incident_id = open_incident(tmp_path, "ops-api")
    sources, routes = write_config(tmp_path, {"runbook": None})
    with RunningIntake(sources, routes, executor="none") as intake:
        url = f"{intake.url}/v1/incidents/{incident_id}"
        # A read token is not enough to act; nor is nothing.
        assert httpx.post(f"{url}/note", json={"by": "li-wei", "text": "x"}, headers=READ_AUTH).status_code == 401
        answer = signed_post(f"{url}/note", {"by": "li-wei", "text": "rerouted the hotline"},
                             **{"Idempotency-Key": "n-1"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["by"] == "li-wei" and answer.json()["via"] == "api"
        # The same signed request again is a replay; the client resending it signs anew, with the same key.
        replayed = signed_post(f"{url}/note", {"by": "li-wei", "text": "rerouted the hotline"},
                               **{"Idempotency-Key": "n-1"})
        assert replayed.status_code == 200 and replayed.json()["repeated"] is True
        bearer = httpx.post(f"{url}/acknowledge", json={"by": "chen-jing"}, timeout=60,
                            headers={"X-Firebreak-Source": "grafana",
                                     "Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_GRAFANA_TOKEN']}"})
        assert bearer.status_code == 200 and bearer.json()["status"] == "acknowledged"
        stranger = signed_post(f"{url}/resolve", {"by": "Mallory", "reason": "x"})
        assert stranger.status_code == 422 and "not a contact" in stranger.json()["error"]
        missing = signed_post(f"{url}/close", {"by": "li-wei"})
        assert missing.status_code == 422 and missing.json()["details"][0]["field"] == "reason"
        assert signed_post(f"{url}/close", {"by": "li-wei", "reason": "done"}).status_code == 200
        assert signed_post(f"{url}/close", {"by": "li-wei", "reason": "done"}).status_code == 409
        assert signed_post(f"{intake.url}/v1/incidents/INC-1999-9999/note",
                           {"by": "li-wei", "text": "x"}).status_code == 404
        assert signed_post(f"{url}/explode", {"by": "li-wei"}).status_code == 404
    actors = [e.actor for e in events(incident_id) if e.actor.startswith("api:")]
    # (an acknowledgement is recorded by the acknowledgement service, under the contact's name)
    assert actors == ["api:li-wei", "api:Chen Jing", "api:li-wei"]
