"""The intake's HTTP surface over real HTTP (uvicorn on a free port, SQLite records):
each payload format, every authentication failure, every validation error, routing.

Payload fixtures follow each format's published documentation (Alertmanager
webhook_config payload version 4, Grafana's alerting webhook contact point,
PagerDuty Events API v2). The documented example bodies themselves are in
tests/fixtures/intake/ (each file names the page it was checked against) and are
posted unchanged; the builders below vary them. Runs are not started here
(executor "none"), see test_intake_runs.py for that.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from intake.routing import RoutesInvalid, decide, load_routes, parse_matcher
from intake.sources import load_sources, sign
from records.alert_ingest import Alert
from records.db import session_scope
from records.incidents import events, get_incident
from records.signatures import SeenSignature
from tests.environment import environment
from tests.intake_harness import READ_AUTH, TOKENS, RunningIntake, own_records_database, write_config

AM_AUTH = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_AM_TOKEN']}"}
JSON = {"Content-Type": "application/json"}  # for bodies posted as bytes (httpx's json= sets it itself)
GRAFANA_AUTH = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_GRAFANA_TOKEN']}"}
PD_KEY = TOKENS["FIREBREAK_TEST_PD_KEY"]
DOCUMENTED = Path(__file__).parents[1] / "fixtures" / "intake"

ROUTE = {
    "runbook": None,
    "routes": [
        {"name": "outage", "matchers": ['alertname =~ "ServiceDown|InstanceDown"'], "runbook": "system-outage",
         "parameters": {"affected_service": '{{ labels.service | default("online_chat") }}'},
         "routes": [{"name": "outage-critical", "matchers": ['severity = "critical"'], "level": "I"}]},
        {"name": "congestion", "match": {"alertname": "QueueBacklog"}, "runbook": "network-congestion"},
        {"name": "pd-critical", "matchers": ['severity="critical"', 'component=~"chat|orders"'],
         "runbook": "system-outage", "level": "I"},
    ],
}


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIntake]:
    directory = tmp_path_factory.mktemp("intake")
    sources, routes = write_config(directory, ROUTE)
    with (environment(**TOKENS), own_records_database(directory),
          RunningIntake(sources, routes, executor="none", max_body_bytes=32768) as running):
        yield running


def stored_alerts() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Alert)) or 0


def unique(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


def alertmanager_group(fingerprints: list[str], status: str = "firing", **labels: str) -> dict:
    """An Alertmanager webhook body, version 4, as documented for webhook_config."""
    alerts = []
    for i, fp in enumerate(fingerprints):
        alert_labels = {"alertname": "ServiceDown", "instance": f"chat-{i}:9100", "job": "chat", "service": "online_chat",
                        "severity": "warning", **labels}
        alerts.append({"status": status, "labels": alert_labels,
                       "annotations": {"summary": f"Online chat is down on chat-{i}", "description": "probe failed"},
                       "startsAt": "2026-11-23T09:00:00.000Z",
                       "endsAt": "2026-11-23T09:30:00.000Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                       "generatorURL": "http://prometheus:9090/graph?g0.expr=up%3D%3D0", "fingerprint": fp})
    return {"version": "4", "groupKey": '{}:{alertname="ServiceDown"}', "truncatedAlerts": 0, "status": status,
            "receiver": "firebreak", "groupLabels": {"alertname": "ServiceDown"},
            "commonLabels": {"alertname": "ServiceDown", "job": "chat"},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": alerts}


def documented(name: str) -> dict:
    """A documented example body from tests/fixtures/intake/ (JSON, read as YAML for the comments)."""
    return yaml.safe_load((DOCUMENTED / name).read_text())


def grafana_body(fingerprint: str, status: str = "firing") -> dict:
    """A Grafana alerting webhook body shaped like the documented one (fixtures/intake/grafana_webhook.yaml)."""
    resolved = status == "resolved"
    return {
        "receiver": "firebreak", "status": status, "orgId": 1,
        "alerts": [{"status": status,
                    "labels": {"alertname": "QueueBacklog", "grafana_folder": "contact-centre", "queue": "hotline"},
                    "annotations": {"summary": "Hotline queue above 200 callers"},
                    "startsAt": "2026-11-23T09:00:00Z",
                    "endsAt": "2026-11-23T09:20:00Z" if resolved else "0001-01-01T00:00:00Z",
                    "generatorURL": "http://grafana:3000/alerting/grafana/abc/view", "fingerprint": fingerprint,
                    "silenceURL": "http://grafana:3000/alerting/silence/new?alertmanager=grafana"
                                  "&matcher=alertname%3DQueueBacklog&matcher=queue%3Dhotline",
                    "dashboardURL": "", "panelURL": "", "values": {"B": 231.0, "C": 1}}],
        "groupLabels": {"alertname": "QueueBacklog"}, "commonLabels": {"alertname": "QueueBacklog"},
        "commonAnnotations": {}, "externalURL": "http://grafana:3000/", "version": "1",
        "groupKey": '{}:{alertname="QueueBacklog"}', "truncatedAlerts": 0,
        "title": f"[{status.upper()}:1] QueueBacklog", "state": "ok" if resolved else "alerting",
        "message": f"**{status.capitalize()}**\n\nQueue backlog",
    }


def pd_event(action: str, dedup_key: str | None = None, **payload: str) -> dict:
    """A PagerDuty Events API v2 event as documented for POST /v2/enqueue."""
    event: dict = {"routing_key": PD_KEY, "event_action": action}
    if dedup_key:
        event["dedup_key"] = dedup_key
    if action == "trigger":
        event["payload"] = {"summary": "Order API error rate above 20%", "source": "orders-api-1",
                            "severity": "critical", "component": "orders", "group": "prod", "class": "errors",
                            "custom_details": {"error_rate": "0.23"}, **payload}
        event["client"] = "Monitoring"
        event["client_url"] = "https://monitoring.example.com"
    return event


# --- formats --------------------------------------------------------------------------------------------------


def test_alertmanager_group_routes_each_alert_and_dedups_by_fingerprint(intake: RunningIntake) -> None:
    down, critical = unique("fp-down"), unique("fp-crit")
    body = alertmanager_group([down, critical])
    body["alerts"][1]["labels"]["severity"] = "critical"
    body["alerts"].append({**body["alerts"][0], "labels": {"alertname": "DiskFull"}, "fingerprint": unique("fp-disk")})
    response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=body, headers=AM_AUTH)
    assert response.status_code == 202, response.text
    results = response.json()["alerts"]
    assert [r["disposition"] for r in results] == ["opened", "opened", "unrouted"]
    assert results[2]["incident_id"] is None
    first, second = (get_incident(r["incident_id"]) for r in results[:2])
    assert (first.runbook_id, first.level, first.source) == ("system-outage", "II", "alert")
    assert second.level == "I"  # the critical child route
    assert first.parameters["affected_service"] == "online_chat"
    assert first.title == "Online chat is down on chat-0"

    again = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=alertmanager_group([down]), headers=AM_AUTH)
    assert again.json()["alerts"][0] == {**again.json()["alerts"][0], "disposition": "absorbed",
                                         "incident_id": first.id}
    shown = httpx.get(f"{intake.url}/v1/incidents/{first.id}", headers=READ_AUTH).json()
    assert shown["alerts"] == 2 and shown["status"] == "triggered" and shown["run_request"]["status"] == "pending"


def test_alertmanager_resolved_notification_reaches_the_incident(intake: RunningIntake) -> None:
    fp = unique("fp-res")
    opened = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=alertmanager_group([fp]), headers=AM_AUTH)
    incident_id = opened.json()["alerts"][0]["incident_id"]
    resolved = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=alertmanager_group([fp], "resolved"),
                          headers=AM_AUTH)
    assert resolved.status_code == 202
    assert resolved.json()["alerts"][0]["disposition"] == "resolved"
    assert any(e.status == "monitor-resolved" for e in events(incident_id))
    # A resolve for a fingerprint with no open incident starts nothing.
    stray = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=alertmanager_group([unique("fp")], "resolved"),
                       headers=AM_AUTH)
    assert stray.json()["alerts"][0] == {**stray.json()["alerts"][0], "disposition": "unmatched-resolve",
                                         "incident_id": None}


def test_grafana_webhook(intake: RunningIntake) -> None:
    response = httpx.post(f"{intake.url}/v1/alerts/grafana", json=grafana_body(unique("gf")), headers=GRAFANA_AUTH)
    assert response.status_code == 202, response.text
    result = response.json()["alerts"][0]
    assert result["disposition"] == "opened"
    assert get_incident(result["incident_id"]).runbook_id == "network-congestion"
    fingerprint = result["fingerprint"].removeprefix("grafana/")
    resolved = httpx.post(f"{intake.url}/v1/alerts/grafana", json=grafana_body(fingerprint, "resolved"),
                          headers=GRAFANA_AUTH)
    assert resolved.status_code == 202, resolved.text
    assert resolved.json()["alerts"][0]["disposition"] == "resolved"
    assert any(e.status == "monitor-resolved" for e in events(result["incident_id"]))


def test_pagerduty_trigger_acknowledge_resolve(intake: RunningIntake) -> None:
    key = unique("pd")
    trigger = httpx.post(f"{intake.url}/v2/enqueue", json=pd_event("trigger", key))
    assert trigger.status_code == 202
    assert trigger.json() == {"status": "success", "message": "Event processed", "dedup_key": key}
    with session_scope() as session:
        incident_id = session.scalar(select(Alert.incident_id).where(Alert.fingerprint == f"pagerduty/{key}"))
    incident = get_incident(incident_id)
    assert (incident.runbook_id, incident.level) == ("system-outage", "I")

    ack = httpx.post(f"{intake.url}/v2/enqueue", json=pd_event("acknowledge", key))
    assert ack.status_code == 202 and ack.json()["dedup_key"] == key
    assert get_incident(incident_id).status == "acknowledged"  # the monitor's ack stops escalation
    resolve = httpx.post(f"{intake.url}/v2/enqueue", json=pd_event("resolve", key))
    assert resolve.status_code == 202
    statuses = [e.status for e in events(incident_id)]
    assert "monitor-acknowledged" in statuses and "monitor-resolved" in statuses

    generated = httpx.post(f"{intake.url}/v2/enqueue", json=pd_event("trigger", summary="no key given"))
    assert generated.status_code == 202 and len(generated.json()["dedup_key"]) == 32


def stored_alert(*, alert_id: int | None = None, fingerprint: str | None = None) -> dict:
    """The stored row (by id, or the newest for a fingerprint), read inside its session."""
    with session_scope() as session:
        query = select(Alert).where(Alert.id == alert_id) if alert_id is not None else \
            select(Alert).where(Alert.fingerprint == fingerprint).order_by(Alert.id.desc()).limit(1)
        row = session.scalars(query).one()
        return {"format": row.format, "fingerprint": row.fingerprint, "status": row.status, "summary": row.summary,
                "labels": row.labels, "annotations": row.annotations, "payload": row.payload,
                "disposition": row.disposition}


def test_grafana_documented_example_is_stored_as_sent(intake: RunningIntake) -> None:
    body = documented("grafana_webhook.yaml")
    response = httpx.post(f"{intake.url}/v1/alerts/grafana", json=body, headers=GRAFANA_AUTH)
    assert response.status_code == 202, response.text
    results = response.json()["alerts"]
    assert len(results) == len(body["alerts"]) == 2
    for result, sent in zip(results, body["alerts"], strict=True):
        row = stored_alert(alert_id=result["id"])
        assert row["fingerprint"] == result["fingerprint"] == f"grafana/{sent['fingerprint']}"
        assert (row["format"], row["status"], row["disposition"]) == ("grafana", "firing", "unrouted")
        assert row["summary"] == sent["annotations"]["summary"]
        assert (row["labels"], row["annotations"]) == (sent["labels"], sent["annotations"])
        assert row["payload"]["values"] == sent["values"]
        assert (row["payload"]["silenceURL"], row["payload"]["orgId"], row["payload"]["groupKey"]) == \
            (sent["silenceURL"], body["orgId"], body["groupKey"])


def test_pagerduty_documented_examples_are_stored_as_sent(intake: RunningIntake) -> None:
    examples = documented("pagerduty_events_v2.yaml")
    for name in ("trigger_from_send_an_alert_event", "trigger_from_openapi"):
        event = {**examples[name], "routing_key": PD_KEY}  # the documented placeholder is not our credential
        response = httpx.post(f"{intake.url}/v2/enqueue", json=event)
        assert response.status_code == 202, (name, response.text)
        assert response.json() == {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]}
        row = stored_alert(fingerprint=f"pagerduty/{event['dedup_key']}")
        sent = event["payload"]
        assert (row["format"], row["status"], row["summary"]) == ("pagerduty", "firing", sent["summary"])
        # PD-CEF fields become labels (routes match on them); scalar custom_details too, as text.
        assert row["labels"] == {"severity": sent["severity"], "source": sent["source"],
                                 "component": sent["component"], "group": sent["group"], "class": sent["class"],
                                 **{k: str(v) for k, v in sent["custom_details"].items()}}
        assert row["payload"]["images"] == event["images"] and row["payload"]["links"] == event["links"]
        assert row["payload"]["client_url"] == event["client_url"]
        assert "routing_key" not in row["payload"] and PD_KEY not in json.dumps(row["payload"])
    # Acknowledge and resolve carry only routing_key, event_action and dedup_key, as documented.
    for name, status in (("acknowledge_from_send_an_alert_event", "acknowledged"),
                         ("resolve_from_send_an_alert_event", "resolved")):
        event = {**examples[name], "routing_key": PD_KEY}
        assert set(event) == {"routing_key", "event_action", "dedup_key"}
        response = httpx.post(f"{intake.url}/v2/enqueue", json=event)
        assert response.status_code == 202, (name, response.text)
        assert response.json()["dedup_key"] == event["dedup_key"]
        row = stored_alert(fingerprint=f"pagerduty/{event['dedup_key']}")
        assert (row["status"], row["labels"], row["disposition"]) == (status, {}, "unmatched-resolve")


def test_generic_signed_alert_and_replay(intake: RunningIntake) -> None:
    secret = TOKENS["FIREBREAK_TEST_HMAC"]
    body = json.dumps({"summary": "Agents below required", "dedup_key": unique("gen"), "runbook": "staffing-shortage",
                       "level": "III", "labels": {"site": "shanghai"}}).encode()
    stamp, signature = sign(secret, body)
    headers = {"X-Firebreak-Timestamp": stamp, "X-Firebreak-Signature": signature,
               "Content-Type": "application/json"}
    response = httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=headers)
    assert response.status_code == 202, response.text
    incident = get_incident(response.json()["alerts"][0]["incident_id"])
    assert (incident.runbook_id, incident.level) == ("staffing-shortage", "III")
    before = stored_alerts()
    replay = httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=headers)
    assert replay.status_code == 401 and "replayed" in replay.json()["error"]
    assert stored_alerts() == before


# --- authentication ------------------------------------------------------------------------------------------


def signed(body: bytes, *, secret: str = TOKENS["FIREBREAK_TEST_HMAC"], skew: int = 0) -> dict[str, str]:
    stamp, signature = sign(secret, body, int(time.time()) + skew)
    return {"X-Firebreak-Timestamp": stamp, "X-Firebreak-Signature": signature, **JSON}


@pytest.mark.parametrize("case", [
    ("alertmanager", {}, "missing Authorization"),
    ("alertmanager", {"Authorization": "Basic dXNlcjpwYXNz"}, "not `Bearer"),
    ("alertmanager", {"Authorization": "Bearer wrong-token"}, "not valid"),
    ("alertmanager", GRAFANA_AUTH, "not valid"),  # another source's token
    ("unset", AM_AUTH, "FIREBREAK_TEST_NEVER_SET is unset"),
    ("generic", {}, "missing X-Firebreak-Signature"),
    ("generic", "no-timestamp", "missing X-Firebreak-Timestamp"),
    ("generic", "bad-signature", "does not match"),
    ("generic", "wrong-secret", "does not match"),
    ("generic", "stale", "replay window"),
    ("generic", "future", "replay window"),
    ("generic", "not-hex", "not a hex"),
])
def test_authentication_failures_store_nothing(intake: RunningIntake, case: tuple) -> None:
    source, headers, reason = case
    body = json.dumps(alertmanager_group([unique("auth")]) if source != "generic"
                      else {"summary": "x", "dedup_key": unique("auth")}).encode()
    if headers == "no-timestamp":
        headers = {"X-Firebreak-Signature": signed(body)["X-Firebreak-Signature"]}
    elif headers == "bad-signature":
        headers = signed(body + b" ")
    elif headers == "wrong-secret":
        headers = signed(body, secret="guess")
    elif headers == "stale":
        headers = signed(body, skew=-120)
    elif headers == "future":
        headers = signed(body, skew=+120)
    elif headers == "not-hex":
        headers = {**signed(body), "X-Firebreak-Signature": "sha256=zz"}
    before = stored_alerts()
    with session_scope() as session:
        signatures = session.scalar(select(func.count()).select_from(SeenSignature))
    response = httpx.post(f"{intake.url}/v1/alerts/{source}", content=body,
                          headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 401
    assert reason in response.json()["error"]
    assert TOKENS["FIREBREAK_TEST_AM_TOKEN"] not in response.text and TOKENS["FIREBREAK_TEST_HMAC"] not in response.text
    assert stored_alerts() == before
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(SeenSignature)) == signatures


def test_pagerduty_wrong_routing_key_is_401(intake: RunningIntake) -> None:
    before = stored_alerts()
    response = httpx.post(f"{intake.url}/v2/enqueue", json={**pd_event("trigger", unique("pd")), "routing_key": "x" * 32})
    assert response.status_code == 401 and response.json()["status"] == "error"
    assert stored_alerts() == before


# --- validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mutate, status, fields", [
    (lambda b: b.update(version="3"), 422, ["version"]),
    (lambda b: b.pop("alerts"), 422, ["alerts"]),
    (lambda b: b.update(alerts=[]), 422, ["alerts"]),
    (lambda b: b["alerts"][0].pop("fingerprint"), 422, ["alerts[0].fingerprint"]),
    (lambda b: b["alerts"][0].update(status="burning"), 422, ["alerts[0].status"]),
    (lambda b: b["alerts"][0].update(labels={"alertname": 5}), 422, ["alerts[0].labels.alertname"]),
    (lambda b: b["alerts"][0].update(startsAt="yesterday"), 422, ["alerts[0].startsAt"]),
])
def test_alertmanager_validation_names_field_and_reason(intake: RunningIntake, mutate, status, fields) -> None:
    body = alertmanager_group([unique("val")])
    mutate(body)
    before = stored_alerts()
    response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=body, headers=AM_AUTH)
    assert response.status_code == status, response.text
    details = response.json()["details"]
    assert [d["field"] for d in details] == fields and all(d["reason"] for d in details)
    assert stored_alerts() == before


def pd_trigger(**changes: object) -> dict:
    """A valid trigger (the documented OpenAPI example) with `changes`; `payload.x` keys change the payload."""
    event = {**documented("pagerduty_events_v2.yaml")["trigger_from_openapi"], "routing_key": PD_KEY,
             "dedup_key": unique("pd-limit")}
    event["payload"] = dict(event["payload"])
    for key, value in changes.items():
        target, _, name = key.rpartition(".")
        place = event["payload"] if target == "payload" else event
        if value is None:
            place.pop(name, None)
        else:
            place[name] = value
    return event


@pytest.mark.parametrize("event, field", [
    ({"routing_key": PD_KEY, "event_action": "trigger"}, "payload"),
    ({"routing_key": PD_KEY, "event_action": "explode", "dedup_key": "k"}, "event_action"),
    ({"routing_key": PD_KEY, "event_action": "resolve"}, "dedup_key"),
    ({"routing_key": PD_KEY, "event_action": "acknowledge"}, "dedup_key"),
    (pd_trigger(**{"payload.severity": "fatal"}), "payload.severity"),
    (pd_trigger(**{"payload.summary": None}), "payload.summary"),
    (pd_trigger(**{"payload.summary": "x" * 1025}), "payload.summary"),
    (pd_trigger(**{"payload.source": None}), "payload.source"),
    (pd_trigger(**{"payload.severity": None}), "payload.severity"),
    (pd_trigger(**{"payload.timestamp": "last tuesday"}), "payload.timestamp"),
    (pd_trigger(dedup_key="k" * 256), "dedup_key"),
    (pd_trigger(images=[{"alt": "no src"}]), "images[0].src"),
    (pd_trigger(links=[{"text": "no href"}]), "links[0].href"),
], ids=["trigger-without-payload", "unknown-action", "resolve-without-dedup_key", "ack-without-dedup_key",
        "bad-severity", "no-summary", "summary-over-1024", "no-source", "no-severity", "bad-timestamp",
        "dedup_key-over-255", "image-without-src", "link-without-href"])
def test_pagerduty_validation_uses_pagerdutys_error_shape(intake: RunningIntake, event: dict, field: str) -> None:
    before = stored_alerts()
    response = httpx.post(f"{intake.url}/v2/enqueue", json=event)
    assert response.status_code == 400, response.text
    assert response.json()["status"] == "invalid event"
    assert [e for e in response.json()["errors"] if e.startswith(f"{field}: ")], response.json()["errors"]
    assert stored_alerts() == before


def test_pagerduty_documented_limits_are_inclusive(intake: RunningIntake) -> None:
    key = unique("pd-limit")
    event = pd_trigger(dedup_key=key + "k" * (255 - len(key)), **{"payload.summary": "s" * 1024})
    response = httpx.post(f"{intake.url}/v2/enqueue", json=event)
    assert response.status_code == 202, response.text
    assert len(stored_alert(fingerprint=f"pagerduty/{event['dedup_key']}")["summary"]) == 1024


@pytest.mark.parametrize("mutate, fields", [
    (lambda b: b.update(version="4"), ["version"]),
    (lambda b: b.pop("version"), ["version"]),
    (lambda b: b.update(state="pending"), ["state"]),
    (lambda b: b.update(truncatedAlerts=-1), ["truncatedAlerts"]),
    (lambda b: b["alerts"][0].update(values={"B": "high"}), ["alerts[0].values.B"]),
    (lambda b: b["alerts"][0].update(status="alerting"), ["alerts[0].status"]),
    (lambda b: b["alerts"][0].pop("labels"), ["alerts[0].labels"]),
])
def test_grafana_validation_names_field_and_reason(intake: RunningIntake, mutate, fields: list[str]) -> None:
    body = grafana_body(unique("gf-val"))
    mutate(body)
    before = stored_alerts()
    response = httpx.post(f"{intake.url}/v1/alerts/grafana", json=body, headers=GRAFANA_AUTH)
    assert response.status_code == 422, response.text
    details = response.json()["details"]
    assert [d["field"] for d in details] == fields and all(d["reason"] for d in details)
    assert stored_alerts() == before


def test_generic_validation_and_unknown_runbook(intake: RunningIntake) -> None:
    for document, field in [({"dedup_key": "x"}, "summary"), ({"summary": "s", "level": "IV"}, "level"),
                            ({"summary": "s", "surprise": 1}, "surprise"),
                            ({"summary": "s", "runbook": "../etc"}, "runbook")]:
        body = json.dumps(document).encode()
        response = httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=signed(body))
        assert response.status_code == 422 and response.json()["details"][0]["field"] == field
    # A well-formed alert naming a runbook that does not exist is recorded as not startable.
    document = {"summary": "s", "runbook": "no-such-runbook", "dedup_key": unique("g")}
    body = json.dumps(document).encode()
    response = httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=signed(body))
    assert response.status_code == 202 and response.json()["alerts"][0]["disposition"] == "not-startable"
    with session_scope() as session:
        error = session.scalar(select(Alert.error).where(Alert.id == response.json()["alerts"][0]["id"]))
    assert "no runbook" in error
    # A value the runbook refuses from the alert is refused with the request (422 naming the
    # parameter), and nothing is stored (issue 10: it never silently starts, or half-starts, a run).
    before = stored_alerts()
    body = json.dumps({"summary": "s", "runbook": "system-outage", "dedup_key": unique("g"),
                       "parameters": {"affected_customers": -1}}).encode()
    response = httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=signed(body))
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["details"]] == ["parameters.affected_customers"]
    assert stored_alerts() == before


def test_not_json_too_large_unknown_source_and_never_500(intake: RunningIntake) -> None:
    response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", content=b"{not json", headers={**AM_AUTH, **JSON})
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    big = json.dumps(alertmanager_group([unique("big")], description="x" * 40000)).encode()
    assert httpx.post(f"{intake.url}/v1/alerts/alertmanager", content=big,
                      headers={**AM_AUTH, **JSON}).status_code == 413

    def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(40):
            yield b" " * 1024
    streamed = httpx.post(f"{intake.url}/v1/alerts/alertmanager", content=chunks(), headers={**AM_AUTH, **JSON})
    assert streamed.status_code == 413
    assert httpx.post(f"{intake.url}/v1/alerts/nagios", json={}).status_code == 404
    assert httpx.post(f"{intake.url}/v1/alerts/pagerduty", json={}).status_code == 404
    assert httpx.get(f"{intake.url}/v1/incidents/INC-1999-9999", headers=READ_AUTH).status_code == 404
    for garbage in [b"[]", b"null", b"7", b'"text"', b'{"alerts": null}', b'{"version": "4", "alerts": [null]}',
                    "\u0000\ud800".encode("utf-8", "surrogatepass"), b'{"a":' * 2000]:
        for path, headers in [("/v1/alerts/alertmanager", {**AM_AUTH, **JSON}),
                              ("/v1/alerts/grafana", {**GRAFANA_AUTH, **JSON}),
                              ("/v2/enqueue", JSON), ("/v1/alerts/generic", signed(garbage))]:
            response = httpx.post(f"{intake.url}{path}", content=garbage, headers=headers)
            assert 400 <= response.status_code < 500, (path, garbage[:20], response.status_code, response.text)


def test_service_endpoints(intake: RunningIntake) -> None:
    assert httpx.get(f"{intake.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{intake.url}/readyz").json()
    assert ready["ready"] is True and ready["store"] == "ok"
    schema = httpx.get(f"{intake.url}/openapi.json", headers=READ_AUTH).json()
    assert {"/v1/alerts/{source}", "/v2/enqueue", "/v1/incidents", "/v1/incidents/{incident_id}"} <= set(schema["paths"])
    assert {"AlertmanagerWebhook", "GrafanaWebhook", "PagerDutyEvent", "GenericAlert"} <= set(schema["components"]["schemas"])
    listed = httpx.get(f"{intake.url}/v1/incidents", params={"limit": 5}, headers=READ_AUTH).json()["incidents"]
    assert listed and {"id", "status", "level", "milestones", "run_url"} <= set(listed[0])


# --- routing and configuration ---------------------------------------------------------------------------------


def test_routing_tree_reads_like_alertmanager(tmp_path: Path) -> None:
    _, routes = write_config(tmp_path, ROUTE)
    root = load_routes(routes)
    assert decide(root, {"alertname": "Unknown"}).runbook is None
    assert decide(root, {"alertname": "Unknown"}).route == "default"
    outage = decide(root, {"alertname": "InstanceDown", "service": "hotline"})
    assert (outage.route, outage.runbook, outage.level, outage.parameters) == \
        ("outage", "system-outage", None, {"affected_service": "hotline"})
    critical = decide(root, {"alertname": "ServiceDown", "severity": "critical"})
    assert (critical.route, critical.level, critical.parameters["affected_service"]) == \
        ("outage-critical", "I", "online_chat")
    assert decide(root, {"alertname": "ServiceDownish"}).runbook is None  # regexes are anchored
    assert decide(root, {"alertname": "QueueBacklog"}).runbook == "network-congestion"
    assert parse_matcher('env!~"prod|staging"').matches({"env": "dev"})
    assert parse_matcher("team!=ops").matches({})  # a missing label is ""


@pytest.mark.parametrize("route, message", [
    ({"routes": [{"matchers": ["alertname ~ x"], "runbook": "system-outage"}]}, "is not `label=value`"),
    ({"routes": [{"matchers": ['a=~"("'], "runbook": "system-outage"}]}, "bad regular expression"),
    ({"routes": [{"matchers": ["a=b"], "runbook": "no-such-runbook"}]}, "no-such-runbook"),
    ({"routes": [{"matchers": ["a=b"], "runbook": "system-outage", "continue": True}]}, "continue"),
    ({"routes": [{"matchers": ["a=b"], "runbook": "system-outage", "level": "V"}]}, "level"),
])
def test_bad_routes_file_names_the_problem(tmp_path: Path, route: dict, message: str) -> None:
    _, routes = write_config(tmp_path, route)
    with pytest.raises(RoutesInvalid, match=message):
        load_routes(routes)


def test_shipped_config_files_load() -> None:
    from intake.settings import INTAKE_DIR

    sources = load_sources(INTAKE_DIR / "sources.yaml")
    assert {s.format for s in sources.values()} == {"alertmanager", "grafana", "pagerduty", "generic"}
    root = load_routes(INTAKE_DIR / "routes.yaml")
    assert decide(root, {"alertname": "ServiceDown", "severity": "critical"}).level == "I"
