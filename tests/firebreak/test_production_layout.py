"""The production layout, as `firebreak up --layout production` starts it from one configuration:
Prefect on PostgreSQL, 2 intake replicas (`--executor none`), 2 `firebreak worker` processes and
the deployments runner (reconcile every minute), with the records on PostgreSQL too: both
databases on a private PostgreSQL cluster of the test's own (the shared server is not touched).

A burst of 50 new incidents at 5 a second, spread over both replicas as a load balancer would,
each paging technical support (a local HTTP receiver is the contacts' channel): 50 incidents,
50 runs, none failed, none twice, every first page delivered once. Then a second burst during
which one worker and one replica are SIGKILLed: the monitor's retry reaches the other replica,
the killed worker's claimed runs are taken over, `up` starts both again, and still no incident is
lost, run twice or paged twice. (Runs the killed worker had already begun die with it; Prefect and
reconcile record them crashed and page the incident's responsible roles: README "When a process
dies". The test counts them and checks each was paged.)
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from firebreak.settings import PROJECT_ROOT
from records.db import session_scope
from records.incidents import get_incident
from records.models import Notification, utcnow
from records.run_outbox import RunRequest
from tests.http_receivers import ScriptedServer
from tests.intake_harness import TOKENS, free_port, write_config
from tests.private_postgres import private_cluster
from tests.records_env import records_database_at
from tests.run_workers import FIREBREAK, flow_run_state, prefect_runs, rows, runs_begun
from tests.runbook_helpers import write_runbook

pytestmark = pytest.mark.slow

AM_AUTH = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_AM_TOKEN']}", "Content-Type": "application/json"}
BURST, RATE = 50, 5.0  # incidents, per second
SLOTS = 4
#: The default contacts holding technical_support (notifications/contacts.yaml and roster.yaml).
PAGED = {"li-wei", "chen-jing"}


def _two_free_ports() -> int:
    """A port P with P+1 free too (the replicas take consecutive ports)."""
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def _alert(fingerprint: str) -> bytes:
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "firebreak", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{"status": "firing", "labels": {"alertname": "ServiceDown", "service": fingerprint},
                    "annotations": {"summary": f"down: {fingerprint}"}, "startsAt": "2026-11-23T09:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint}]}).encode()


class Stack:
    """`firebreak up --layout production` in a process of its own; its output in a file."""

    def __init__(self, directory: Path, env: dict[str, str], port: int):
        self.log_path = directory / "up.log"
        self.port = port
        self.process = subprocess.Popen(
            [FIREBREAK, "up", "--layout", "production", "--intake-replicas", "2", "--workers", "2",
             "--slots", str(SLOTS), "--intake-port", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.replicas = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """The newest pid of each process `up` started (it prints one line per start)."""
        return {name: int(pid) for name, pid in re.findall(r"^(intake-\d+|worker-\d+|deployments): pid (\d+)",
                                                           self.log(), re.M)}

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"`firebreak up` exited {self.process.returncode}:\n{self.log()[-4000:]}")
            workers = len(re.findall(r"run worker \S+:", self.log()))
            try:
                ready = all(httpx.get(f"{url}/readyz", timeout=2).status_code == 200 for url in self.replicas)
            except httpx.HTTPError:
                ready = False
            if ready and workers >= 2:
                return
            time.sleep(0.5)
        raise AssertionError(f"the production layout was not up after {timeout:.0f}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Children run in sessions of their own: end any `up` could not (it was asked to stop them).
        for pid in self.pids().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _send(stack: Stack, fingerprint: str, first: int) -> dict[str, Any]:
    """Post one alert as a monitor behind a load balancer would: to replica `first`, and on a refused
    connection or a 5xx to the next, until one answers 202."""
    body = _alert(fingerprint)
    deadline = time.monotonic() + 120
    attempt = 0
    while True:
        url = stack.replicas[(first + attempt) % len(stack.replicas)]
        attempt += 1
        try:
            answer = httpx.post(f"{url}/v1/alerts/alertmanager", content=body, headers=AM_AUTH, timeout=10)
            if answer.status_code == 202:
                return answer.json()["alerts"][0]
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no replica accepted {fingerprint}")
        time.sleep(0.2)


def _burst(stack: Stack, prefix: str, during: Any = None) -> list[str]:
    """BURST new incidents at RATE a second, alternating replicas; `during(n)` after the n-th."""
    incident_ids: list[str] = []
    start = time.monotonic()
    for n in range(BURST):
        time.sleep(max(0.0, start + n / RATE - time.monotonic()))
        result = _send(stack, f"{prefix}-{n}", n % 2)
        assert result["disposition"] in ("opened", "absorbed"), result
        incident_ids.append(result["incident_id"])
        if during is not None:
            during(n)
    return incident_ids


def _wait_finished(incident_ids: list[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = rows(incident_ids)
        if len(found) == len(incident_ids) and all(r.finished_at is not None for r in found.values()):
            return found
        if time.monotonic() > deadline:
            waiting = {i: (r.status, r.claimed_by) for i, r in found.items() if r.finished_at is None}
            raise AssertionError(f"not every run finished: {waiting}")
        time.sleep(1.0)


def _pages(incident_ids: list[str]) -> dict[str, list[tuple[str, str, str]]]:
    """(step, contact, status) of every page of each incident."""
    found: dict[str, list[tuple[str, str, str]]] = {i: [] for i in incident_ids}
    with session_scope() as session:
        for row in session.scalars(select(Notification).where(Notification.incident_id.in_(incident_ids))):
            found[row.incident_id].append((row.step_id, row.contact, row.status))
    return found


def _outcome(incident_ids: list[str], finished: dict[str, Any], since: Any, api_url: str) -> dict[str, Any]:
    runs = prefect_runs(incident_ids, since, api_url)
    states = {i: flow_run_state(r.flow_run_id, api_url) for i, r in finished.items()}
    return {"incidents": len(set(incident_ids)), "runs": sum(len(r) for r in runs.values()),
            "runs per incident": sorted({len(r) for r in runs.values()}),
            "begun per incident": sorted(set(runs_begun(incident_ids).values())),
            "begun": runs_begun(incident_ids),
            "states": {s: sum(v == s for v in states.values()) for s in sorted(set(states.values()))},
            "by incident": states, "pages": _pages(incident_ids)}


def test_production_layout_burst_and_a_killed_worker_and_replica(tmp_path: Path) -> None:
    with private_cluster(max_connections=100) as cluster, ScriptedServer([(200, {"ok": True})]) as receiver:
        cluster.create_database("records", owner="firebreak")
        cluster.create_database("prefect")
        records = cluster.url("records", user="firebreak")
        runbook = write_runbook(tmp_path, "production-page", [
            {"id": "page", "action": "notify", "with": {"to": ["technical_support"], "title": "service down",
                                                        "message": "first page"}},
            {"id": "close", "action": "set_status", "needs": ["page"], "with": {"status": "closed", "reason": "ok"}}],
            level={"default": "III"})
        sources, routes = write_config(tmp_path, {"runbook": str(runbook)})
        port = _two_free_ports()
        prefect_port = free_port()
        api_url = f"http://127.0.0.1:{prefect_port}/api"
        env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API_URL")}
        env.update(TOKENS)
        env.update({
            "FIREBREAK_HOME": str(tmp_path / "home"), "FIREBREAK_DATABASE_URL": records,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": cluster.url("prefect", driver="asyncpg"),
            "FIREBREAK_PREFECT_PORT": str(prefect_port), "FIREBREAK_INBOX": receiver.url.removeprefix("http://"),
            "FIREBREAK_INTAKE_SOURCES_FILE": str(sources), "FIREBREAK_INTAKE_ROUTES_FILE": str(routes),
            "FIREBREAK_DB_CONNECTION_BUDGET": "60", "PREFECT_LOGGING_LEVEL": "WARNING",
        })
        env.pop("FIREBREAK_CONTACTS_FILE", None)  # the default contacts: their channels are ${FIREBREAK_INBOX}
        stack = Stack(tmp_path, env, port)
        try:
            stack.wait_ready()
            assert "records connections: intake 2 replica(s) × 1 process(es) × (pool 5 + overflow 0) + worker 2 " \
                   f"process(es) × (pool {SLOTS + 3} + overflow 0) + reserved 10 = 34 of budget 60" in stack.log()
            with records_database_at(records):
                # 1. The burst, everything up.
                since = utcnow()
                first = _burst(stack, f"calm-{time.time_ns()}")
                calm = _outcome(first, _wait_finished(first, timeout=300), since, api_url)
                print(f"\nburst of {BURST} at {RATE:g}/s: {({k: v for k, v in calm.items() if k not in ('by incident', 'pages', 'begun')})}")
                assert calm["incidents"] == BURST and calm["runs"] == BURST
                assert calm["runs per incident"] == [1] and calm["begun per incident"] == [1]
                assert calm["states"] == {"COMPLETED": BURST}
                for incident_id, pages in calm["pages"].items():  # every first page delivered, once
                    assert sorted(pages) == sorted(("page", c, "delivered") for c in PAGED), (incident_id, pages)
                assert {get_incident(i).run_state for i in first} == {"completed"}

                # 2. Again, SIGKILLing one worker and one replica mid-burst.
                killed: dict[str, int] = {}
                begun_there: set[str] = set()  # runs the killed worker was executing when it died

                def kill(n: int) -> None:
                    if n == 15:
                        pids = stack.pids()
                        for name in ("worker-1", "intake-1"):
                            os.kill(pids[name], signal.SIGKILL)
                            killed[name] = pids[name]
                        time.sleep(0.5)
                        with session_scope() as session:
                            begun_there.update(session.scalars(select(RunRequest.incident_id).where(
                                RunRequest.status == "started",
                                RunRequest.claimed_by.like(f"%:{killed['worker-1']}:%"))))

                since = utcnow()
                second = _burst(stack, f"kill-{time.time_ns()}", during=kill)
                # Claimed rows wait for the stale time (15 s); begun runs for reconcile (every minute, 30 s stale).
                finished = _wait_finished(second, timeout=420)
                rough = _outcome(second, finished, since, api_url)
                log = stack.log()
        finally:
            stack.stop()
        crashed = {i for i, s in rough["by incident"].items() if s == "CRASHED"}
        print(f"burst of {BURST} with worker-1 and intake-1 SIGKILLed after the 15th: "
              f"{({k: v for k, v in rough.items() if k not in ('by incident', 'pages', 'begun')})}; "
              f"crashed: {sorted(crashed)}; executing on the killed worker when it died: {sorted(begun_there)}")
        assert re.search(r"worker-1: pid \d+ \(restarted\)", log) and re.search(r"intake-1: pid \d+ .*\(restarted\)", log)
        assert rough["incidents"] == BURST and rough["runs"] == BURST  # nothing lost, nothing started twice
        assert rough["runs per incident"] == [1]
        # Each run began at most once; one the killed worker was starting may have died before its
        # engine recorded the beginning (then it is crashed, below, and paged).
        assert set(rough["begun per incident"]) <= {0, 1}
        assert all(rough["begun"][i] == 1 for i in second if i not in crashed), rough["begun"]
        assert set(rough["states"]) <= {"COMPLETED", "CRASHED"}, rough["states"]  # no run failed
        # Only runs the killed worker had begun died, and each was found and paged (never silent).
        assert crashed <= begun_there, (crashed, begun_there)
        for incident_id, pages in rough["pages"].items():
            delivered = [(step, contact) for step, contact, status in pages if status == "delivered"]
            assert len(delivered) == len(set(delivered)), (incident_id, pages)  # nobody paged twice for one step
            if incident_id in crashed:
                assert any(step.startswith("run_failed") for step, _ in delivered) or \
                    {c for s, c in delivered if s == "page"} == PAGED, (incident_id, pages)
            else:
                assert {c for s, c in delivered if s == "page"} == PAGED, (incident_id, pages)
        assert len(receiver.requests) >= 2 * 2 * BURST - 2 * len(crashed)
