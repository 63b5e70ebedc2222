"""A real Prometheus Alertmanager, configured with a webhook receiver pointing at
the intake, starts the right runbook. Skips where no Alertmanager binary is
installed (Debian: `apt-get install prometheus-alertmanager`)."""
from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from notifications.acknowledgement.service import acknowledge_incident
from records import run_outbox
from records.incidents import get_incident, list_incidents, notifications
from tests.intake_harness import TOKENS, RunningIntake, free_port, write_config
from tests.polling import wait_for

pytestmark = pytest.mark.usefixtures("prefect_server")

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.mark.skipif(ALERTMANAGER is None, reason="no Alertmanager binary on this machine")
def test_real_alertmanager_starts_the_outage_runbook(tmp_path: Path, simulator, monkeypatch) -> None:
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    httpx.post(f"{simulator.url}/faults", json={"fault": "down"}).raise_for_status()
    sources, routes = write_config(tmp_path, {"runbook": None, "routes": [
        {"name": "outage", "matchers": ['alertname="ServiceDown"'], "runbook": "system-outage",
         "parameters": {"service_url": "{{ labels.ops_api }}", "affected_service": "{{ labels.service }}",
                        "check_interval_seconds": 0.2, "recovery_deadline_seconds": 30}}]})
    known = {i.id for i in list_incidents(500)}
    with RunningIntake(sources, routes, executor="warm") as intake:
        port = free_port()
        config = tmp_path / "alertmanager.yml"
        config.write_text(yaml.safe_dump({
            "route": {"receiver": "firebreak", "group_by": ["alertname"], "group_wait": "0s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "firebreak", "webhook_configs": [{
                "url": f"{intake.url}/v1/alerts/alertmanager", "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer",
                                                  "credentials": TOKENS["FIREBREAK_TEST_AM_TOKEN"]}}}]}],
        }))
        process = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            api = f"http://127.0.0.1:{port}/api/v2"
            wait_for(lambda: _ready(api), what="Alertmanager to start")
            httpx.post(f"{api}/alerts", json=[{
                "labels": {"alertname": "ServiceDown", "service": "hotline", "ops_api": simulator.url,
                           "severity": "critical"},
                "annotations": {"summary": "hotline health check failing"},
                "startsAt": datetime.now(timezone.utc).isoformat(),
            }]).raise_for_status()

            incident = wait_for(lambda: next((i for i in list_incidents(500) if i.id not in known), None),
                                 what="Alertmanager's webhook to open an incident")
            assert incident.runbook_id == "system-outage" and incident.source == "alert"
            wait_for(lambda: run_outbox.run_request(incident.id).started_at is not None, what="the run to start")
            # Not a drill: pages escalate until a person acknowledges, per page: so technical support's
            # own page (an acknowledgement before it is sent does not stop its escalation).
            wait_for(lambda: any(n.step_id == "page_technical_support" and n.status == "delivered"
                                 for n in notifications(incident.id)), what="technical support's page")
            acknowledge_incident(incident.id, by="li-wei", via="cli")
            intake.wait_runs(timeout=300, incident_ids=(incident.id,))
        finally:
            process.terminate()
            process.wait(timeout=20)
    finished = get_incident(incident.id)
    assert finished.status == "closed" and finished.run_state == "completed"
    assert finished.parameters["affected_service"] == "hotline"
    assert httpx.get(f"{simulator.url}/health").json()["active_node"] == "standby"


def _ready(api: str) -> bool:
    try:
        return httpx.get(f"{api}/status", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
