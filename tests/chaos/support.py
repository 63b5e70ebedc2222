"""The intake as a real `firebreak serve` process that can be killed and started again on the
same port and records, a fast alert poster that remembers every answer, and a private Prefect
server that can be stopped and started again on the same port and database."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.http_load import Connection, build_request
from firebreak.cli.prefect_server import start_local_server, wait_until_healthy
from firebreak.settings import PROJECT_ROOT
from tests.intake_harness import free_port

FIREBREAK = str(Path(sys.executable).with_name("firebreak"))
TOKEN = "chaos-token"


class IntakeServe:
    """`firebreak serve` (embedded warm executor by default) with its own FIREBREAK_HOME."""

    def __init__(self, home: Path, route: dict[str, Any], *, prefect_api_url: str, env: dict[str, str] | None = None,
                 records_url: str | None = None):
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        sources, routes = home / "sources.yaml", home / "routes.yaml"
        # No rate limit: the burst is the point (a monitor's real burst would be answered 429 and sent again).
        sources.write_text(yaml.safe_dump({"sources": {"alertmanager": {
            "format": "alertmanager", "auth": {"type": "bearer", "token_env": "FIREBREAK_CHAOS_TOKEN"},
            "rate_limit": None}}}))
        routes.write_text(yaml.safe_dump({"route": route}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.records_url = records_url or f"sqlite:///{home / 'firebreak.db'}"
        self.env = {**os.environ, "FIREBREAK_HOME": str(home), "FIREBREAK_CHAOS_TOKEN": TOKEN,
                    "FIREBREAK_INTAKE_SOURCES_FILE": str(sources), "FIREBREAK_INTAKE_ROUTES_FILE": str(routes),
                    "FIREBREAK_INTAKE_PORT": str(self.port), "PREFECT_API_URL": prefect_api_url,
                    "PREFECT_LOGGING_LEVEL": "WARNING", **(env or {})}
        self.env.pop("FIREBREAK_DATABASE_URL", None)
        if records_url:
            self.env["FIREBREAK_DATABASE_URL"] = records_url
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 90) -> None:
        self.starts += 1
        log = (self.home / f"intake-{self.starts}.log").open("ab")
        self.process = subprocess.Popen([FIREBREAK, "serve"], cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(self.log()[-3000:])
            time.sleep(0.1)
        raise RuntimeError(f"the intake did not become ready:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return (self.home / f"intake-{self.starts}.log").read_text(errors="replace")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def alert_request(seq: int, fingerprint: str) -> bytes:
    """The raw HTTP request posting alert `seq` (label `seq`, so its storage can be checked)."""
    return build_request("POST", "/v1/alerts/alertmanager", alert_body(seq, fingerprint), HEADERS)


HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def alert_body(seq: int, fingerprint: str) -> bytes:
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "chaos", "groupKey": "{}:{}", "truncatedAlerts": 0,
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{"status": "firing", "labels": {"alertname": "ChaosAlert", "seq": str(seq)},
                    "annotations": {"summary": f"chaos alert {seq} ({fingerprint})"},
                    "startsAt": "2026-11-23T09:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": fingerprint}]}).encode()


def post_all(port: int, requests: dict[int, bytes], *, connections: int = 32,
             on_accepted: Callable[[int], None] | None = None) -> dict[int, int]:
    """Send every request once over keep-alive connections; the status of each (-1: no answer,
    the connection failed). `on_accepted(n)` is called with the running count of 202s."""
    statuses: dict[int, int] = {}
    queue = list(reversed(sorted(requests)))
    accepted = 0

    async def worker() -> None:
        nonlocal accepted
        connection: Connection | None = None
        while queue:
            seq = queue.pop()
            try:
                if connection is None:
                    connection = await Connection.open("127.0.0.1", port)
                status = await connection.exchange(requests[seq])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                statuses[seq] = -1
                if connection is not None:
                    connection.close()
                connection = None
                continue
            statuses[seq] = status
            if status == 202:
                accepted += 1
                if on_accepted is not None:
                    on_accepted(accepted)
        if connection is not None:
            connection.close()

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(connections)))

    asyncio.run(main())
    return statuses


class PrivatePrefect:
    """A Prefect server of the test's own (its own home and SQLite database), stopped and started
    again on the same port; the session's server is never touched."""

    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log_path = home / "prefect-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_local_server(self.home / "prefect", self.port, self.log_path, detach=True)
        wait_until_healthy(self.api_url, self.process, self.log_path)

    def stop(self) -> None:
        """The server and every process it started (its own process group) end."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the port is free again before it is reused
            try:
                httpx.get(f"{self.api_url}/health", timeout=0.5)
            except httpx.HTTPError:
                return
            time.sleep(0.2)
