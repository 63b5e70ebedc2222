"""Issue 10's findings, one focused regression test each, over real HTTP (the harness's uvicorn
server) on SQLite and, where the machine has it, PostgreSQL:

1. hostile but valid JSON is a 4xx naming the field, never a 500, and stores nothing; any
   Content-Type but JSON is 415;
2. an alert cannot steer the runbook's requests: only `from_alert` parameters, URLs only to
   `allowed_hosts` (for operator runs too);
3. label and annotation limits, per source;
4. the incidents API and the docs need a read token, asked before anything is looked up;
   rate limits per source and per reader answer 429 with Retry-After;
7. the HMAC window allows only a small future skew, and a signature is remembered until its
   timestamp alone refuses it (so it can never verify again after pruning);
8. the same signature at two replicas at once: one 202, the other 401, never a 500.

The fuzzing of the same surface is tests/intake/test_intake_fuzz.py.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from intake.sources import AuthFailed, HmacAuth, sign, verify_hmac
from records import alert_ingest
from records.alert_ingest import Alert, IncomingAlert, RunPlan
from records.db import session_scope
from records.incidents import get_incident
from records.models import Incident, utcnow
from records.signatures import SeenSignature, SignatureReplayed, forget_signatures_before, replayed_signatures
from runbooks import library
from runbooks.hosts import url_problem
from tests.environment import environment
from tests.intake_harness import READ_AUTH, SOURCES, TOKENS, RunningIntake, own_records_database, write_config
from tests.polling import wait_for
from tests.postgres import temporary_database
from tests.records_env import records_database_at

REPO = Path(__file__).resolve().parents[2]
AM_AUTH = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_AM_TOKEN']}"}
GRAFANA_AUTH = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_GRAFANA_TOKEN']}"}
JSON = {"Content-Type": "application/json"}
THROTTLED_READER = {"FIREBREAK_TEST_READ_TOKEN_2": "second-reader-token"}

ACCESS: dict[str, Any] = {
    "sources": {
        **SOURCES["sources"],
        # Defaults but a tight rate: 2 at once, then one every 100 s.
        "throttled": {"format": "alertmanager", "auth": {"type": "bearer", "token_env": "FIREBREAK_TEST_AM_TOKEN"},
                      "rate_limit": {"per_second": 0.01, "burst": 2}},
        # Limits of its own, smaller than the defaults.
        "small": {"format": "alertmanager", "auth": {"type": "bearer", "token_env": "FIREBREAK_TEST_AM_TOKEN"},
                  "limits": {"max_labels": 5, "max_total_bytes": 3000}, "rate_limit": None},
    },
    "readers": {
        **SOURCES["readers"],
        "dashboard": {"token_env": "FIREBREAK_TEST_READ_TOKEN_2", "rate_limit": {"per_second": 0.01, "burst": 3}},
    },
    "operators": SOURCES["operators"],
}
ROUTE = {"runbook": None, "routes": [
    {"name": "outage", "matchers": ['alertname = "ServiceDown"'], "runbook": "system-outage",
     "parameters": {"service_url": '{{ labels.ops_api | default("http://127.0.0.1:8765") }}'}},
]}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def intake(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIntake]:
    directory = tmp_path_factory.mktemp(f"security-{request.param}")
    sources, routes = write_config(directory, ROUTE, ACCESS)
    with ExitStack() as stack:
        stack.enter_context(environment(**TOKENS, **THROTTLED_READER))
        if request.param == "sqlite":
            stack.enter_context(own_records_database(directory))
        else:
            stack.enter_context(records_database_at(stack.enter_context(temporary_database())))
        yield stack.enter_context(RunningIntake(sources, routes, executor="none", max_body_bytes=2_000_000))


def stored() -> tuple[int, int, int]:
    """Alerts, seen signatures and incidents in the records."""
    with session_scope() as session:
        return (session.scalar(select(func.count()).select_from(Alert)) or 0,
                session.scalar(select(func.count()).select_from(SeenSignature)) or 0,
                session.scalar(select(func.count()).select_from(Incident)) or 0)


def unique(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


def am_body(fingerprint: str | None = None, labels: dict[str, Any] | None = None,
            annotations: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "firebreak",
            "alerts": [{"status": "firing", "labels": {"alertname": "Hostile", **(labels or {})},
                        "annotations": {"summary": "s", **(annotations or {})}, "startsAt": "2026-11-23T09:00:00Z",
                        "fingerprint": fingerprint or unique("fp")}]}


def grafana_body(values: Any) -> dict[str, Any]:
    return {"receiver": "firebreak", "status": "firing", "version": "1", "orgId": 1,
            "alerts": [{"status": "firing", "labels": {"alertname": "QueueBacklog"}, "fingerprint": unique("gf"),
                        "values": values}]}


def pd_event(**payload: Any) -> dict[str, Any]:
    return {"routing_key": TOKENS["FIREBREAK_TEST_PD_KEY"], "event_action": "trigger", "dedup_key": unique("pd"),
            "payload": {"summary": "s", "source": "h", "severity": "error", **payload}}


def generic_body(**fields: Any) -> dict[str, Any]:
    return {"summary": "generic", "dedup_key": unique("gen"), **fields}


def signed(body: bytes, stamp: int | None = None) -> dict[str, str]:
    timestamp, signature = sign(TOKENS["FIREBREAK_TEST_HMAC"], body, stamp)
    return {"X-Firebreak-Timestamp": timestamp, "X-Firebreak-Signature": signature}


PATHS = {"alertmanager": "/v1/alerts/alertmanager", "grafana": "/v1/alerts/grafana", "pagerduty": "/v2/enqueue",
         "generic": "/v1/alerts/generic"}


def post(intake: RunningIntake, endpoint: str, body: bytes, content_type: str | None = "application/json",
         **extra: str) -> httpx.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    headers.update({"alertmanager": AM_AUTH, "grafana": GRAFANA_AUTH}.get(endpoint, {}))
    if endpoint == "generic":
        headers.update(signed(body))
    return httpx.post(f"{intake.url}{PATHS[endpoint]}", content=body, headers={**headers, **extra}, timeout=60)


def raw(document: Any, **replace: str) -> bytes:
    """JSON text of `document` with placeholder strings swapped for raw JSON (NaN, 10**5000 …)."""
    text_ = json.dumps(document)
    for placeholder, replacement in replace.items():
        text_ = text_.replace(json.dumps(placeholder), replacement)
    return text_.encode()


def fields(response: httpx.Response) -> list[str]:
    body = response.json()
    if "details" in body:
        return [d["field"] for d in body["details"]]
    return [e.split(": ", 1)[0] for e in body["errors"]]  # PagerDuty's shape


# --- 1. hostile but valid JSON -----------------------------------------------------------------------------------


NESTED = '{"a":' * 900 + "1" + "}" * 900
HOSTILE = [
    ("alertmanager", json.dumps(am_body(annotations={"summary": "a\u0000b"})).encode(), "alerts[0].annotations.summary"),
    ("alertmanager", json.dumps(am_body(labels={"te\u0000am": "x"})).encode(), 'alerts[0].labels["te\\u0000am"]'),
    ("grafana", raw(grafana_body({"B": "@nan@"}), **{"@nan@": "NaN"}), "alerts[0].values.B"),
    ("grafana", raw(grafana_body({"B": "@inf@"}), **{"@inf@": "-Infinity"}), "alerts[0].values.B"),
    ("grafana", json.dumps(grafana_body({"B": "NaN"})).encode(), "alerts[0].values.B"),  # the string form
    ("alertmanager", raw({**am_body(), "truncatedAlerts": "@big@"}, **{"@big@": "9" * 5000}), "truncatedAlerts"),
    ("grafana", raw({**grafana_body(None), "orgId": "@big@"}, **{"@big@": "-" + "1" * 5000}), "orgId"),
    ("pagerduty", raw(pd_event(custom_details={"n": "@big@"}), **{"@big@": "1" * 5000}), "payload.custom_details.n"),
    ("generic", raw(generic_body(labels={"x": "@big@"}), **{"@big@": "1" * 5000}), "labels.x"),
    ("generic", json.dumps(generic_body(labels={"team": "\ud800"})).encode(), "labels.team"),
    ("pagerduty", json.dumps(pd_event(summary="lone \udfff")).encode(), "payload.summary"),
    ("generic", raw(generic_body(parameters={"p": "@deep@"}), **{"@deep@": NESTED}), "parameters.p.a.a.a"),
    ("pagerduty", raw(pd_event(custom_details={"d": "@deep@"}), **{"@deep@": NESTED}), "payload.custom_details.d"),
    ("generic", b'{"summary": "a", "summary": "b"}', "summary"),  # a key given twice
]


@pytest.mark.parametrize("endpoint, body, field", HOSTILE,
                         ids=["nul-in-value", "nul-in-key", "nan", "minus-infinity", "nan-string", "5000-digits",
                              "5000-digits-negative", "5000-digits-custom-details", "5000-digits-generic",
                              "lone-surrogate", "lone-surrogate-pagerduty", "nested-900-generic",
                              "nested-900-pagerduty", "duplicate-key"])
def test_hostile_json_is_refused_naming_the_field_and_stores_nothing(intake: RunningIntake, endpoint: str,
                                                                     body: bytes, field: str) -> None:
    before = stored()
    response = post(intake, endpoint, body)
    assert response.status_code == (400 if endpoint == "pagerduty" else 422), response.text
    assert any(f.startswith(field) for f in fields(response)), (field, response.text[:500])
    assert stored() == before


@pytest.mark.parametrize("endpoint", list(PATHS))
def test_only_json_content_types_are_accepted(intake: RunningIntake, endpoint: str) -> None:
    body = json.dumps({"alertmanager": am_body(), "grafana": grafana_body({"B": 1.5}), "pagerduty": pd_event(),
                       "generic": generic_body()}[endpoint]).encode()
    before = stored()
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1",
                         "application/jsonx"):
        response = post(intake, endpoint, body, content_type)
        assert response.status_code == 415, (content_type, response.text)
    assert stored() == before
    # What the monitors send: Alertmanager, Grafana and PagerDuty clients say application/json, some with a charset.
    response = post(intake, endpoint, body, "application/json; charset=utf-8")
    assert response.status_code == 202, response.text
    assert stored()[0] == before[0] + 1


def test_an_incident_id_that_cannot_exist_is_unknown_without_asking_the_store(intake: RunningIntake) -> None:
    for weird in ("%00", "%ED%A0%80", "x" * 300, "a%20b"):
        response = httpx.get(f"{intake.url}/v1/incidents/{weird}", headers=READ_AUTH)
        assert response.status_code == 404, (weird, response.text)


# --- 2. what an alert may set --------------------------------------------------------------------------------------


def test_an_alert_cannot_set_the_service_url(intake: RunningIntake) -> None:
    before = stored()
    for parameters in ({"service_url": "http://169.254.169.254/latest"}, {"service_url": "http://127.0.0.1:8765"},
                       {"failed_node": "../admin"}):
        body = json.dumps(generic_body(runbook="system-outage", parameters=parameters)).encode()
        response = post(intake, "generic", body)
        assert response.status_code == 422, response.text
        (detail,) = response.json()["details"]
        name = next(iter(parameters))
        assert detail["field"] == f"parameters.{name}"
        assert "does not let an alert set it" in detail["reason"] and "affected_service" in detail["reason"]
    assert stored() == before


def test_an_alert_may_set_what_the_runbook_declares_from_alert(intake: RunningIntake) -> None:
    body = json.dumps(generic_body(runbook="system-outage",
                                   parameters={"affected_service": "hotline", "affected_customers": 20000})).encode()
    response = post(intake, "generic", body)
    assert response.status_code == 202, response.text
    incident = get_incident(response.json()["alerts"][0]["incident_id"])
    assert incident.parameters["affected_service"] == "hotline" and incident.level == "I"
    assert incident.parameters["service_url"] == "http://127.0.0.1:8765"  # the runbook's default, not the alert's


def test_a_route_that_copies_a_label_into_the_url_cannot_leave_the_allowed_hosts(intake: RunningIntake) -> None:
    before = stored()
    for url in ("http://169.254.169.254", "http://evil.example.com:8765", "http://127.0.0.1@evil.example.com",
                "http://127.0.0.1:8765/?next=http://evil", "file:///etc/passwd"):
        response = post(intake, "alertmanager", json.dumps(am_body(labels={"alertname": "ServiceDown",
                                                                           "ops_api": url})).encode())
        assert response.status_code == 422, (url, response.text)
        (detail,) = response.json()["details"]
        assert detail["field"] == "alerts[0]" and "service_url" in detail["reason"], detail
    assert stored() == before
    allowed = post(intake, "alertmanager", json.dumps(am_body(labels={"alertname": "ServiceDown",
                                                                      "ops_api": "http://127.0.0.1:9999"})).encode())
    assert allowed.status_code == 202 and allowed.json()["alerts"][0]["disposition"] == "opened", allowed.text


def test_a_route_with_a_fixed_url_outside_the_allowed_hosts_does_not_load(tmp_path: Path) -> None:
    from intake.routing import RoutesInvalid, load_routes

    _, routes = write_config(tmp_path, {"routes": [{"name": "fixed", "matchers": ["a=b"], "runbook": "system-outage",
                                                    "parameters": {"service_url": "http://evil.example.com"}}]})
    with pytest.raises(RoutesInvalid, match="route 'fixed': parameter service_url: URL host evil.example.com:80"):
        load_routes(routes)


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:8765", None),
    ("https://LOCALHOST", None),
    ("http://evil.example.com", "not in the runbook's allowed_hosts"),
    ("http://127.0.0.1.evil.example.com", "not in the runbook's allowed_hosts"),
    ("http://127.0.0.1@evil.example.com", "credentials"),
    ("http://evil.example.com#@127.0.0.1", "without ?query or #fragment"),
    ("http://127.0.0.1\\@evil.example.com", "backslashes"),
    ("http://127.0.0.1 /x", "whitespace"),
    ("ftp://127.0.0.1", "http:// or https://"),
    ("http://2130706433", "not in the runbook's allowed_hosts"),  # 127.0.0.1 written as a number
    ("http://[::1]:8765", "not in the runbook's allowed_hosts"),
    ("http://127.0.0.1:99999", "not a valid URL"),
])
def test_url_checks(url: str, problem: str | None) -> None:
    found = url_problem(url, ["127.0.0.1", "localhost"])
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_allowed_host_patterns() -> None:
    assert url_problem("https://a.ops.example.com", ["*.ops.example.com"]) is None
    assert url_problem("https://ops.example.com", ["*.ops.example.com"]) is not None
    assert url_problem("https://ops.example.com:8443", ["ops.example.com:8443"]) is None
    assert url_problem("https://ops.example.com", ["ops.example.com:8443"]) is not None
    assert url_problem("http://[::1]:1", ["[::1]"]) is None


URL_RUNBOOK = """id: composed-url
title: A URL built from templates
description: Which URL templates fix the host a request goes to.
version: "1"
parameters:
  service_url:
    type: string
    format: url
    description: Base URL.
    default: http://127.0.0.1:8765
  path:
    type: string
    description: Where on the service.
    default: health
    from_alert: true
allowed_hosts: [127.0.0.1]
level:
  default: II
roles: [technical_support]
steps:
  - id: probe
    action: http
    with:
      url: {url}
"""


@pytest.mark.parametrize("url, refused", [
    ('"{{ params.service_url }}/{{ params.path }}"', None),
    ('"{{params.service_url}}"', None),
    ('"http://127.0.0.1:8765/{{ params.path }}"', None),
    # The alert sets `path`: "@evil.example.com" makes the first request go to evil.example.com.
    ('"{{ params.service_url }}{{ params.path }}"', "only a `/` may follow {{ params.service_url }}"),
    ('"{{ params.service_url }}:9999/x"', "only a `/` may follow"),
    ('"{{ params.service_url ~ params.path }}"', "the URL's host is made by a template"),
    ('"http://127.0.0.1{{ params.path }}/x"', "the URL's host is made by a template"),
    ('"http://{% if true %}127.0.0.1{% endif %}/x"', "the URL's host is made by a template"),
])
def test_a_url_template_cannot_let_a_value_choose_the_host(tmp_path: Path, url: str, refused: str | None) -> None:
    """allowed_hosts checks the `format: url` parameter; a step URL that appends another value to it (or
    builds the host from templates) would let whoever sets that value choose the host all the same."""
    from tasks.catalog import validate_file

    path = tmp_path / "composed-url.yaml"
    path.write_text(URL_RUNBOOK.format(url=url))
    _loaded, problems = validate_file(path)
    found = [p for p in problems if p.field == "steps[0].with.url"]
    if refused is None:
        assert not found, found
    else:
        assert len(found) == 1 and refused in found[0].message and found[0].line == 24, problems


def test_operator_runs_are_held_to_the_allowed_hosts_too(tmp_path: Path) -> None:
    model = library.parameter_model(_seed("system-outage"))
    model.model_validate({"service_url": "http://localhost:8765"})
    with pytest.raises(Exception, match="allowed_hosts"):
        model.model_validate({"service_url": "http://evil.example.com"})
    # The CLI refuses before any Prefect server or run is involved.
    result = subprocess.run([sys.executable, "-m", "firebreak", "run", "system-outage", "--param",
                             "service_url=http://169.254.169.254"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert result.returncode != 0
    assert "service_url" in result.stderr and "allowed_hosts" in result.stderr, result.stderr[-2000:]


@pytest.mark.usefixtures("prefect_server")
def test_the_engine_refuses_a_url_outside_the_allowed_hosts_before_opening_an_incident() -> None:
    from flows.engine import run_runbook

    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(Incident))
    state = run_runbook(runbook="system-outage", parameters={"service_url": "http://evil.example.com"},
                        return_state=True)
    assert state.is_failed()
    assert "allowed_hosts" in str(state.message) or "allowed_hosts" in repr(state.result(raise_on_failure=False))
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == before


def _seed(runbook_id: str) -> Any:
    from tasks.catalog import load_runbook

    return load_runbook(runbook_id).runbook


def test_seed_runbooks_declare_their_url_and_what_alerts_may_set() -> None:
    for runbook_id in ("system-outage", "network-congestion", "staffing-shortage"):
        runbook = _seed(runbook_id)
        assert runbook.parameters["service_url"].format == "url"
        assert not runbook.parameters["service_url"].from_alert
        assert "127.0.0.1" in runbook.allowed_hosts  # the simulator: drills and `make demo`
    outage = _seed("system-outage")
    assert {n for n, p in outage.parameters.items() if p.from_alert} == {"affected_service", "affected_customers"}


# --- 3. limits inside the body -------------------------------------------------------------------------------------


def test_label_and_annotation_limits_name_the_field_and_store_nothing(intake: RunningIntake) -> None:
    before = stored()
    cases = [
        ("alertmanager", am_body(labels={f"l{i}": "v" for i in range(10_000)}), 422, "alerts[0].labels",
         "has 10001 labels; the limit is 64"),
        ("alertmanager", am_body(annotations={"description": "d" * 1_000_000}), 422,
         "alerts[0].annotations.description", "value is 1000000 characters; the limit is 16384"),
        ("alertmanager", am_body(labels={"k" * 200: "v"}), 422, "alerts[0].labels[", "key is 200 characters"),
        ("grafana", {**grafana_body(None), "commonLabels": {f"l{i}": "v" for i in range(100)}}, 422, "commonLabels",
         "has 100 labels"),
        ("pagerduty", pd_event(custom_details={f"d{i}": i for i in range(100)}), 400, "payload.custom_details",
         "has 100 labels"),
        ("generic", generic_body(labels={"x": "v" * 2000}), 422, "labels.x", "value is 2000 characters"),
        # Each label within its limits, together over the total an alert may store: 413.
        ("alertmanager", am_body(labels={f"l{i}": "v" * 1000 for i in range(60)}), 413, "alerts[0]",
         "the limit is 65536"),
    ]
    for endpoint, document, status, field, reason in cases:
        response = post(intake, endpoint, json.dumps(document).encode())
        assert response.status_code == status, (field, response.text[:300])
        text_ = response.text
        assert field in text_ and reason in text_, (field, reason, text_[:500])
    assert stored() == before


def test_limits_are_configured_per_source(intake: RunningIntake) -> None:
    six = json.dumps(am_body(labels={f"l{i}": "v" for i in range(5)})).encode()  # with alertname: 6 labels
    before = stored()
    small = httpx.post(f"{intake.url}/v1/alerts/small", content=six, headers={**AM_AUTH, **JSON})
    assert small.status_code == 422 and small.json()["details"][0]["field"] == "alerts[0].labels"
    assert "the limit is 5" in small.json()["details"][0]["reason"]
    assert stored() == before
    assert post(intake, "alertmanager", six).status_code == 202  # the default limits take it


# --- 4. readers authenticate; rate limits -------------------------------------------------------------------------


def test_readers_authenticate_before_anything_is_looked_up(intake: RunningIntake) -> None:
    opened = post(intake, "generic", json.dumps(generic_body(runbook="system-outage")).encode())
    existing = opened.json()["alerts"][0]["incident_id"]
    answers = {}
    for path in ("/v1/incidents", f"/v1/incidents/{existing}", "/v1/incidents/INC-1999-9999"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, AM_AUTH, {"Authorization": "Basic !!"}):
            response = httpx.get(f"{intake.url}{path}", headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            answers.setdefault(json.dumps(headers), set()).add(response.text)
    # Unknown and existing incidents look the same to an unauthenticated caller.
    assert all(len(texts) == 1 for texts in answers.values()), answers
    assert httpx.get(f"{intake.url}/v1/incidents/{existing}", headers=READ_AUTH).json()["id"] == existing
    assert httpx.get(f"{intake.url}/v1/incidents/INC-1999-9999", headers=READ_AUTH).status_code == 404
    assert httpx.get(f"{intake.url}/v1/incidents?limit=0").status_code == 401  # not 422: the token comes first


def test_no_credential_tells_whether_an_incident_exists_anywhere(intake: RunningIntake) -> None:
    """The reports and the operator actions, like the incidents API: without the right credential an
    incident that exists and one that does not get the same answer."""
    opened = post(intake, "generic", json.dumps(generic_body(runbook="system-outage")).encode())
    existing = opened.json()["alerts"][0]["incident_id"]
    for method, template in (("GET", "/reports/{}"), ("GET", "/reports/{}/pdf"), ("POST", "/v1/incidents/{}/note")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, AM_AUTH, READ_AUTH if method == "POST" else {}):
            answers = {httpx.request(method, f"{intake.url}{template.format(incident)}", headers={**headers, **JSON},
                                     content=b'{"text": "x"}' if method == "POST" else None)
                       for incident in (existing, "INC-1999-9999")}
            shown = {(a.status_code, a.text) for a in answers}
            assert len(shown) == 1 and next(iter(shown))[0] == 401, (method, template, headers, shown)


def test_an_operator_action_on_an_id_that_cannot_exist_is_unknown_not_a_500(intake: RunningIntake) -> None:
    """Such an id reached the store: on PostgreSQL a NUL in it failed the query (500)."""
    operator = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_OPERATOR_LI_WEI']}", **JSON}
    before = stored()
    for weird in ("INC%00x", "%00", "x" * 300, "INC-2026-0001%00", "%ED%A0%80"):
        response = httpx.post(f"{intake.url}/v1/incidents/{weird}/note", content=b'{"text": "hello"}',
                              headers=operator)
        assert response.status_code == 404 and response.json()["error"].startswith("no incident"), \
            (weird, response.text[:300])
    assert httpx.post(f"{intake.url}/v1/incidents/INC-1999-9999/note", content=b'{"text": "hello"}',
                      headers=operator).status_code == 404  # well formed, unknown: asked, and not found
    assert stored() == before


def test_a_refused_query_value_names_its_field_like_every_other_refusal(intake: RunningIntake) -> None:
    for path, field in (("/v1/incidents?limit=abc", "query.limit"), ("/v1/incidents?limit=" + "9" * 30, "query.limit"),
                        ("/v1/incidents?limit=%00", "query.limit"), ("/reports/?lang=fr", "query.lang")):
        response = httpx.get(f"{intake.url}{path}", headers=READ_AUTH)
        assert response.status_code == 422, (path, response.text)
        answer = response.json()
        assert [d["field"] for d in answer["details"]] == [field] and answer["details"][0]["reason"], answer
        assert field in answer["error"]


def test_docs_and_openapi_need_a_read_token(intake: RunningIntake) -> None:
    for path in ("/docs", "/openapi.json"):
        response = httpx.get(f"{intake.url}{path}")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic ")  # a browser asks for name and token
    assert httpx.get(f"{intake.url}/redoc").status_code == 404
    assert "swagger" in httpx.get(f"{intake.url}/docs", headers=READ_AUTH).text.lower()
    basic = "Basic " + base64.b64encode(f"tests:{TOKENS['FIREBREAK_TEST_READ_TOKEN']}".encode()).decode()
    schema = httpx.get(f"{intake.url}/openapi.json", headers={"Authorization": basic}).json()
    assert "/v1/incidents" in schema["paths"]
    wrong = "Basic " + base64.b64encode(f"dashboard:{TOKENS['FIREBREAK_TEST_READ_TOKEN']}".encode()).decode()
    assert httpx.get(f"{intake.url}/docs", headers={"Authorization": wrong}).status_code == 401
    # Liveness and readiness stay open for load balancers.
    assert httpx.get(f"{intake.url}/healthz").status_code == 200


def test_readers_are_rate_limited_per_token(intake: RunningIntake) -> None:
    dashboard = {"Authorization": f"Bearer {THROTTLED_READER['FIREBREAK_TEST_READ_TOKEN_2']}"}
    answers = [httpx.get(f"{intake.url}/v1/incidents", headers=dashboard) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert httpx.get(f"{intake.url}/v1/incidents", headers=READ_AUTH).status_code == 200  # another token's bucket


def test_sources_are_rate_limited(intake: RunningIntake) -> None:
    before = stored()
    answers = [httpx.post(f"{intake.url}/v1/alerts/throttled", content=json.dumps(am_body()).encode(),
                          headers={**AM_AUTH, **JSON}) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 429], [a.text for a in answers]
    assert int(answers[-1].headers["Retry-After"]) >= 1 and "Retry-After" not in answers[0].headers
    assert stored()[0] == before[0] + 2  # the refused one stored nothing
    assert post(intake, "alertmanager", json.dumps(am_body()).encode()).status_code == 202  # its own bucket


def test_without_readers_nobody_reads(tmp_path: Path) -> None:
    sources, routes = write_config(tmp_path, {"runbook": None}, {"sources": SOURCES["sources"]})
    with own_records_database(tmp_path), RunningIntake(sources, routes, executor="none") as running:
        assert httpx.get(f"{running.url}/v1/incidents", headers=READ_AUTH).status_code == 401


# --- 7. the HMAC replay window and signature retention -----------------------------------------------------------


AUTH = HmacAuth(type="hmac", secret_env="FIREBREAK_TEST_HMAC", replay_window_seconds=46_800)  # 13 h


def _headers(body: bytes, stamp: float) -> dict[str, str]:
    timestamp, signature = sign(TOKENS["FIREBREAK_TEST_HMAC"], body, int(stamp))
    return {"x-firebreak-timestamp": timestamp, "x-firebreak-signature": signature}


def test_only_a_small_future_skew_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREBREAK_TEST_HMAC", TOKENS["FIREBREAK_TEST_HMAC"])
    now = 1_800_000_000.0
    body = b'{"summary": "s"}'
    verify_hmac("generic", AUTH, _headers(body, now + 59), body, now=now)  # clock skew: fine
    for ahead in (61, 3600, 46_000):  # the window no longer reaches forward: 13 h ahead was accepted before
        with pytest.raises(AuthFailed, match="ahead of this server's clock"):
            verify_hmac("generic", AUTH, _headers(body, now + ahead), body, now=now)
    with pytest.raises(AuthFailed, match="not Unix seconds"):
        verify_hmac("generic", AUTH, {**_headers(body, now), "x-firebreak-timestamp": "nan"}, body, now=now)


@settings(max_examples=300, deadline=None, database=None)
@given(window=st.integers(1, 86_400), skew=st.integers(0, 300), sent_offset=st.integers(-90_000, 90_000),
       later=st.integers(0, 200_000))
def test_a_signature_never_verifies_after_its_expiry(window: int, skew: int, sent_offset: int, later: int) -> None:
    """What records.signatures relies on to forget a signature at `expires_at`: from then on, the
    timestamp check alone refuses the request."""
    with environment(FIREBREAK_TEST_HMAC=TOKENS["FIREBREAK_TEST_HMAC"]):
        _check_expiry(window, skew, sent_offset, later)


def _check_expiry(window: int, skew: int, sent_offset: int, later: int) -> None:
    auth = HmacAuth(type="hmac", secret_env="FIREBREAK_TEST_HMAC", replay_window_seconds=window,
                    future_skew_seconds=skew)
    body, now = b"{}", 1_800_000_000.0
    headers = _headers(body, now + sent_offset)
    try:
        verified = verify_hmac("generic", auth, headers, body, now=now)
    except AuthFailed:
        return
    assert verified.expires_at is not None and verified.sent_at is not None
    assert verified.expires_at == verified.sent_at + window
    after_expiry = verified.expires_at + 1 + later
    with pytest.raises(AuthFailed):
        verify_hmac("generic", auth, headers, body, now=after_expiry)


def test_pruning_keeps_a_signature_until_its_timestamp_refuses_it(intake: RunningIntake) -> None:
    body = json.dumps(generic_body()).encode()
    headers = {**signed(body), **JSON}
    assert httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=headers).status_code == 202
    with session_scope() as session:
        row = session.scalars(select(SeenSignature).order_by(SeenSignature.seen_at.desc())).first()
    assert row is not None and row.expires_at == row.sent_at + timedelta(seconds=60)  # the harness's window
    # Pruning now (or with the dispatcher's 25 h retention) forgets nothing that could still verify.
    forget_signatures_before(utcnow())
    forget_signatures_before(utcnow() - timedelta(days=1, hours=1))
    replay = httpx.post(f"{intake.url}/v1/alerts/generic", content=body, headers=headers)
    assert replay.status_code == 401 and "replayed" in replay.json()["error"]
    # Once expired it is forgotten, and by then its timestamp alone refuses the request.
    forget_signatures_before(row.expires_at + timedelta(seconds=1))
    with session_scope() as session:
        assert session.get(SeenSignature, row.signature) is None
    generic = HmacAuth(type="hmac", secret_env="FIREBREAK_TEST_HMAC", replay_window_seconds=60)
    lowered = {k.lower(): v for k, v in headers.items()}
    with pytest.raises(AuthFailed, match="too old"):
        verify_hmac("generic", generic, lowered, body, now=row.expires_at.timestamp() + 1)


# --- 8. the same signature at two replicas at once -----------------------------------------------------------------


def _request(signature: str) -> alert_ingest.IngestRequest:
    alert = IncomingAlert(source="generic", format="generic", fingerprint=f"generic/{signature}", status="firing",
                          summary="race")
    return alert_ingest.IngestRequest([(alert, RunPlan(route="test", runbook_id=None))], signature, "generic",
                                      time.time(), time.time() + 60)


def test_a_signature_recorded_meanwhile_is_a_replay_on_both_databases(intake: RunningIntake) -> None:
    """The insert itself decides: a signature another transaction recorded after this one looked is
    skipped (ON CONFLICT DO NOTHING), and its request is refused as replayed, not failed."""
    signature = f"generic:{unique('meanwhile')}"
    alert_ingest.ingest_many([_request(signature)])
    with session_scope() as session:
        from records.signatures import _insert_new

        row = {"signature": signature, "source": "generic", "seen_at": utcnow(), "sent_at": utcnow(),
               "expires_at": utcnow()}
        assert _insert_new(session, [row]) == set()
    (outcome,) = alert_ingest.ingest_many([_request(signature)])
    assert isinstance(outcome, SignatureReplayed)


def test_two_postgresql_writers_with_one_signature_one_wins_the_other_is_replayed() -> None:
    with temporary_database() as url:
        from records.db import migrate

        migrate(url)
        request = _request(f"generic:{unique('race')}")
        with ThreadPoolExecutor(1) as pool, session_scope(url) as first:
            assert replayed_signatures(first, [request]) == set()
            first.flush()  # first holds the row, not committed yet

            def second() -> set[int]:
                with session_scope(url) as session:  # its SELECT misses the uncommitted row; its INSERT waits
                    return replayed_signatures(session, [request])

            waiting = pool.submit(second)
            wait_for(lambda: _lock_waiters(url) >= 1, what="the second writer to wait for the first")
        # The first committed on leaving its block: the second's insert found the row and skipped it.
        assert waiting.result(timeout=30) == {id(request)}


def _lock_waiters(url: str) -> int:
    with session_scope(url) as probe:  # a new transaction each time: pg_stat_activity is a snapshot per transaction
        return probe.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                  "AND datname = current_database()")).scalar() or 0


def test_two_replicas_receiving_one_signed_request_answer_202_once_and_401_else(tmp_path: Path) -> None:
    with environment(**TOKENS), temporary_database() as url, records_database_at(url):
        sources, routes = write_config(tmp_path, {"runbook": None})
        with RunningIntake(sources, routes, executor="none") as a, RunningIntake(sources, routes,
                                                                                executor="none") as b:
            for attempt in range(5):
                body = json.dumps(generic_body()).encode()
                headers = {**signed(body), **JSON}
                start = threading.Barrier(16)

                def send(index: int, start: threading.Barrier = start, body: bytes = body,
                         headers: dict[str, str] = headers) -> int:
                    start.wait()
                    replica = a if index % 2 else b
                    return httpx.post(f"{replica.url}/v1/alerts/generic", content=body, headers=headers,
                                      timeout=60).status_code

                with ThreadPoolExecutor(16) as pool:
                    statuses = sorted(pool.map(send, range(16)))
                assert statuses == [202] + [401] * 15, (attempt, statuses)
