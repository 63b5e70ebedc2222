"""The Prefect forms people fill in: every deployment's parameter_openapi_schema has no None toggles,
offers enumerations as lists, explains each field in plain words, takes service URLs from the
services file, and what a person fills in does what it says (the level-one overload ratio, run
through the network-congestion form's own schema)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from records.incidents import events, get_incident, notifications
from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
DECLARED = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
#: The forms of the flows this issue is about: the runbooks, the generic engine and the lifecycle actions.
FORMS = [d for d in DECLARED if d["entrypoint"].split(":")[0] in
         ("flows/seed_runbooks.py", "flows/engine.py", "flows/lifecycle.py")]


def deployment_schema(entry: dict[str, Any]) -> dict[str, Any]:
    """The parameter_openapi_schema the deployment is registered with (what the UI renders)."""
    from prefect.deployments.runner import RunnerDeployment

    deployment = RunnerDeployment.from_entrypoint(entrypoint=str(REPO / entry["entrypoint"]), name=entry["name"])
    return deployment._parameter_openapi_schema.model_dump_for_openapi()


@pytest.mark.parametrize("entry", FORMS, ids=lambda e: e["name"])
def test_every_field_is_fillable_and_explained(entry: dict[str, Any]) -> None:
    schema = deployment_schema(entry)
    text = json.dumps(schema, ensure_ascii=False)
    assert '"null"' not in text and "anyOf" not in text, "a None toggle in the form"
    assert "§" not in text and "seed 0" not in text, "help text quoting the plan's section numbers"
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{entry['name']}.{name} has no help text"
    for name, definition in schema.get("definitions", {}).items():
        for field, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{entry['name']}: {name}.{field} has no help text"
    if "level" in schema["properties"]:
        levels = schema["definitions"][schema["properties"]["level"]["$ref"].rsplit("/", 1)[-1]]
        assert set(levels["enum"]) >= {"I", "II", "III"} and "commander-in-chief" in levels["description"]


def test_run_runbook_offers_the_runbooks_as_a_list() -> None:
    schema = deployment_schema(next(d for d in DECLARED if d["name"] == "run-runbook"))
    assert schema["properties"]["runbook"]["enum"] == ["network-congestion", "staffing-shortage", "system-outage"]
    assert schema["properties"]["parameters"]["default"] == {}


def test_service_urls_come_from_the_services_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.utilities.callables import parameter_schema

    from firebreak.settings import reload_settings
    from flows.seed_runbooks import entry_flow

    services = tmp_path / "services.yaml"
    services.write_text("defaults: {service_url: 'http://127.0.0.1:18765'}\n"
                        "runbooks: {staffing-shortage: {service_url: 'http://localhost:28765'}}\n")
    monkeypatch.setenv("FIREBREAK_SERVICES_FILE", str(services))
    reload_settings()
    try:
        def default_url(runbook: str) -> str:
            schema = parameter_schema(entry_flow(runbook).fn).model_dump_for_openapi()
            ref = schema["properties"]["parameters"]["$ref"].rsplit("/", 1)[-1]
            return schema["definitions"][ref]["properties"]["service_url"]["default"]

        assert default_url("system-outage") == "http://127.0.0.1:18765"
        assert default_url("staffing-shortage") == "http://localhost:28765"
        # A configured URL is checked like a given one: a host the runbook does not allow is refused.
        services.write_text("defaults: {service_url: 'http://evil.example.com'}\n")
        os.utime(services, (1, 2))  # a new modification time: the cached models are built again
        from runbooks import library
        from tasks.catalog import load_runbook

        with pytest.raises(Exception, match="evil.example.com|not allowed|allowed_hosts"):
            library.parameter_model(load_runbook("system-outage").runbook).model_validate({})
    finally:
        monkeypatch.delenv("FIREBREAK_SERVICES_FILE")
        reload_settings()


@pytest.mark.usefixtures("prefect_server")
def test_the_overload_ratio_set_in_the_form_makes_it_level_one(simulator: Any) -> None:
    """At 3× the threshold with overload_ratio_level_one 2.5 the incident is level I, and the first
    page goes to whoever level I engages (the commander-in-chief among them)."""
    import httpx

    from flows.seed_runbooks import ENTRY_FLOWS
    from notifications.drill_responder import AckServer, DrillResponder

    schema = deployment_schema(next(d for d in DECLARED if d["name"] == "network-congestion"))
    # What the form holds once a person has changed three fields (the rest are the form's defaults).
    form = {name: prop["default"] for name, prop in schema["properties"].items() if "default" in prop}
    form["parameters"] = {**form["parameters"], "overload_ratio_level_one": 2.5, "service_url": simulator.url,
                          "check_interval_seconds": 0.2, "recovery_deadline_seconds": 30}
    form |= {"drill": True, "source": "drill"}
    jsonschema.validate(form, schema)  # what the Prefect server enforces (enforce_parameter_schema)
    assert form["level"] == "auto"

    httpx.post(f"{simulator.url}/faults", json={"fault": "congested"}).raise_for_status()
    metrics = httpx.get(f"{simulator.url}/metrics").json()
    assert 2.5 <= metrics["request_rate"] / metrics["load_threshold"] < 5  # 3×: over 2.5, under the default 5
    with AckServer(), DrillResponder(simulator.url):
        state = ENTRY_FLOWS["network-congestion"](**form, return_state=True)
    incident_id = state.result().incident_id
    assert get_incident(incident_id).level == "I"
    raised = next(e for e in events(incident_id) if e.status == "level-changed")
    assert raised.step_id == "raise_to_level_one" and raised.data == {"from": "II", "to": "I"}
    assert "3.0× the threshold; level I from 2.5×" in raised.summary
    paged = {n.contact for n in notifications(incident_id) if n.step_id == "start_emergency_response"}
    assert "zhao-gang" in paged  # the commander-in-chief: level I engages them, level II does not
    wait_for(lambda: get_incident(incident_id).status == "closed", timeout=10, what="the incident to close")
