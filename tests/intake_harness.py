"""The intake under a real uvicorn server on a free localhost port, for tests and benchmarks,
plus a TCP forwarder that plays a Prefect API that goes away and comes back."""
from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from intake.app import create_app
from intake.service import load_intake
from intake.settings import IntakeSettings
from records.incidents import events
from tests.records_env import records_database_at

TOKENS = {
    "FIREBREAK_TEST_AM_TOKEN": "am-secret-token",
    "FIREBREAK_TEST_GRAFANA_TOKEN": "grafana-secret-token",
    "FIREBREAK_TEST_PD_KEY": "R0UTINGKEY0123456789abcdef012345",
    "FIREBREAK_TEST_HMAC": "hmac-shared-secret",
    "FIREBREAK_TEST_READ_TOKEN": "reader-secret-token",
    "FIREBREAK_TEST_OPERATOR_LI_WEI": "li-wei-operator-token",
    "FIREBREAK_TEST_OPERATOR_CHEN_JING": "chen-jing-operator-token",
}

#: Tests post far faster than a monitor: no rate limits here (tests of the limits configure their own).
SOURCES = {"sources": {
    "alertmanager": {"format": "alertmanager", "auth": {"type": "bearer", "token_env": "FIREBREAK_TEST_AM_TOKEN"},
                     "rate_limit": None},
    "grafana": {"format": "grafana", "auth": {"type": "bearer", "token_env": "FIREBREAK_TEST_GRAFANA_TOKEN"},
                "rate_limit": None},
    "pagerduty": {"format": "pagerduty", "auth": {"type": "routing_key", "routing_key_env": "FIREBREAK_TEST_PD_KEY"},
                  "rate_limit": None},
    "generic": {"format": "generic", "auth": {"type": "hmac", "secret_env": "FIREBREAK_TEST_HMAC",
                                              "replay_window_seconds": 60}, "rate_limit": None},
    "unset": {"format": "alertmanager", "auth": {"type": "bearer", "token_env": "FIREBREAK_TEST_NEVER_SET"}},
}, "readers": {
    "tests": {"token_env": "FIREBREAK_TEST_READ_TOKEN", "rate_limit": None},
}, "operators": {
    "li-wei": {"contact": "li-wei", "token_env": "FIREBREAK_TEST_OPERATOR_LI_WEI", "rate_limit": None},
    "chen-jing": {"contact": "chen-jing", "token_env": "FIREBREAK_TEST_OPERATOR_CHEN_JING"},
}}

#: The read token of the incidents API and /docs (the `tests` reader above).
READ_AUTH = {"Authorization": f"Bearer {TOKENS['FIREBREAK_TEST_READ_TOKEN']}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def own_records_database(directory: Path) -> AbstractContextManager[str]:
    """A records database of the test's own, for an intake that only records (executor none):
    the outbox rows it leaves waiting would otherwise be started, rightly, by a later test's
    warm intake on the shared database, before that test's own. (Only for intakes that start
    no runs: incident ids restart in a new database, and runs are found in Prefect by them.)"""
    return records_database_at(f"sqlite:///{directory / 'records.db'}")


def write_config(directory: Path, route: dict[str, Any],
                 access: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """The sources file (`access`, default SOURCES: sources and readers) and routes file for a test intake."""
    sources, routes = directory / "sources.yaml", directory / "routes.yaml"
    sources.write_text(yaml.safe_dump(SOURCES if access is None else access))
    routes.write_text(yaml.safe_dump({"route": route}, sort_keys=False))
    return sources, routes


class RunningIntake:
    def __init__(self, sources: Path, routes: Path, *, executor: str = "warm", prefect_api_url: str | None = None,
                 max_body_bytes: int = 65536, poll_seconds: float = 0.2):
        self.settings = IntakeSettings(sources_file=sources, routes_file=routes, executor=executor,
                                       max_body_bytes=max_body_bytes, outbox_poll_seconds=poll_seconds)
        self.intake = load_intake(self.settings, prefect_api_url=prefect_api_url)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(self.intake), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", backlog=2048,
                                # longer than any pause in a test: an idle keep-alive connection the server
                                # closes just as a client reuses it is reset (ECONNRESET), seen under load
                                timeout_keep_alive=120)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningIntake:
        # The incidents API's read token (READ_AUTH), so any test may read what its intake stored.
        self._set_read_token = "FIREBREAK_TEST_READ_TOKEN" not in os.environ
        os.environ.setdefault("FIREBREAK_TEST_READ_TOKEN", TOKENS["FIREBREAK_TEST_READ_TOKEN"])
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the intake did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        if self._set_read_token:
            os.environ.pop("FIREBREAK_TEST_READ_TOKEN", None)

    def wait_runs(self, timeout: float = 60, *, incident_ids: tuple[str, ...] = ()) -> None:
        """Wait for the runs this intake executed in-process (warm executor) to end; a hang guard,
        not a timing check. On timeout, the failure shows the named incidents' latest events."""
        from concurrent.futures import TimeoutError as FutureTimeout


        deadline = time.monotonic() + timeout
        for flow_run_id, future in list(self.intake.dispatcher.runs.items()):
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                latest = [f"{e.at:%H:%M:%S.%f} {e.step_id or '-'} {e.phase} {e.status}: {e.summary}"
                          for incident_id in incident_ids for e in events(incident_id)[-25:]]
                raise AssertionError(f"run {flow_run_id} still going after {timeout:.0f}s; latest events:\n"
                                     + "\n".join(latest)) from None


class TcpForwarder:
    """Listens on `port` and forwards every connection to `target`: an API that is up."""

    def __init__(self, port: int, target: tuple[str, int]):
        self.port, self.target = port, target
        self.listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.listener.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.thread.join(timeout=5)


def group(fingerprint: str, **labels: str) -> dict:
    return {"version": "4", "status": "firing", "receiver": "firebreak", "groupKey": "{}:{}", "truncatedAlerts": 0,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
            "alerts": [{"status": "firing", "labels": {"alertname": "ServiceDown", **labels},
                        "annotations": {"summary": f"service down ({fingerprint})"},
                        "startsAt": "2026-11-23T09:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "", "fingerprint": fingerprint}]}
