"""The intake's one mapping from Firebreak's errors to HTTP answers (intake/edge.py
HTTP_ANSWERS): each answer's status, body and headers exactly as the endpoints gave
them when each mapped its own errors; anything unmapped stays a 500."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from firebreak import errors
from intake.app import create_app
from intake.sources import sign
from tests.environment import environment
from tests.intake_harness import READ_AUTH, TOKENS, RunningIntake, free_port, own_records_database, write_config
from tests.records_env import records_database_at

ALERT_STORE_DOWN = "the alert store is unavailable; nothing was stored, send again later"
INCIDENT_STORE_DOWN = "the incident store is unavailable"


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIntake]:
    directory = tmp_path_factory.mktemp("intake-errors")
    sources, routes = write_config(directory, {"runbook": None})
    with (environment(**TOKENS), own_records_database(directory),
          RunningIntake(sources, routes, executor="none") as running):
        yield running


def alertmanager_body() -> dict[str, object]:
    return {"version": "4", "status": "firing", "receiver": "firebreak", "groupKey": f"g-{time.time_ns()}",
            "alerts": [{"status": "firing", "labels": {"alertname": "Answers"}, "fingerprint": f"f{time.time_ns()}",
                        "annotations": {}, "startsAt": "2026-01-01T00:00:00Z"}]}


def test_authentication_failures_answer_401_with_www_authenticate(intake: RunningIntake) -> None:
    response = httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=alertmanager_body(),
                          headers={"Authorization": "Bearer wrong-token"})
    assert response.status_code == 401
    assert response.json() == {"error": "bearer token is not valid for this source", "details": []}
    assert response.headers["WWW-Authenticate"] == "Bearer"
    response = httpx.post(f"{intake.url}/v1/alerts/generic", json={"summary": "s"})
    assert response.status_code == 401
    assert response.json() == {"error": "missing X-Firebreak-Signature header", "details": []}
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_replayed_signature_answers_401_without_www_authenticate(intake: RunningIntake) -> None:
    body = json.dumps({"summary": "replay me", "dedup_key": f"replay-{time.time_ns()}"}).encode()
    stamp, signature = sign(TOKENS["FIREBREAK_TEST_HMAC"], body)
    headers = {"X-Firebreak-Timestamp": stamp, "X-Firebreak-Signature": signature, "Content-Type": "application/json"}
    assert httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=headers).status_code == 202
    replay = httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=headers)
    assert replay.status_code == 401
    assert replay.json() == {"error": "this signature was already used (replayed request)", "details": []}
    assert "WWW-Authenticate" not in replay.headers


def test_the_alert_routes_answer_other_methods_405_naming_post(intake: RunningIntake) -> None:
    """The alert routes are answered before FastAPI (intake.alert_routes); other methods still get a 405."""
    for method, path in [("GET", "/v1/alerts/alertmanager"), ("PUT", "/v2/enqueue"), ("DELETE", "/v1/alerts/x")]:
        response = httpx.request(method, f"{intake.url}{path}")
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["Allow"] == "POST"
        assert "POST" in (response.json().get("error") or response.json().get("message"))
    # Not an alert route (a slash in the source): FastAPI's own 404, as before.
    assert httpx.post(f"{intake.url}/v1/alerts/a/b", json={}).status_code == 404


def test_an_unknown_incident_answers_404(intake: RunningIntake) -> None:
    response = httpx.get(f"{intake.url}/v1/incidents/INC-1999-9999", headers=READ_AUTH)
    assert response.status_code == 404
    assert response.json() == {"error": "no incident 'INC-1999-9999'", "details": []}


def test_store_down_answers_503_with_retry_after_in_each_shape(intake: RunningIntake) -> None:
    am_auth = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_AM_TOKEN']}"}
    event = {"routing_key": TOKENS["FIREBREAK_TEST_PD_KEY"], "event_action": "trigger",
             "dedup_key": f"down-{time.time_ns()}", "payload": {"summary": "s", "source": "h", "severity": "error"}}
    with records_database_at(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"):  # nothing there
        answers = [
            (httpx.post(f"{intake.url}/v1/alerts/alertmanager", json=alertmanager_body(), headers=am_auth),
             {"error": ALERT_STORE_DOWN, "details": []}),
            (httpx.post(f"{intake.url}/v2/enqueue", json=event),  # PagerDuty's error shape
             {"status": "error", "message": ALERT_STORE_DOWN, "errors": [ALERT_STORE_DOWN]}),
            (httpx.get(f"{intake.url}/v1/incidents", headers=READ_AUTH), {"error": INCIDENT_STORE_DOWN, "details": []}),
            (httpx.get(f"{intake.url}/v1/incidents/INC-1999-9999", headers=READ_AUTH),
             {"error": INCIDENT_STORE_DOWN, "details": []}),
        ]
    for response, body in answers:
        assert response.status_code == 503, response.text
        assert response.json() == body
        assert response.headers["Retry-After"] == "5"


def test_an_unmapped_firebreak_error_stays_a_500(tmp_path: Path) -> None:
    sources, routes = write_config(tmp_path, {"runbook": None})
    from intake.service import load_intake
    from intake.settings import IntakeSettings

    app = create_app(load_intake(IntakeSettings(sources_file=sources, routes_file=routes, executor="none")))

    @app.get("/conflict")
    def conflict() -> None:
        raise errors.Conflict("not an answer for the client")

    with own_records_database(tmp_path), TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/conflict")
    assert response.status_code == 500 and response.text == "Internal Server Error"
