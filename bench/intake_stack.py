"""Shared by the intake benchmarks: the intake as its own process (`firebreak serve`) with
benchmark sources and routes, and percentiles. Not a benchmark itself."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alertmanager_body(fingerprint: str, **labels: str) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "bench", "groupKey": "{}:{}", "truncatedAlerts": 0,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "alerts": [{"status": "firing", "labels": {"alertname": "BenchAlert", **labels},
                        "annotations": {"summary": f"bench alert {fingerprint}"},
                        "startsAt": "2026-11-23T09:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "", "fingerprint": fingerprint}]}


class IntakeProcess:
    """`firebreak serve` in a subprocess, with its own FIREBREAK_HOME (SQLite records)."""

    def __init__(self, route: dict[str, Any], *, executor: str = "none", env: dict[str, str] | None = None,
                 home: Path | None = None, workers: int = 1):
        self.home = home or Path(tempfile.mkdtemp(prefix="firebreak-bench-intake-"))
        sources = self.home / "sources.yaml"
        routes = self.home / "routes.yaml"
        sources.write_text(yaml.safe_dump({"sources": {"alertmanager": {  # no rate limit: benchmarks measure load
            "format": "alertmanager", "auth": {"type": "bearer", "token_env": "FIREBREAK_BENCH_TOKEN"},
            "rate_limit": None}}}))
        routes.write_text(yaml.safe_dump({"route": route}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "FIREBREAK_HOME": str(self.home), "FIREBREAK_BENCH_TOKEN": TOKEN,
                    "FIREBREAK_INTAKE_SOURCES_FILE": str(sources), "FIREBREAK_INTAKE_ROUTES_FILE": str(routes),
                    "FIREBREAK_INTAKE_PORT": str(self.port), "FIREBREAK_INTAKE_EXECUTOR": executor,
                    "FIREBREAK_INTAKE_OUTBOX_POLL_SECONDS": "0.5", "PREFECT_LOGGING_LEVEL": "WARNING",
                    "FIREBREAK_INTAKE_WORKERS": str(workers),
                    **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> IntakeProcess:
        firebreak = Path(sys.executable).with_name("firebreak")
        self.process = subprocess.Popen([str(firebreak), "serve"], env=self.env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=open(self.home / "intake.log", "wb"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError((self.home / "intake.log").read_text()[-2000:])
            time.sleep(0.2)
        raise RuntimeError("the intake did not become ready")

    def __exit__(self, *exc: Any) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def records_url(self) -> str:
        return f"sqlite:///{self.home / 'firebreak.db'}"
