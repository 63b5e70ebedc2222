"""`prefect deploy --all` from prefect.yaml to a process work pool, and a worker running a deployment.

The rest of the suite runs flows in-process or through `serve`; this is the production path
(README, "Production layout"): the work pool is created with the documented command, the
deployments are registered by the Prefect CLI from prefect.yaml, and a `prefect worker`
process starts the flow run in a subprocess of its own, which must find the repository (the
pull step), the records database (FIREBREAK_* inherited from the worker) and the simulator.

Slower than the other tests (about a minute): it starts three Prefect CLI processes and a
flow-run process, each importing Prefect and the flows. Deselect it with `-m "not slow"`.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from firebreak.settings import PROJECT_ROOT
from records.incidents import events, get_incident, list_incidents
from tasks.catalog import load_runbook
from tests.polling import wait_for
from tests.runbook_helpers import write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")

PROJECT_FILE = PROJECT_ROOT / "prefect.yaml"
PREFECT = str(Path(sys.executable).with_name("prefect"))
DECLARED: list[dict[str, Any]] = yaml.safe_load(PROJECT_FILE.read_text())["deployments"]
SEED_RUNBOOKS = {"system-outage", "network-congestion", "staffing-shortage"}


def _prefect(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([PREFECT, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"prefect {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


QUICK_RUNBOOK = "deployed-quick"


@pytest.fixture(scope="module")
def runbooks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed runbooks and a quick one of the tests': the run-runbook form offers the ids in the
    runbooks directory as a list, so a runbook it runs is named by id, from this directory."""
    directory = tmp_path_factory.mktemp("runbooks")
    for path in (PROJECT_ROOT / "runbooks").glob("*.yaml"):
        (directory / path.name).write_text(path.read_text())
    write_runbook(directory, QUICK_RUNBOOK, [
        {"id": "note", "action": "record", "with": {"message": "run by a worker"}},
        {"id": "close", "action": "set_status", "needs": ["note"], "with": {"status": "closed", "reason": "done"}}])
    return directory


@pytest.fixture(scope="module")
def deployed(runbooks_dir: Path) -> dict[str, Any]:
    """The work pool and every deployment in prefect.yaml, created by the Prefect CLI as the README says."""
    from prefect.client.orchestration import get_client

    # PWD as a shell has it in the repository root: prefect.yaml's pull step records `{{ $PWD }}`.
    env = {**os.environ, "PREFECT_CLI_PROMPT": "false", "PWD": str(PROJECT_ROOT),
           "FIREBREAK_RUNBOOKS_DIR": str(runbooks_dir)}
    _prefect("work-pool", "create", "firebreak", "--type", "process", "--overwrite", env=env)
    _prefect("deploy", "--all", "--no-prompt", env=env)
    with get_client(sync_client=True) as client:
        deployed = {d.name: d for d in client.read_deployments() if d.work_pool_name == "firebreak"}
        # Its schedule is checked below; paused here so the session's scheduler hands no reconcile
        # run to the worker test's `--run-once` worker (the tests judge runs themselves).
        client.pause_deployment(deployed["reconcile-incidents"].id)
        return deployed


def _entry_function(entrypoint: str) -> Any:
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(PROJECT_ROOT / entrypoint)).fn


def test_every_declared_deployment_is_registered_as_declared(deployed: dict[str, Any]) -> None:
    assert len(DECLARED) == 17 and {entry["name"] for entry in DECLARED} <= deployed.keys()
    # Reconcile every minute (flows/reconcile.py); the other deployments run when someone starts them.
    (every,) = deployed["reconcile-incidents"].schedules
    assert every.active and every.schedule.interval.total_seconds() == 60
    assert not any(deployed[entry["name"]].schedules for entry in DECLARED if entry["name"] != "reconcile-incidents")
    for entry in DECLARED:
        deployment = deployed[entry["name"]]
        assert deployment.description == entry["description"]
        assert sorted(deployment.tags) == sorted(entry["tags"])
        assert deployment.enforce_parameter_schema is True
        assert deployment.entrypoint == entry["entrypoint"]
        # The worker's flow-run process starts in the repository, wherever the worker runs.
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}]
        schema = deployment.parameter_openapi_schema
        assert set(schema["properties"]) == set(inspect.signature(_entry_function(entry["entrypoint"])).parameters)
        if entry["name"] in SEED_RUNBOOKS:
            # The UI form of a seed runbook is its YAML's parameters, with their constraints.
            runbook = load_runbook(entry["name"]).runbook
            assert set(_runbook_form(schema)["properties"]) == set(runbook.parameters)
    outage = _runbook_form(deployed["system-outage"].parameter_openapi_schema)["properties"]
    assert outage["affected_service"]["enum"] == ["online_chat", "order_handling", "hotline", "email", "social_media",
                                                  "unknown_service"]
    assert outage["affected_customers"]["minimum"] == 0


def _runbook_form(schema: dict[str, Any]) -> dict[str, Any]:
    """The definition the `parameters` argument refers to (the runbook's own parameters)."""
    reference = schema["properties"]["parameters"]["$ref"]  # "#/definitions/<Model>"
    return schema["definitions"][reference.rsplit("/", 1)[-1]]


def test_the_server_refuses_parameters_outside_the_schema(deployed: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    with get_client(sync_client=True) as client, pytest.raises(PrefectHTTPStatusError) as refused:
        client.create_flow_run_from_deployment(deployed["system-outage"].id,
                                               parameters={"parameters": {"affected_customers": "many"}})
    assert refused.value.response.status_code == 409 and "affected_customers" in refused.value.response.text


@pytest.mark.slow
def test_a_process_worker_runs_the_outage_deployment_to_a_closed_incident(deployed: dict[str, Any], simulator,
                                                                           tmp_path: Path, runbooks_dir: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from notifications.drill_responder import AckServer, DrillResponder

    httpx.post(f"{simulator.url}/faults", json={"fault": "down"}).raise_for_status()
    with get_client(sync_client=True) as client:
        # By the name the intake's `deployment` executor uses (<flow>/<flow>).
        deployment = client.read_deployment_by_name("system-outage/system-outage")
        assert deployment.id == deployed["system-outage"].id
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={
            "parameters": {"service_url": simulator.url, "check_interval_seconds": 0.2,
                           "recovery_deadline_seconds": 30},
            "drill": True, "source": "drill"})
        # The generic engine's deployment too: its flow is typed with this module's annotations,
        # which a flow-run process loading it from its file once could not resolve.
        generic_run = client.create_flow_run_from_deployment(
            client.read_deployment_by_name("run-runbook/run-runbook").id,
            parameters={"runbook": QUICK_RUNBOOK, "level": "III", "drill": True, "source": "drill"})

    worker_log = tmp_path / "worker.log"
    with ExitStack() as stack:
        stack.enter_context(AckServer())  # sets FIREBREAK_PUBLIC_URL, which the worker's runs inherit
        stack.enter_context(DrillResponder(simulator.url))
        # The worker and its flow-run process inherit FIREBREAK_HOME (the records database),
        # FIREBREAK_INBOX (the simulator) and PREFECT_API_URL from this process.
        with worker_log.open("w") as log:
            worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "firebreak", "--run-once"],
                                      cwd=tmp_path, env={**os.environ, "FIREBREAK_RUNBOOKS_DIR": str(runbooks_dir)},
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                worker.wait(timeout=240)  # --run-once: one poll, then it waits for the runs it started
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
    assert worker.returncode == 0, worker_log.read_text()

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state  # the worker waited for its flow-run process
        generic_state = client.read_flow_run(generic_run.id).state
    assert state.type is StateType.COMPLETED, f"{state.name}: {state.message}\n{worker_log.read_text()}"
    assert generic_state.type is StateType.COMPLETED, f"{generic_state.name}: {generic_state.message}"
    generic_incident = next(i for i in list_incidents(200) if i.flow_run_id == str(generic_run.id))
    assert get_incident(generic_incident.id).status == "closed"

    incident = next(i for i in list_incidents(200) if i.flow_run_id == str(flow_run.id))
    incident = get_incident(incident.id)
    assert incident.status == "closed" and incident.run_state == "completed" and incident.drill
    assert any(e.step_id == "fail_over" and e.phase == "outcome" and e.status == "succeeded"
               for e in events(incident.id))
    sim = httpx.get(f"{simulator.url}/state").json()
    assert sim["active_node"] == "standby" and sim["failover_count"] == 1


@pytest.mark.slow
def test_a_served_run_runbook_deployment_runs_in_its_own_process(prefect_server: str, tmp_path: Path) -> None:
    """`run_runbook.serve()` (as `firebreak up` and the alert→run benchmark's baseline serve it): the
    runner starts each run in a new process, which once failed every run while building the flow's
    parameter model ("Run_RunbookModel is not fully defined; you should define `Level`")."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    quick = write_runbook(tmp_path, "served-quick", [
        {"id": "note", "action": "record", "with": {"message": "run by a served deployment"}},
        {"id": "close", "action": "set_status", "needs": ["note"], "with": {"status": "closed", "reason": "done"}}])
    name = f"served-{tmp_path.name}"
    log_path = tmp_path / "runner.log"
    with log_path.open("w") as log:
        runner = subprocess.Popen(
            [sys.executable, "-c", f"from flows.engine import run_runbook; run_runbook.serve(name={name!r})"],
            # The form offers the runbooks directory's ids (a list, not free text): the test's own directory.
            cwd=PROJECT_ROOT, env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                                   "FIREBREAK_RUNBOOKS_DIR": str(tmp_path)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            def registered() -> bool:
                with get_client(sync_client=True) as client:
                    try:
                        client.read_deployment_by_name(f"run-runbook/{name}")
                        return True
                    except Exception:
                        return False

            wait_for(registered, timeout=60, what="the served deployment")
            flow_run = run_deployment(f"run-runbook/{name}", timeout=120, parameters={
                "runbook": quick.stem, "level": "III", "drill": True, "source": "drill"})
        finally:
            runner.terminate()
            runner.wait(timeout=30)
    assert flow_run.state.type is StateType.COMPLETED, f"{flow_run.state.message}\n{log_path.read_text()[-3000:]}"
    incident = next(i for i in list_incidents(200) if i.flow_run_id == str(flow_run.id))
    assert get_incident(incident.id).status == "closed"
