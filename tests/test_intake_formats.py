"""The intake's HTTP surface over real HTTP (uvicorn on a free port, SQLite records):
each payload format, every authentication failure, every validation error, routing.

Payload fixtures follow each format's published documentation (Alertmanager
webhook_config payload version 4, Grafana's alerting webhook contact point,
PagerDuty Events API v2), written from the documented field lists; runs are not
started here (executor "none"), see test_intake_runs.py for that.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from intake.routing import RoutesInvalid, decide, load_routes, parse_matcher
from intake.sources import SourcesInvalid, load_sources, sign
from records.alerts import Alert, SeenSignature
from records.db import session_scope
from records.incidents import events, get_incident
from tests.intake_harness import TOKENS, RunningIntake, write_config

AM_AUTH = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_AM_TOKEN']}"}
GRAFANA_AUTH = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_GRAFANA_TOKEN']}"}
PD_KEY = TOKENS["FIREBREAK_TEST_PD_KEY"]

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
    saved = {k: os.environ.get(k) for k in TOKENS}
    os.environ.update(TOKENS)
    sources, routes = write_config(tmp_path_factory.mktemp("intake"), ROUTE)
    try:
        with RunningIntake(sources, routes, executor="none", max_body_bytes=32768) as running:
            yield running
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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


def grafana_body(fingerprint: str, status: str = "firing") -> dict:
    """A Grafana alerting webhook body as documented for the webhook contact point."""
    return {
        "receiver": "firebreak", "status": status, "orgId": 1,
        "alerts": [{"status": status,
                    "labels": {"alertname": "QueueBacklog", "grafana_folder": "contact-centre", "queue": "hotline"},
                    "annotations": {"summary": "Hotline queue above 200 callers"},
                    "startsAt": "2026-11-23T09:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://grafana:3000/alerting/grafana/abc/view", "fingerprint": fingerprint,
                    "silenceURL": "http://grafana:3000/alerting/silence/new", "dashboardURL": "", "panelURL": "",
                    "values": {"B": 231.0}, "valueString": "[ var='B' labels={queue=hotline} value=231 ]"}],
        "groupLabels": {"alertname": "QueueBacklog"}, "commonLabels": {"alertname": "QueueBacklog"},
        "commonAnnotations": {}, "externalURL": "http://grafana:3000/", "version": "1",
        "groupKey": '{}:{alertname="QueueBacklog"}', "truncatedAlerts": 0,
        "title": "[FIRING:1] QueueBacklog", "state": "alerting", "message": "**Firing**\n\nQueue backlog",
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
    shown = httpx.get(f"{intake.url}/v1/incidents/{first.id}").json()
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
    return {"X-Firebreak-Timestamp": stamp, "X-Firebreak-Signature": signature}


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


@pytest.mark.parametrize("event, field", [
    ({"event_action": "trigger"}, "payload is required"),
    ({"event_action": "explode", "dedup_key": "k"}, "event_action"),
    ({"event_action": "resolve"}, "dedup_key is required"),
    ({"event_action": "trigger", "payload": {"summary": "s", "source": "x", "severity": "fatal"}}, "payload.severity"),
    ({"event_action": "trigger", "payload": {"source": "x", "severity": "info"}}, "payload.summary"),
])
def test_pagerduty_validation_uses_pagerdutys_error_shape(intake: RunningIntake, event: dict, field: str) -> None:
    response = httpx.post(f"{intake.url}/v2/enqueue", json={"routing_key": PD_KEY, **event})
    assert response.status_code == 400
    assert response.json()["status"] == "invalid event"
    assert any(field in error for error in response.json()["errors"])


def test_generic_validation_and_unknown_runbook(intake: RunningIntake) -> None:
    for document, field in [({"dedup_key": "x"}, "summary"), ({"summary": "s", "level": "IV"}, "level"),
                            ({"summary": "s", "surprise": 1}, "surprise"),
                            ({"summary": "s", "runbook": "../etc"}, "runbook")]:
        body = json.dumps(document).encode()
        response = httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=signed(body))
        assert response.status_code == 422 and response.json()["details"][0]["field"] == field
    # A well-formed alert naming a runbook that does not exist, or parameters it rejects, is
    # recorded as not startable: the monitor did nothing wrong that a retry would fix.
    for document, reason in [({"summary": "s", "runbook": "no-such-runbook", "dedup_key": unique("g")}, "no runbook"),
                             ({"summary": "s", "runbook": "system-outage", "dedup_key": unique("g"),
                               "parameters": {"affected_customers": -1}}, "affected_customers")]:
        body = json.dumps(document).encode()
        response = httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=signed(body))
        assert response.status_code == 202 and response.json()["alerts"][0]["disposition"] == "not-startable"
        with session_scope() as session:
            error = session.scalar(select(Alert.error).where(Alert.id == response.json()["alerts"][0]["id"]))
        assert reason in error


def test_not_json_too_large_unknown_source_and_never_500(intake: RunningIntake) -> None:
    response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", content=b"{not json", headers=AM_AUTH)
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    big = json.dumps(alertmanager_group([unique("big")], description="x" * 40000)).encode()
    assert httpx.post(f"{intake.url}/v1/alerts/alertmanager", content=big, headers=AM_AUTH).status_code == 413

    def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(40):
            yield b" " * 1024
    streamed = httpx.post(f"{intake.url}/v1/alerts/alertmanager", content=chunks(), headers=AM_AUTH)
    assert streamed.status_code == 413
    assert httpx.post(f"{intake.url}/v1/alerts/nagios", json={}).status_code == 404
    assert httpx.post(f"{intake.url}/v1/alerts/pagerduty", json={}).status_code == 404
    assert httpx.get(f"{intake.url}/v1/incidents/INC-1999-9999").status_code == 404
    for garbage in [b"[]", b"null", b"7", b'"text"', b'{"alerts": null}', b'{"version": "4", "alerts": [null]}',
                    "\u0000\ud800".encode("utf-8", "surrogatepass"), b'{"a":' * 2000]:
        for path, headers in [("/v1/alerts/alertmanager", AM_AUTH), ("/v1/alerts/grafana", GRAFANA_AUTH),
                              ("/v2/enqueue", {}), ("/v1/alerts/generic", signed(garbage))]:
            response = httpx.post(f"{intake.url}{path}", content=garbage, headers=headers)
            assert 400 <= response.status_code < 500, (path, garbage[:20], response.status_code, response.text)


def test_service_endpoints(intake: RunningIntake) -> None:
    assert httpx.get(f"{intake.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{intake.url}/readyz").json()
    assert ready["ready"] is True and ready["store"] == "ok"
    schema = httpx.get(f"{intake.url}/openapi.json").json()
    assert {"/v1/alerts/{source}", "/v2/enqueue", "/v1/incidents", "/v1/incidents/{incident_id}"} <= set(schema["paths"])
    assert {"AlertmanagerWebhook", "GrafanaWebhook", "PagerDutyEvent", "GenericAlert"} <= set(schema["components"]["schemas"])
    listed = httpx.get(f"{intake.url}/v1/incidents", params={"limit": 5}).json()["incidents"]
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


def test_inline_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text("sources:\n  am:\n    format: alertmanager\n    auth: {type: bearer, token: hunter2}\n")
    with pytest.raises(SourcesInvalid, match="secrets are not written in this file") as error:
        load_sources(path)
    assert "hunter2" not in str(error.value)
    path.write_text("sources:\n  am:\n    format: pagerduty\n    auth: {type: bearer, token_env: X}\n")
    with pytest.raises(SourcesInvalid, match="routing_key"):
        load_sources(path)
