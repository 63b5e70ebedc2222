"""Support for the run-lifecycle tests: `firebreak worker` processes, outbox rows, a Prefect API
that stalls chosen requests, and what Prefect and the records say happened to each run."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from firebreak.settings import PROJECT_ROOT
from records import alert_ingest, run_outbox
from records.db import session_scope
from records.models import TimelineEvent
from tests.intake_harness import free_port
from tests.polling import wait_for

FIREBREAK = str(Path(sys.executable).with_name("firebreak"))


def number_incidents_apart(url: str | None = None) -> int:
    """Start this records database's incident numbers far from the session database's: Prefect runs
    carry the incident id as a tag, and other tests find their runs by it on the shared Prefect
    server. Returns the first number."""
    import random

    from records.models import Sequence, utcnow

    first = random.randrange(100_000, 900_000, 1000)
    with session_scope(url) as session:
        session.merge(Sequence(name=f"incident-{utcnow().year}", value=first - 1))
    return first


def quick_steps(message: str = "run from the outbox") -> list[dict[str, Any]]:
    return [{"id": "note", "action": "record", "with": {"message": message}},
            {"id": "close", "action": "set_status", "needs": ["note"], "with": {"status": "closed", "reason": "done"}}]


def ask_for_runs(runbook: Path, count: int, *, prefix: str, url: str | None = None) -> list[str]:
    """`count` new incidents, each with its outbox row (pending), as the intake writes them; their ids."""
    plan = alert_ingest.RunPlan(route="test", runbook_id=str(runbook), runbook_version="1", level="III",
                                parameters={}, flow_name="run-runbook")
    alerts = [(alert_ingest.IncomingAlert(source="test", format="generic", fingerprint=f"{prefix}-{n}",
                                          status="firing", summary=f"{prefix} {n}", labels={}), plan)
              for n in range(count)]
    results = alert_ingest.ingest(alerts, url=url)
    assert [r.disposition for r in results] == ["opened"] * count
    return [r.incident_id for r in results if r.incident_id]


def rows(incident_ids: list[str], url: str | None = None) -> dict[str, run_outbox.RunRequest]:
    with session_scope(url) as session:
        found = session.scalars(select(run_outbox.RunRequest)
                                .where(run_outbox.RunRequest.incident_id.in_(incident_ids)))
        return {row.incident_id: row for row in found}


def runs_begun(incident_ids: list[str], url: str | None = None) -> dict[str, int]:
    """How often the engine began a run of each incident (its `run-attached` timeline events)."""
    counts = dict.fromkeys(incident_ids, 0)
    with session_scope(url) as session:
        for incident_id in session.scalars(select(TimelineEvent.incident_id).where(
                TimelineEvent.incident_id.in_(incident_ids), TimelineEvent.status == "run-attached")):
            counts[incident_id] += 1
    return counts


def prefect_runs(incident_ids: list[str], since: datetime, api_url: str | None = None) -> dict[str, list[Any]]:
    """Prefect flow runs tagged with each incident, created since `since` (incident numbers restart
    in each records database, so earlier tests' runs carry the same tags)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    found: dict[str, list[Any]] = {}
    with SyncPrefectClient(api_url or os.environ["PREFECT_API_URL"]) as client:
        for incident_id in incident_ids:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[incident_id])),
                                         limit=50)
            found[incident_id] = [r for r in runs if r.created is not None and r.created >= since]
    return found


class WorkerProcess:
    """`firebreak worker` as a real process, its output in a log file."""

    def __init__(self, directory: Path, *, records_url: str, prefect_api_url: str, slots: int,
                 stale_seconds: float | None = None, name: str = "worker"):
        self.log_path = directory / f"{name}.log"
        self.env = {**os.environ, "FIREBREAK_DATABASE_URL": records_url, "PREFECT_API_URL": prefect_api_url,
                    "PREFECT_LOGGING_LEVEL": "WARNING"}
        if stale_seconds is not None:
            self.env["FIREBREAK_WORKER_STALE_SECONDS"] = str(stale_seconds)
        self.slots = slots
        self.process: subprocess.Popen[bytes] | None = None
        self.worker_id: str | None = None

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self, timeout: float = 90) -> None:
        self.process = subprocess.Popen([FIREBREAK, "worker", "--slots", str(self.slots), "--grace", "5"],
                                        cwd=PROJECT_ROOT, env=self.env, stdout=self.log_path.open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

        def announced() -> str | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited {self.process.returncode}:\n{self.log()[-3000:]}")
            found = re.search(r"run worker (\S+): ", self.log())
            return found.group(1) if found else None

        self.worker_id = wait_for(announced, timeout=timeout, what="the worker to start")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, for real: no handler, no clean stop, nothing given back."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class StallingPrefect:
    """An HTTP proxy in front of the real Prefect API that never answers the requests a rule picks
    (a Prefect that hangs half-way, so a process is caught with claimed rows and Pending runs).

    `rule(method, path, body)` → "forward" | "drop-answer" (forwarded, its answer never sent) |
    "hold" (never forwarded); ids in `path` read `{id}`."""

    def __init__(self, target_api_url: str, rule: Callable[[str, str, bytes], str]):
        self.target = target_api_url.rstrip("/").removesuffix("/api")
        self.rule = rule
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.release = threading.Event()
        self.seen: dict[str, int] = {}
        self.held: list[str] = []  # "METHOD path" of every request held or whose answer was dropped
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                pattern = re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "{id}", self.path.split("?")[0])
                with outer._lock:
                    outer.seen[f"{self.command} {pattern}"] = outer.seen.get(f"{self.command} {pattern}", 0) + 1
                    decision = outer.rule(self.command, pattern, body)
                if decision == "hold":
                    outer._hold(f"{self.command} {self.path}")
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
                try:
                    answer = httpx.request(self.command, outer.target + self.path, content=body, headers=headers,
                                           timeout=60)
                except httpx.HTTPError:
                    self.send_error(502)
                    return
                if decision == "drop-answer":
                    outer._hold(f"{self.command} {self.path}")
                    return
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _hold(self, what: str) -> None:
        with self._lock:
            self.held.append(what)
        self.release.wait(600)

    def __enter__(self) -> StallingPrefect:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def wait_until_finished(incident_ids: list[str], *, url: str | None = None, timeout: float = 180,
                        what: str = "every run to finish") -> dict[str, run_outbox.RunRequest]:
    deadline = time.monotonic() + timeout
    while True:
        found = rows(incident_ids, url)
        if all(r.finished_at is not None for r in found.values()) and len(found) == len(incident_ids):
            return found
        if time.monotonic() > deadline:
            waiting = {i: (r.status, r.claimed_by, r.attempts, r.last_error) for i, r in found.items()
                       if r.finished_at is None}
            raise AssertionError(f"timed out waiting for {what}; not finished: {waiting}")
        time.sleep(0.2)


def create_flow_run_for(row: run_outbox.RunRequest, state: Any) -> Any:
    """The flow run a dead executor left for `row` (same idempotency key, name and tags as the
    executor gives it), in `state`: Pending (created, never begun), Scheduled (made for workers)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import FlowRunCreate
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import to_state_create

    from intake.runs import _register_flow, entry_flow, run_name

    with get_client(sync_client=True) as client:
        flow_id = _register_flow(client, entry_flow(row.flow_name))
        create = FlowRunCreate(flow_id=flow_id, name=run_name(row), parameters=row.parameters,
                               tags=["firebreak", "alert", row.incident_id], state=to_state_create(state),
                               idempotency_key=row.idempotency_key)
        response = client.request("POST", "/flow_runs/", json=create.model_dump(mode="json", exclude_unset=True))
        return FlowRun.model_validate(response.json())


def flow_run_state(flow_run_id: str, api_url: str | None = None) -> str:
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api_url or os.environ["PREFECT_API_URL"]) as client:
        state = client.read_flow_run(flow_run_id).state
    return state.type.value if state else "NONE"
