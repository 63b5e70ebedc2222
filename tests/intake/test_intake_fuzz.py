"""Property-based fuzzing of the intake's four endpoints with hostile bodies (issue 10), on SQLite
and PostgreSQL, over real HTTP (the harness's uvicorn server) with valid credentials, so the body
is what is tested.

Bodies are valid-shaped payloads of each format with hostile leaves (NUL characters, lone
surrogates, huge integers, NaN and Infinity, deep nesting, huge label maps, long keys and values,
wrong types, parameters an alert may not set, URLs to other hosts), plus raw byte garbage, JSON
that is not the format, and wrong content types. Every response must be below 500, the server
must stay up, a refused (4xx) request must store nothing (the row count of every table of the
records is the same after it as before), and a 422 (PagerDuty: 400 with a body) names the field.

`FIREBREAK_FUZZ_EXAMPLES` sets the bodies per endpoint and database (default 400: 1,600 per
database, on SQLite and on PostgreSQL each, 3,200 a run; set it higher for a longer hunt, as
`make fuzz` does with 10,000). The default was 2,500 until the suite had to fit CI's time limit: those
bodies cost about six minutes of the suite's CPU. The
figures (bodies per endpoint and database, status counts) are printed at the end of the module.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from intake.sources import sign
from records.db import session_scope
from tests.environment import environment
from tests.intake_harness import TOKENS, RunningIntake, own_records_database, write_config
from tests.postgres import temporary_database
from tests.records_env import records_database_at

EXAMPLES = int(os.environ.get("FIREBREAK_FUZZ_EXAMPLES", "400"))
ENDPOINTS = ("alertmanager", "grafana", "pagerduty", "generic")

#: Routes that start seed runbooks, one of them copying a label into the URL parameter, so accepted
#: alerts open incidents and alert-supplied URLs meet the allowed_hosts check.
ROUTE = {"runbook": None, "routes": [
    {"name": "outage", "matchers": ['alertname =~ "ServiceDown|InstanceDown"'], "runbook": "system-outage",
     "parameters": {"affected_service": '{{ labels.service | default("online_chat") }}',
                    "service_url": '{{ labels.ops_api | default("http://127.0.0.1:8765") }}'}},
    {"name": "congestion", "match": {"alertname": "QueueBacklog"}, "runbook": "network-congestion"},
    {"name": "pd-critical", "matchers": ['severity="critical"'], "runbook": "system-outage", "level": "I"},
]}

FIGURES: dict[str, dict[str, Counter[int]]] = defaultdict(lambda: defaultdict(Counter))


# --- the intake under test, once per database ---------------------------------------------------------------


@dataclass
class Target:
    database: str
    intake: RunningIntake
    client: httpx.Client
    url: str
    #: Every table of the records (alerts, signatures and incidents first), so "stored nothing" means nothing.
    tables: list[str] = field(default_factory=list)

    def counts(self) -> tuple[int, ...]:
        if not self.tables:
            with session_scope() as session:
                names = inspect(session.get_bind()).get_table_names()
            first = ["alerts", "intake_signatures", "incidents"]
            self.tables = first + sorted(set(names) - set(first))
        query = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{name}")' for name in self.tables)
        with session_scope() as session:
            return tuple(int(value) for value in session.execute(text(query)).one())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    sources, routes = write_config(directory, ROUTE)
    with ExitStack() as stack:
        stack.enter_context(environment(**TOKENS))
        if request.param == "sqlite":
            stack.enter_context(own_records_database(directory))
        else:
            stack.enter_context(records_database_at(stack.enter_context(temporary_database())))
        # A body limit above the label limits, so huge label maps meet those (not the 413 of the body).
        intake = stack.enter_context(RunningIntake(sources, routes, executor="none", max_body_bytes=600_000))
        client = stack.enter_context(httpx.Client(base_url=intake.url, timeout=60))
        yield Target(request.param, intake, client, intake.url)
        # The server stays up: alive, healthy, and still accepting a valid alert.
        assert intake.thread.is_alive()
        assert client.get("/healthz").json() == {"status": "ok"}
        body = json.dumps(valid_alertmanager(f"after-{time.time_ns()}")).encode()
        after = client.post("/v1/alerts/alertmanager", content=body, headers=headers_for("alertmanager", body))
        assert after.status_code == 202, after.text


@pytest.fixture(scope="module", autouse=True)
def print_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    lines = ["", "intake fuzzing: bodies tried per endpoint and database, by status"]
    total = 0
    for database, endpoints in FIGURES.items():
        for endpoint, statuses in endpoints.items():
            tried = sum(statuses.values())
            total += tried
            shown = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
            lines.append(f"  {database:<10} {endpoint:<12} {tried:>6} bodies   {shown}")
        per_database = sum(sum(s.values()) for s in endpoints.values())
        lines.append(f"  {database:<10} {'(all)':<12} {per_database:>6} bodies   "
                     f"5xx: {sum(c for s in endpoints.values() for st_, c in s.items() if st_ >= 500)}")
    lines.append(f"  total {total} bodies")
    # Shown even under output capture (pytest -q), so the figures can be quoted.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines), flush=True)


# --- JSON with hostile leaves ------------------------------------------------------------------------------


class Raw(str):
    """JSON text written as it is: numbers json.dumps refuses to write (10**5000, NaN spelled out,
    1e999) and nesting deeper than it can recurse."""


def encode(value: Any, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict) and all(type(item) is str for item in value.values()):  # label maps: fast
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode(str(k), ascii_only)}:{encode(v, ascii_only)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode(v, ascii_only) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return json.dumps(value, ensure_ascii=ascii_only)


def to_bytes(value: Any, ascii_only: bool) -> bytes:
    # surrogatepass: a lone surrogate written raw (not escaped) becomes invalid UTF-8, as a hostile sender's would.
    return encode(value, ascii_only).encode("utf-8", "surrogatepass")


NASTY_STRINGS = ["\x00", "a\x00b", "\ud800", "x\udfff", "\ud83d", "\udc00\ud800", "\u202e", "\ufeff", "\\", '"',
                 "{{ 7*7 }}", "{% raw %}", "'; DROP TABLE alerts; --", "\x7f\x1b[31m", "ok\u2028ok", "🔥" * 50,
                 "\U0010ffff", "%00", "../../etc/passwd", ""]
HOSTILE_NUMBERS = [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e999"), Raw("-1e400"), Raw("1E+400"),
                   Raw("9223372036854775808"), Raw("-9223372036854775809"), float("nan"), float("inf")]
HOSTILE_URLS = ["http://169.254.169.254/latest/meta-data", "http://evil.example.com", "http://127.0.0.1@evil.example",
                "http://127.0.0.1:8765/?x", "file:///etc/passwd", "gopher://127.0.0.1:25", "http://127.0.0.1\\@evil",
                "http://[::1]:8765", "http://127.0.0.1:8765", "javascript:alert(1)", "http://LOCALHOST:1"]

hostile_text = st.one_of(st.text(max_size=30), st.sampled_from(NASTY_STRINGS),
                         st.text(st.characters(codec=None, categories=["Cs", "Cc", "Cf", "Co", "Zl"]), max_size=8),
                         st.integers(100, 40_000).map(lambda n: "x" * n))
huge_int = st.integers(20, 6000).map(lambda digits: Raw("-" * (digits % 2) + "9" * digits))
deep = st.one_of(st.integers(33, 3000).map(lambda n: Raw("[" * n + "]" * n)),
                 st.integers(33, 1500).map(lambda n: Raw('{"a":' * n + "1" + "}" * n)),
                 st.integers(33, 200).map(lambda n: Raw('{"b":[' * n + "0" + "]}" * n)))
label_map = st.one_of(
    st.sampled_from([65, 1000, 10_000]).map(lambda n: {f"label_{i}": "v" for i in range(n)}),
    st.integers(100, 3000).map(lambda n: {"k" * n: "v"}),
    st.integers(1000, 300_000).map(lambda n: {"description": "d" * n}),
    st.integers(30, 64).map(lambda n: {f"label_{i}": "v" * 1000 for i in range(n)}),  # over the total size
    st.dictionaries(hostile_text, hostile_text, max_size=5),
)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=10))
json_value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                          max_leaves=12)
hostile_leaf = st.one_of(hostile_text, st.sampled_from(HOSTILE_NUMBERS), huge_int, deep, label_map, json_value,
                         st.sampled_from(HOSTILE_URLS), st.just("x" * 700_000))  # the last: over the body limit


# --- valid-shaped bodies of each format, mutated ---------------------------------------------------------------


#: A few fingerprints: most accepted alerts join an open incident (a fuzz run is not a test of incident creation).
fingerprint = st.sampled_from([f"fp{i}" for i in range(12)])
alertname = st.sampled_from(["ServiceDown", "InstanceDown", "QueueBacklog", "DiskFull", "Other"])


def valid_alertmanager(fp: str, name: str = "ServiceDown", status: str = "firing") -> dict[str, Any]:
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status, "receiver": "firebreak",
            "groupLabels": {"alertname": name}, "commonLabels": {"alertname": name}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [{"status": status, "labels": {"alertname": name, "service": "online_chat", "severity": "warning"},
                        "annotations": {"summary": f"{name} on {fp}"}, "startsAt": "2026-11-23T09:00:00Z",
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph",
                        "fingerprint": fp}]}


def valid_grafana(fp: str, name: str = "QueueBacklog", status: str = "firing") -> dict[str, Any]:
    return {"receiver": "firebreak", "status": status, "orgId": 1, "version": "1", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "state": "alerting", "title": "[FIRING:1]", "message": "m",
            "groupLabels": {"alertname": name}, "commonLabels": {"alertname": name}, "commonAnnotations": {},
            "externalURL": "http://grafana:3000/",
            "alerts": [{"status": status, "labels": {"alertname": name, "queue": "hotline"},
                        "annotations": {"summary": "queue"}, "startsAt": "2026-11-23T09:00:00Z",
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fp,
                        "silenceURL": "", "dashboardURL": "", "panelURL": "", "values": {"B": 231.0, "C": 1}}]}


def valid_pagerduty(fp: str, action: str = "trigger") -> dict[str, Any]:
    event: dict[str, Any] = {"routing_key": TOKENS["FIREBREAK_TEST_PD_KEY"], "event_action": action, "dedup_key": fp}
    if action == "trigger":
        event["payload"] = {"summary": "Order API error rate above 20%", "source": "orders-api-1",
                            "severity": "critical", "component": "orders", "group": "prod", "class": "errors",
                            "timestamp": "2026-11-23T09:00:00+0000", "custom_details": {"error_rate": "0.23"}}
        event["links"] = [{"href": "https://example.com", "text": "x"}]
    return event


def valid_generic(fp: str, runbook: str | None, parameters: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"summary": f"generic {fp}", "dedup_key": fp, "labels": {"alertname": "ServiceDown"},
                            "status": "firing"}
    if runbook:
        body["runbook"] = runbook
    if parameters:
        body["parameters"] = parameters
    return body


generic_parameters = st.dictionaries(
    st.sampled_from(["affected_customers", "affected_service", "service_url", "failed_node", "nope"]),
    st.one_of(st.integers(-5, 20_000), st.sampled_from(["online_chat", "hotline", "x"]), st.sampled_from(HOSTILE_URLS),
              hostile_leaf), max_size=3)

BASES = {
    "alertmanager": st.builds(valid_alertmanager, fingerprint, alertname, st.sampled_from(["firing", "resolved"])),
    "grafana": st.builds(valid_grafana, fingerprint, alertname, st.sampled_from(["firing", "resolved"])),
    "pagerduty": st.builds(valid_pagerduty, fingerprint, st.sampled_from(["trigger", "trigger", "acknowledge", "resolve"])),
    "generic": st.builds(valid_generic, fingerprint, st.sampled_from([None, "system-outage", "staffing-shortage"]),
                         generic_parameters),
}


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a document: each object member and list item."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict) and len(value) > 64:  # a huge label map is one place, not thousands
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            found.append(path + (key,))
            found.extend(places(item, path + (key,)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append(path + (index,))
            found.extend(places(item, path + (index,)))
    return found


def at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


CHANGES = st.sampled_from(["replace", "replace", "replace", "add", "remove"])
HOW_MANY = st.sampled_from([0, 1, 1, 2, 2, 3])


@st.composite
def mutated(draw: st.DrawFn, endpoint: str) -> dict[str, Any]:
    """A valid body of the format with 0–3 hostile changes: a leaf replaced, a member added or removed."""
    body = draw(BASES[endpoint])
    for _ in range(draw(HOW_MANY)):
        positions = places(body)
        if not positions:
            break
        where = positions[draw(st.integers(0, len(positions) - 1))]
        parent = at(body, where[:-1])
        change = draw(CHANGES)
        if change == "replace":
            parent[where[-1]] = draw(hostile_leaf)
        elif change == "add" and isinstance(parent, dict):
            parent[draw(hostile_text)] = draw(hostile_leaf)
        elif change == "add":
            parent.append(draw(hostile_leaf))
        else:
            del parent[where[-1]]
    return body


CONTENT_TYPES = ["application/json"] * 40 + ["application/json; charset=utf-8"] * 5 + [
    "application/json; charset=utf-8", "Application/JSON;charset=UTF-8", "application/json; charset=latin-1",
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx",
    "application/xml", "", "*/*", None]


@dataclass
class Request:
    body: bytes
    content_type: str | None


KINDS = st.sampled_from(["mutated"] * 8 + ["garbage", "other-json"])
CONTENT_TYPE = st.sampled_from(CONTENT_TYPES)


@st.composite
def requests(draw: st.DrawFn, endpoint: str) -> Request:
    kind = draw(KINDS)
    if kind == "mutated":
        body = to_bytes(draw(MUTATED[endpoint]), ascii_only=draw(st.booleans()))
    elif kind == "garbage":
        body = draw(st.one_of(st.binary(max_size=2000),
                              st.builds(lambda d, n: to_bytes(d, True)[:n], MUTATED[endpoint], st.integers(0, 400))))
    else:
        body = to_bytes(draw(json_value), ascii_only=draw(st.booleans()))
    return Request(body, draw(CONTENT_TYPE))


MUTATED = {endpoint: mutated(endpoint) for endpoint in ENDPOINTS}
REQUESTS = {endpoint: requests(endpoint) for endpoint in ENDPOINTS}


def headers_for(endpoint: str, body: bytes, content_type: str | None = "application/json",
                age: int = 0) -> dict[str, str]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    if endpoint == "alertmanager":
        headers["Authorization"] = f"Bearer {TOKENS['FIREBREAK_TEST_AM_TOKEN']}"
    elif endpoint == "grafana":
        headers["Authorization"] = f"Bearer {TOKENS['FIREBREAK_TEST_GRAFANA_TOKEN']}"
    elif endpoint == "generic":
        stamp, signature = sign(TOKENS["FIREBREAK_TEST_HMAC"], body, int(time.time()) - age)
        headers.update({"X-Firebreak-Timestamp": stamp, "X-Firebreak-Signature": signature})
    return headers


PATHS = {"alertmanager": "/v1/alerts/alertmanager", "grafana": "/v1/alerts/grafana", "pagerduty": "/v2/enqueue",
         "generic": "/v1/alerts/generic"}


# --- the property ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_hostile_bodies_never_500_and_refused_ones_store_nothing(target: Target, endpoint: str) -> None:
    statuses = FIGURES[target.database][endpoint]
    # Only our requests write (executor none): the counts after one are the counts before the next.
    last = [target.counts()]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                     HealthCheck.filter_too_much])
    @given(request=REQUESTS[endpoint], age=st.integers(0, 50))
    def post(request: Request, age: int) -> None:
        before = last[0]
        response = target.client.post(PATHS[endpoint], content=request.body,
                                      headers=headers_for(endpoint, request.body, request.content_type, age))
        statuses[response.status_code] += 1
        after = last[0] = target.counts()
        shown = f"{response.status_code} for {request.content_type!r} {request.body[:200]!r}: {response.text[:300]}"
        assert response.status_code < 500, shown
        assert response.status_code in (202,) or 400 <= response.status_code < 500, shown
        if response.status_code >= 400:
            changed = {name: (b, a) for name, b, a in zip(target.tables, before, after, strict=True) if a != b}
            assert not changed, f"refused, yet stored (rows before → after: {changed}): {shown}"
            answer = response.json()
            if endpoint != "pagerduty" and response.status_code in (400, 413, 415, 422):
                assert answer["error"], shown
                if response.status_code == 422:  # 422 is about the body's fields: each is named, with why
                    assert answer["details"] and all(d["field"] and d["reason"] for d in answer["details"]), shown
            elif endpoint == "pagerduty" and response.status_code == 400:
                assert answer["status"] == "invalid event" and answer["errors"], shown
        else:
            assert after[0] > before[0], f"accepted, yet no alert stored: {shown}"

    post()
    assert sum(statuses.values()) >= EXAMPLES
