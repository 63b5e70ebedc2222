"""Start runbook runs from the outbox, exactly once per incident.

The intake commits an outbox row (records.alerts.RunRequest) with the incident;
this dispatcher claims due rows (a conditional UPDATE, so of several replicas
exactly one gets each), creates the Prefect flow run with the incident's
idempotency key (a retry or a second replica gets the same run back, never a
second one), and then runs it:

- executor "warm": in this process, in a thread (`prefect.flow_engine.run_flow`
  with the created flow run). Prefect is already imported and the client warm,
  so the flow body starts well under a second after the alert; a run started
  through a worker or `serve()` first spends seconds importing Prefect in a new
  process. The run is created in Pending state, which workers never pick up.
- executor "deployment": the run is created from the runbook's deployment
  (Scheduled), and a worker or `prefect serve` process runs it.

If Prefect cannot be reached, the row goes back to pending with a back-off and
is tried again, so an accepted alert is started when Prefect returns.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any

from records import alerts
from records.models import utcnow

log = logging.getLogger("firebreak.intake.runs")

SIGNATURE_RETENTION = timedelta(days=1, hours=1)  # longer than the longest replay window (1 day)


def entry_flow(flow_name: str) -> Any:
    if flow_name == "run-runbook":
        from flows.engine import run_runbook

        return run_runbook
    from flows.seed_runbooks import ENTRY_FLOWS

    return ENTRY_FLOWS[flow_name]


class RunDispatcher:
    def __init__(self, executor: str = "warm", *, max_concurrent_runs: int = 16, poll_seconds: float = 2.0,
                 prefect_api_url: str | None = None, records_url: str | None = None):
        if executor not in ("warm", "deployment", "none"):
            raise ValueError(f"executor must be warm, deployment or none, not {executor!r}")
        self.executor = executor
        self.poll_seconds = poll_seconds
        self.prefect_api_url = prefect_api_url
        self.records_url = records_url
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_threads = _RunThreads(max_concurrent_runs, self._settings)
        # Each creator thread keeps one Prefect client: a new client costs ~50 ms of CPU (an SSL
        # context), more than creating the run does.
        self._creators = ThreadPoolExecutor(max_workers=4, thread_name_prefix="run-creator",
                                            initializer=self._hold_client)
        self._flow_ids: dict[str, Any] = {}  # flow name → id on the Prefect server (for run creation)
        self.runs: dict[str, Future[Any]] = {}  # flow run id → its execution here (warm executor)
        self._last_prune = 0.0

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.executor == "none" or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="run-dispatcher", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Something was just committed: look at the outbox now rather than at the next poll."""
        self._wake.set()

    def stop(self, *, wait_for_runs: bool = False) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._creators.shutdown(wait=True)
        if wait_for_runs:
            for future in list(self.runs.values()):
                future.exception()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self.dispatch_due() and not self._stop.is_set():
                    pass
                self._prune_signatures()
            except Exception as exc:  # the store is down, say: the rows wait, we try again
                log.warning("outbox dispatch failed; will retry: %s: %s", type(exc).__name__, exc)

    # --- one pass ----------------------------------------------------------------------------------

    def dispatch_due(self) -> int:
        """Claim the due outbox rows and hand them to the creator threads; returns how many were claimed."""
        rows = alerts.claim_run_requests(self.worker_id, url=self.records_url)
        # Not waited for: in a burst, rows committed while these runs are being created are
        # claimed at once rather than after the slowest creation of this batch.
        for row in rows:
            self._creators.submit(self._start, row)
        return len(rows)

    def _hold_client(self) -> None:
        """Thread initializer: enter a Prefect client context for the thread's life (see _RunThreads)."""
        _enter_client_context(self._settings)

    def _settings(self) -> AbstractContextManager[Any]:
        if not self.prefect_api_url:
            return nullcontext()
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # A context variable: it applies to this thread only, not to the whole process.
        return temporary_settings(updates={PREFECT_API_URL: self.prefect_api_url})

    def _start(self, row: alerts.RunRequest) -> None:
        try:
            with self._settings():
                flow_run = self._create_flow_run(row)
        except Exception as exc:
            self._flow_ids.pop(row.flow_name, None)  # in case the server is a new one that never saw it
            delay = min(30.0, 0.5 * 2 ** min(row.attempts, 6))
            log.warning("could not create the run of %s (attempt %d), retrying in %.1fs: %s: %s",
                        row.incident_id, row.attempts, delay, type(exc).__name__, exc)
            alerts.release_run_request(row.incident_id, f"{type(exc).__name__}: {exc}", delay, url=self.records_url)
            return
        flow_run_id = str(flow_run.id)
        not_started = flow_run.state is None or flow_run.state.type.value in ("PENDING", "SCHEDULED")
        # Run first, then record "started": whoever sees "started" can find the run here; and if the
        # store fails in between, a later claim finds this flow run no longer Pending and only records it.
        if self.executor == "warm" and not_started and flow_run_id not in self.runs:
            self.runs[flow_run_id] = self._run_in_thread(row.flow_name, flow_run, row.parameters)
        alerts.mark_run_started(row.incident_id, flow_run_id, url=self.records_url)

    def _create_flow_run(self, row: alerts.RunRequest) -> Any:
        from prefect.client.orchestration import get_client

        tags = ["firebreak", "alert", row.incident_id]
        with get_client(sync_client=True) as client:
            if self.executor == "deployment":
                deployment = client.read_deployment_by_name(f"{row.flow_name}/{row.flow_name}")
                return client.create_flow_run_from_deployment(
                    deployment.id, parameters=row.parameters, idempotency_key=row.idempotency_key, tags=tags,
                    name=run_name(row))
            flow = entry_flow(row.flow_name)
            if row.flow_name not in self._flow_ids:
                self._flow_ids[row.flow_name] = _register_flow(client, flow)
            return _create_pending_run(client, flow, self._flow_ids[row.flow_name], row, tags)

    def _run_in_thread(self, flow_name: str, flow_run: Any, parameters: dict[str, Any]) -> Future[Any]:
        return self._run_threads.submit(lambda: self._execute(flow_name, flow_run, parameters))

    def _execute(self, flow_name: str, flow_run: Any, parameters: dict[str, Any]) -> Any:
        from prefect.flow_engine import run_flow

        try:  # the thread's settings and client are already in place (_RunThreads)
            return run_flow(entry_flow(flow_name), flow_run=flow_run, parameters=parameters, return_type="state")
        except BaseException as exc:  # the flow's own hooks record the failure on the incident
            log.warning("run %s ended with %s: %s", flow_run.id, type(exc).__name__, exc)
            return None

    def _prune_signatures(self) -> None:
        if time.monotonic() - self._last_prune < 600:
            return
        self._last_prune = time.monotonic()
        alerts.forget_signatures_before(utcnow() - SIGNATURE_RETENTION, url=self.records_url)


def run_name(row: alerts.RunRequest) -> str:
    """The name the engine gives the run (flows.engine), so it need not rename it: one API write less."""
    return f"{row.incident_id} · {row.parameters.get('runbook') or row.flow_name}"


def _register_flow(client: Any, flow: Any) -> Any:
    """The flow's id on the server (POST /flows/ returns the existing flow for a known name)."""
    from prefect.client.schemas.actions import FlowCreate
    from prefect.client.schemas.objects import Flow

    return Flow.model_validate(
        client.request("POST", "/flows/", json=FlowCreate(name=flow.name).model_dump(mode="json")).json()).id


def _create_pending_run(client: Any, flow: Any, flow_id: Any, row: alerts.RunRequest, tags: list[str]) -> Any:
    """POST /flow_runs/ with the incident's idempotency key (the client's create_flow_run has no
    such argument; the server returns the existing run for a key it has seen)."""
    from prefect.client.schemas.actions import FlowRunCreate
    from prefect.client.schemas.objects import FlowRun, FlowRunPolicy
    from prefect.states import Pending, to_state_create

    create = FlowRunCreate(
        flow_id=flow_id, flow_version=flow.version, name=run_name(row),
        parameters=row.parameters, tags=tags, state=to_state_create(Pending()),
        idempotency_key=row.idempotency_key,
        empirical_policy=FlowRunPolicy(retries=flow.retries, retry_delay=int(flow.retry_delay_seconds or 0)),
    )
    response = client.request("POST", "/flow_runs/", json=create.model_dump(mode="json", exclude_unset=True))
    return FlowRun.model_validate(response.json())


def _enter_client_context(settings: Callable[[], AbstractContextManager[Any]]) -> None:
    """Enter (and never leave) the API settings and a Prefect client context in this thread, so
    every flow run and API call made from it reuses one client. If Prefect cannot be reached
    now, the thread goes on without: each run then makes its own client, as Prefect does."""
    settings().__enter__()
    try:
        from prefect.context import SyncClientContext

        SyncClientContext.get_or_create().__enter__()
    except Exception as exc:
        log.info("no lasting Prefect client for %s: %s: %s", threading.current_thread().name,
                 type(exc).__name__, exc)


class _RunThreads:
    """The threads that execute runs: at most `size`, started as runs need them and kept, each
    with its own lasting Prefect client (a run started on a warm thread saves building one).

    Daemon threads, not a ThreadPoolExecutor (whose threads the interpreter joins at exit):
    stopping the intake must not wait for a run paused for an approval. A run cut short that
    way is recorded as crashed by `firebreak reconcile` (its heartbeat stops)."""

    def __init__(self, size: int, settings: Callable[[], AbstractContextManager[Any]]):
        self.size = size
        self._settings = settings
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._waiting = 0  # submitted, not yet taken by a thread

    def submit(self, work: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            self._waiting += 1
            self._queue.put((work, future))
            if self._waiting > self._idle and self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"runbook-runs-{self._threads}", daemon=True).start()
        return future

    def _serve(self) -> None:
        _enter_client_context(self._settings)
        while True:
            with self._lock:
                self._idle += 1
            work, future = self._queue.get()
            with self._lock:
                self._idle -= 1
                self._waiting -= 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)
