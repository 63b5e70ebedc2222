"""The shipped routes (intake/routes.yaml) name the service an alert is about: a PagerDuty-sourced
hotline outage is paged as the hotline, not as a fixed default; an alert that names no known
service says so (unknown_service) instead of guessing."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from intake.plans import plan_run
from intake.routing import decide, load_routes
from intake.settings import INTAKE_DIR
from records.incidents import get_incident

ROUTES = INTAKE_DIR / "routes.yaml"


@pytest.mark.parametrize(("labels", "route", "level", "service"), [
    ({"severity": "critical", "source": "pbx-01", "component": "hotline"}, "pagerduty-critical-outage", "I", "hotline"),
    ({"severity": "critical", "source": "shop", "component": "orders"}, "pagerduty-critical-outage", "I",
     "order_handling"),
    ({"alertname": "ServiceDown", "service": "Web-Chat"}, "system-outage", "II", "online_chat"),
    ({"alertname": "InstanceDown", "job": "node", "component": "ivr", "severity": "critical"},
     "system-outage-critical", "I", "hotline"),
    ({"alertname": "ServiceDown", "service": "billing"}, "system-outage", "II", "unknown_service"),
])
def test_the_route_names_the_service_from_the_alert(labels: dict[str, str], route: str, level: str,
                                                    service: str) -> None:
    decision = decide(load_routes(ROUTES), labels)
    plan = plan_run(decision)
    assert (decision.route, plan.level, plan.parameters["affected_service"], plan.error) == (route, level, service,
                                                                                            None)


def test_a_pagerduty_hotline_event_opens_a_hotline_incident(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.intake_harness import SOURCES, TOKENS, RunningIntake, own_records_database

    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    sources = tmp_path / "sources.yaml"
    sources.write_text(json.dumps(SOURCES))
    # A records database of its own: the run it asks for must not be started by a later test's intake.
    with own_records_database(tmp_path), RunningIntake(sources, ROUTES, executor="none") as intake:
        answer = httpx.post(f"{intake.url}/v2/enqueue", timeout=30, json={
            "routing_key": TOKENS["FIREBREAK_TEST_PD_KEY"], "event_action": "trigger",
            "dedup_key": f"pbx-{tmp_path.name}",
            "payload": {"summary": "Hotline trunk down: callers hear a busy tone", "source": "pbx-01",
                        "severity": "critical", "component": "hotline", "group": "contact-centre"}})
        assert answer.status_code == 202, answer.text
        incidents = httpx.get(f"{intake.url}/v1/incidents", timeout=30,
                              headers={"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_READ_TOKEN']}"}).json()
        opened = next(i for i in incidents["incidents"] if i["title"].startswith("Hotline trunk down"))
        incident = get_incident(opened["id"])
    assert incident.level == "I" and incident.parameters["affected_service"] == "hotline"
