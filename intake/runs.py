"""Start runbook runs from the outbox, exactly once per incident: the run executor.

One class, `RunDispatcher`, is every executor: the one embedded in the intake (the default,
`FIREBREAK_INTAKE_EXECUTOR=warm`) and the stand-alone `firebreak worker` process. Each has N
run slots and moves outbox rows (records.run_outbox.RunRequest) through their lifecycle:

- **claim** as many due rows as it has free slots, never more (the rest wait in the database,
  where any executor can take them); a conditional UPDATE, so of several executors exactly one
  gets each row. Also claimable: rows held by an executor whose heartbeat is stale (or that
  stopped), so a dead one's work is not forgotten.
- **create or find** the Prefect flow run with the incident's idempotency key: a retry, or a
  takeover of a dead executor's row, gets the same run back, never a second one.
- **start** it in the slot's thread (`prefect.flow_engine.run_flow`) if it has not begun
  (Pending, or Scheduled and this executor wins the move to Pending); the row becomes
  `started` just before, fenced on the claim. Prefect is already imported and the client warm,
  so the flow body starts well under a second after the alert. A run that Prefect shows
  running (or paused) somewhere is left alone; one that already ended is marked finished.
- **finish**: when the run returns, whatever its state, the row is `finished`.

The `deployment` executor creates the run from the runbook's deployment (Scheduled) and
hands it to Prefect's workers (row `scheduled`); reconcile marks it finished when it ends.

Each executor registers a RunWorker row and renews its heartbeat every ~2 s; a clean stop
marks it stopped and gives back the rows it claimed but did not begin.

If Prefect is busy (5xx, or slow to answer) the slot keeps its row and tries again, and fewer
slots take new rows until Prefect answers fast again (_pace); if Prefect cannot be reached for
10 s, the row goes back to pending and the executor stops claiming for a back-off (up to 10 s),
so an accepted alert is started when Prefect returns, once.
"""
from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, ExitStack
from datetime import timedelta
from typing import Any, TypeVar

from firebreak.background import repeating
from flows import first_pages
from records import run_outbox
from records.models import utcnow
from records.signatures import forget_signatures_before

log = logging.getLogger("firebreak.intake.runs")

SIGNATURE_RETENTION = timedelta(days=1, hours=1)  # longer than the longest replay window (1 day)
WORKER_RETENTION = timedelta(days=1)  # rows of workers silent this long are deleted
#: Prefect flow-run states (type) after which nothing runs the run any more.
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
#: The longest pause in claiming while Prefect cannot be reached.
PREFECT_BACKOFF_LIMIT = 10.0
#: A run creation slower than this means Prefect is at its limit (see RunDispatcher._pace).
SLOW_CREATION_SECONDS = 1.0
#: Slots that stay open to new claims however slowly Prefect answers.
MIN_OPEN_SLOTS = 2
#: Flow runs an executor creates (or looks up) at the same time.
CREATORS = 4
#: Prefect client retries when creating a run: none. Its own (5, back-off doubling from 2 s) held a
#: slot for a minute while Prefect was down, and slept 2 s on each 503 the embedded SQLite server
#: answers when two writes meet (an instant "database is locked"), while the write lock is usually
#: free again within milliseconds. The executor retries itself instead (see _serve).
CREATION_RETRIES = 0
#: The executor's first pause before it asks a busy (503) Prefect again, doubled per answer to BUSY_PAUSE_LIMIT.
BUSY_PAUSE = 0.1
BUSY_PAUSE_LIMIT = 2.0
#: How long a slot keeps a claimed row while Prefect cannot be reached, trying again, before it gives
#: the row back to the outbox (a Prefect that answers, if busy, keeps the row with the slot).
HOLD_SECONDS = 10.0
#: A slot retries a write the records database refused this often (it holds its slot meanwhile).
STORE_RETRY_SECONDS = 1.0

T = TypeVar("T")


def entry_flow(flow_name: str) -> Any:
    if flow_name == "run-runbook":
        from flows.engine import run_runbook

        return run_runbook
    from flows.seed_runbooks import ENTRY_FLOWS

    return ENTRY_FLOWS[flow_name]


class RunDispatcher:
    """A run executor with `max_concurrent_runs` slots (see the module docstring).

    `start()` registers the worker, starts its heartbeat and the claim loop; `kick()` after a
    commit claims at once instead of at the next poll; `stop()` stops claiming, marks the worker
    stopped and gives back what it claimed but did not begin. Runs already begun go on in
    their (daemon) threads: stopping must not wait for a run paused for an approval; a run cut
    short by the process ending is recorded as crashed by `firebreak reconcile`."""

    def __init__(self, executor: str = "warm", *, max_concurrent_runs: int = 16, poll_seconds: float = 0.5,
                 prefect_api_url: str | None = None, records_url: str | None = None,
                 heartbeat_seconds: float = 2.0, stale_after: float = run_outbox.WORKER_STALE_SECONDS):
        if executor not in ("warm", "deployment", "none"):
            raise ValueError(f"executor must be warm, deployment or none, not {executor!r}")
        if max_concurrent_runs < 1:
            raise ValueError("an executor needs at least one run slot")
        self.executor = executor
        self.slots = max_concurrent_runs
        self.poll_seconds = poll_seconds
        self.prefect_api_url = prefect_api_url
        self.records_url = records_url
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after = stale_after
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._registered = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._background = ExitStack()
        self._lock = threading.Lock()
        self._busy = 0  # slots holding a claimed row or a run
        self._handoff: queue.SimpleQueue[run_outbox.RunRequest] = queue.SimpleQueue()  # ≤ free slots, never more
        self._threads = self._idle = self._waiting = 0
        self._finishing = 0  # runs that gave their slot up to wait for others' first pages (_serve_in_slot)
        self._prefect_backoff = 0.0
        self._prefect_down_until = 0.0
        #: Slots open to new claims, ≤ slots: halved when Prefect answers a creation slowly or busy,
        #: grown back one at a time while it answers fast (see _pace).
        self._open_slots = float(max_concurrent_runs)
        self._creators = threading.BoundedSemaphore(min(CREATORS, max_concurrent_runs))
        self._flow_ids: dict[str, Any] = {}  # flow name → id on the Prefect server (for run creation)
        self.runs: dict[str, Future[Any]] = {}  # flow run id → its execution here, while it runs (warm)
        self._last_prune = 0.0
        self._built_settings: dict[int | None, Any] = {}  # client retries → Settings (see _settings)
        self._api_tls: Any = None  # ssl.SSLContext every slot's client verifies with (see _api_tls_context)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.executor == "none" or self._thread is not None:
            return
        try:
            self._renew()
        except Exception as exc:  # noqa: BLE001  the store is down, say: the heartbeat thread registers when it is back
            log.warning("run worker %s not registered yet: %s: %s", self.worker_id, type(exc).__name__, exc)
        self._background.enter_context(repeating(self._renew, self.heartbeat_seconds,
                                                 f"run-worker-heartbeat-{self.worker_id}", now=False))
        self._thread = threading.Thread(target=self._loop, name="run-dispatcher", daemon=True)
        self._thread.start()
        # On PostgreSQL: claim the moment another process commits a new incident's row, not at the next
        # poll (which averaged half of poll_seconds, 0.25 s, on every worker-run alert's way to a page).
        self._listener = threading.Thread(target=run_outbox.wait_for_due_rows, args=(self.kick, self._stop),
                                          kwargs={"url": self.records_url}, name="run-outbox-listener", daemon=True)
        self._listener.start()

    def kick(self) -> None:
        """Something was just committed: look at the outbox now rather than at the next poll."""
        self._wake.set()

    def stop(self, *, wait_for_runs: bool = False) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return
        self._thread.join(timeout=10)
        if self._listener is not None:
            self._listener.join(timeout=5)  # it looks at the stop every second
        self._background.close()
        try:
            given_back = run_outbox.stop_worker(self.worker_id, url=self.records_url)
            if given_back:
                log.info("run worker %s stopped; %d claimed run(s) given back", self.worker_id, given_back)
        except Exception as exc:  # noqa: BLE001  best-effort at stop: its heartbeat goes stale, the others take its rows
            log.warning("could not mark run worker %s stopped: %s: %s", self.worker_id, type(exc).__name__, exc)
        if wait_for_runs:
            for future in list(self.runs.values()):
                future.exception()

    @property
    def free_slots(self) -> int:
        with self._lock:
            return max(0, int(self._open_slots) - self._busy)

    def _renew(self) -> None:
        if self._registered.is_set() and run_outbox.renew_worker(self.worker_id, url=self.records_url):
            return
        run_outbox.register_worker(self.worker_id, host=socket.gethostname(), pid=os.getpid(), slots=self.slots,
                                   url=self.records_url)
        self._registered.set()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self.dispatch_due() and not self._stop.is_set():
                    pass
                self._prune()
            except Exception as exc:  # noqa: BLE001  dispatcher loop must not die: the rows wait, we try again
                log.warning("outbox dispatch failed; will retry: %s: %s", type(exc).__name__, exc)

    # --- claiming ----------------------------------------------------------------------------------

    def dispatch_due(self) -> int:
        """Claim as many due rows as there are free slots and hand each to a slot; returns how many."""
        if not self._registered.is_set() or self._stop.is_set() or time.monotonic() < self._prefect_down_until:
            return 0
        with self._lock:
            free = int(self._open_slots) - self._busy
            if free <= 0:
                return 0
            self._busy += free  # reserved while claiming: a concurrent call cannot claim them too
        rows: list[run_outbox.RunRequest] = []
        try:
            rows = run_outbox.claim_run_requests(self.worker_id, limit=free, stale_after=self.stale_after,
                                                 url=self.records_url)
        finally:
            with self._lock:
                self._busy -= free - len(rows)
        for row in rows:
            self._hand(row)
        return len(rows)

    def _hand(self, row: run_outbox.RunRequest) -> None:
        """Give a claimed row to an idle slot thread, starting one if none is idle (at most `slots`)."""
        with self._lock:
            self._waiting += 1
            self._handoff.put(row)
            if self._waiting > self._idle and self._threads < self.slots:
                self._threads += 1
                threading.Thread(target=self._slot, name=f"run-slot-{self._threads}", daemon=True).start()

    def _slot(self) -> None:
        """A slot thread: keeps one Prefect client for its life (a new client costs ~50 ms of CPU,
        more than creating a run does) and serves one claimed row at a time. A run that gives its slot
        up to wait for others' first pages (flows.first_pages) goes on in this thread, which then
        serves no more rows if the dispatcher has started its full count of slot threads meanwhile."""
        with _enter_client_context(self._settings, self._api_tls_context):
            while True:
                with self._lock:
                    self._idle += 1
                row = self._handoff.get()
                with self._lock:
                    self._idle -= 1
                    self._waiting -= 1
                if not self._serve_in_slot(row):
                    return

    def _serve_in_slot(self, row: run_outbox.RunRequest) -> bool:
        """Serve one row; whether this thread is still a slot thread afterwards."""
        released = False

        def release() -> bool:
            nonlocal released
            with self._lock:
                if released or self._finishing >= self.slots:  # at most as many finishing as slots
                    return False
                released = True
                self._finishing += 1
                self._busy -= 1
                self._threads -= 1  # no longer one of the slot threads: _hand may start another
            self._wake.set()  # a slot is free: claim the next row now
            return True

        # From its claim the run is on its way to a first page: other runs' reports wait for it.
        first_pages.expect(row.incident_id)
        try:
            with first_pages.releasable_slot(release):
                self._serve(row)
        except Exception as exc:  # never lose the slot, nor the row: give it back if it is still only claimed
            log.exception("run slot failed on %s: %s: %s", row.incident_id, type(exc).__name__, exc)
            self._give_back(row, f"{type(exc).__name__}: {exc}")
        finally:
            first_pages.forget(row.incident_id)
            with self._lock:
                if released:
                    self._finishing -= 1
                    rejoin = self._threads < self.slots
                    self._threads += rejoin
                else:
                    self._busy -= 1
                    rejoin = True
            self._wake.set()  # a slot is free: claim the next row now
        return rejoin

    # --- one claimed row ---------------------------------------------------------------------------

    def _serve(self, row: run_outbox.RunRequest) -> None:
        if self._stop.is_set():
            return  # stop_worker gives the row back
        held_since, pause = time.monotonic(), BUSY_PAUSE
        while True:
            try:
                # At most CREATORS at once: creating is one short API write, and more at a time only
                # queue for the Prefect database's lock (runs themselves go on in every slot).
                with self._creators, self._settings(client_retries=CREATION_RETRIES):
                    asked = time.monotonic()
                    flow_run = self._create_flow_run(row)  # or the existing one: the idempotency key
                    answered = time.monotonic() - asked
                    state = flow_run.state.type.value if flow_run.state else "PENDING"
                    ours = state == "PENDING"
                    if self.executor == "warm" and state == "SCHEDULED":
                        flow_run, state, ours = self._take_scheduled(flow_run)
                break
            except Exception as exc:  # noqa: BLE001  classified below; anything else is recorded on the row (_not_created)
                # Prefect busy (it answers 5xx: a loaded server) or briefly away (a restart): keep the
                # claim and try again. Busy, for as long as it takes (another executor would meet the same
                # server); unreachable from here, for HOLD_SECONDS, then the row goes back to the outbox
                # for any executor (another machine may reach Prefect).
                busy = _prefect_busy(exc)
                if busy:
                    self._pace(slow=True)
                if ((busy or _prefect_unavailable(exc)) and not self._stop.is_set()
                        and (busy or time.monotonic() - held_since + pause < HOLD_SECONDS)):
                    if pause == BUSY_PAUSE or pause >= BUSY_PAUSE_LIMIT:  # not a records write per quick retry
                        self._note_error(row, exc, pause)
                    # Jittered, so the slots that met the same lock do not all ask again at once.
                    self._stop.wait(pause * random.uniform(0.5, 1.5))
                    pause = min(pause * 2, BUSY_PAUSE_LIMIT if busy else 4.0)
                    continue
                self._not_created(row, exc)
                return
        self._prefect_backoff = 0.0
        self._pace(slow=answered > SLOW_CREATION_SECONDS)
        flow_run_id = str(flow_run.id)
        if state in FINAL_STATES:
            self._store(lambda: run_outbox.mark_run_finished(row.incident_id, flow_run_id, url=self.records_url))
        elif self.executor == "deployment" and state in ("SCHEDULED", "PENDING"):
            self._store(lambda: run_outbox.mark_run_elsewhere(row.incident_id, flow_run_id, "scheduled",
                                                              worker=self.worker_id, url=self.records_url))
        elif state == "SCHEDULED":  # not yet due (Prefect said wait): try again then
            self._store(lambda: run_outbox.release_run_request(row.incident_id, "scheduled for later", 1.0,
                                                               worker=self.worker_id, url=self.records_url))
        elif not ours:  # Running, Paused, Cancelling … somewhere else; reconcile judges it if it died
            self._store(lambda: run_outbox.mark_run_elsewhere(row.incident_id, flow_run_id, "started",
                                                              worker=self.worker_id, url=self.records_url))
        elif self.executor == "warm":
            self._run(row, flow_run)

    def _run(self, row: run_outbox.RunRequest, flow_run: Any) -> None:
        flow_run_id = str(flow_run.id)
        # Registered before "started" is recorded: whoever sees "started" finds the run here.
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        self.runs[flow_run_id] = future
        result: Any = None
        try:
            if not self._store(lambda: run_outbox.mark_run_started(row.incident_id, flow_run_id,
                                                                   worker=self.worker_id, url=self.records_url)):
                log.info("run of %s not started here: the claim was taken over", row.incident_id)
                self.runs.pop(flow_run_id, None)
                return
            result = self._execute(row.flow_name, flow_run, row.parameters)
            self._store(lambda: run_outbox.mark_run_finished(row.incident_id, flow_run_id, url=self.records_url))
        finally:
            self.runs.pop(flow_run_id, None)  # only runs still going are kept (a long-lived worker)
            future.set_result(result)

    def _store(self, write: Callable[[], T]) -> T | None:
        """A write to the records database, retried while it cannot be reached (the slot waits);
        given up when the executor stops (the row is then taken over like a dead worker's)."""
        while True:
            try:
                return write()
            except Exception as exc:  # noqa: BLE001  the store's errors vary by driver: retried, the slot must not die
                if self._stop.is_set():
                    log.warning("outbox write given up at stop: %s: %s", type(exc).__name__, exc)
                    return None
                log.warning("outbox write failed; retrying: %s: %s", type(exc).__name__, exc)
                self._stop.wait(STORE_RETRY_SECONDS)

    def _pace(self, *, slow: bool) -> None:
        """Back-pressure from Prefect: a server that answers a creation slowly (or 5xx) is at its limit
        (the embedded SQLite one is, long before 16 runs at once), and more runs at a time only make
        every run slower. Then fewer slots take new rows (the rest wait in the outbox), at least
        MIN_OPEN_SLOTS; while it answers fast, one more at a time, up to all of them."""
        with self._lock:
            if slow:
                self._open_slots = max(float(min(MIN_OPEN_SLOTS, self.slots)), self._open_slots / 2)
            else:
                self._open_slots = min(float(self.slots), self._open_slots + 0.5)

    def _give_back(self, row: run_outbox.RunRequest, error: str, retry_in: float = 5.0) -> None:
        self._store(lambda: run_outbox.release_run_request(row.incident_id, error, retry_in, worker=self.worker_id,
                                                           url=self.records_url))

    def _note_error(self, row: run_outbox.RunRequest, exc: Exception, pause: float) -> None:
        error = f"{type(exc).__name__}: {exc}"
        log.info("creating the run of %s: %s; trying again in %.1fs", row.incident_id, error, pause)
        self._store(lambda: run_outbox.note_run_error(row.incident_id, error, worker=self.worker_id,
                                                      url=self.records_url))

    def _not_created(self, row: run_outbox.RunRequest, exc: Exception) -> None:
        self._flow_ids.pop(row.flow_name, None)  # in case the server is a new one that never saw it
        if _prefect_unavailable(exc):
            # Not this row's fault: pause claiming (every row would fail alike) and let it be due again
            # then. The pause grows once per failure seen after the last pause ended, not once per slot.
            if time.monotonic() >= self._prefect_down_until:
                self._prefect_backoff = min(PREFECT_BACKOFF_LIMIT, max(0.5, self._prefect_backoff * 2))
                self._prefect_down_until = time.monotonic() + self._prefect_backoff
            delay = self._prefect_backoff
        else:
            delay = min(30.0, 0.5 * 2 ** min(row.attempts, 6))
        log.warning("could not create the run of %s (attempt %d), retrying in %.1fs: %s: %s",
                    row.incident_id, row.attempts, delay, type(exc).__name__, exc)
        self._store(lambda: run_outbox.release_run_request(row.incident_id, f"{type(exc).__name__}: {exc}", delay,
                                                           worker=self.worker_id, url=self.records_url))

    def _take_scheduled(self, flow_run: Any) -> tuple[Any, str, bool]:
        """A Scheduled run (made for a deployment's workers) is run here only if this executor wins
        its move to Pending, as a Prefect worker would: of several takers exactly one does."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.states import Pending

        with get_client(sync_client=True) as client:
            result: Any = client.set_flow_run_state(flow_run.id, Pending())
            if result.status == SetStateStatus.ACCEPT and result.state is not None:
                flow_run.state = result.state
                return flow_run, "PENDING", True
            flow_run = client.read_flow_run(flow_run.id)
        return flow_run, flow_run.state.type.value if flow_run.state else "SCHEDULED", False

    def _settings(self, *, client_retries: int | None = None) -> AbstractContextManager[Any]:
        """The settings this executor's runs use (with `client_retries`: its run creations'), built once
        each and entered per thread. Prefect's temporary_settings builds a whole new Settings object each
        time (pydantic-settings reads the environment again): 13 % of the intake's CPU in a burst when it
        was built per creation, and 10 % more when built per new slot thread (0.13 CPU-s each on a slow
        machine, and a burst starts up to 16 slot threads)."""
        from prefect.context import SettingsContext, get_settings_context

        built = self._built_settings.get(client_retries)
        if built is None:
            built = self._build_settings(client_retries)
            self._built_settings[client_retries] = built  # two threads may both build it: the same value
        return SettingsContext(profile=get_settings_context().profile, settings=built)

    def _build_settings(self, client_retries: int | None) -> Any:
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_CLIENT_MAX_RETRIES,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            temporary_settings,
        )

        # Prefect's own flow-run heartbeats (an event every 180 s, for its zombie-run automations) are off
        # for the runs executed here: Firebreak's heartbeat (flows.heartbeat) and reconcile judge a dead run,
        # and Prefect's end of run waited up to a second for its heartbeat thread, holding the slot
        # (measured with cProfile: 0.4 s a run on average, while a burst waited for slots).
        updates: dict[Any, Any] = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        if self.prefect_api_url:
            updates[PREFECT_API_URL] = self.prefect_api_url
        if client_retries is not None:
            updates[PREFECT_CLIENT_MAX_RETRIES] = client_retries
        with temporary_settings(updates=updates) as settings:
            return settings

    def _api_tls_context(self) -> Any:
        """The TLS context the slots' Prefect clients verify the API with, made once. Prefect's client
        makes a new one per client (loading every CA certificate: 80 ms of CPU on a slow machine, paid
        per new slot thread in a burst), as its own settings say: a CA file, or no verification."""
        if self._api_tls is None:
            import ssl

            import certifi
            from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

            if PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value():
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                context = ssl.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())
            self._api_tls = context
        return self._api_tls

    def _create_flow_run(self, row: run_outbox.RunRequest) -> Any:
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

    def _execute(self, flow_name: str, flow_run: Any, parameters: dict[str, Any]) -> Any:
        from prefect.flow_engine import run_flow

        try:  # the thread's settings and client are already in place (_slot)
            return run_flow(entry_flow(flow_name), flow_run=flow_run, parameters=parameters, return_type="state")
        except BaseException as exc:  # noqa: BLE001  the flow's own hooks record the failure; the warm slot lives on
            log.warning("run %s ended with %s: %s", flow_run.id, type(exc).__name__, exc)
            return None

    def _prune(self) -> None:
        if time.monotonic() - self._last_prune < 600:
            return
        self._last_prune = time.monotonic()
        forget_signatures_before(utcnow() - SIGNATURE_RETENTION, url=self.records_url)
        run_outbox.forget_workers_before(utcnow() - WORKER_RETENTION, url=self.records_url)


def _prefect_unavailable(exc: BaseException) -> bool:
    """Prefect did not answer (or answered that it cannot serve now), as opposed to refusing this run."""
    import httpx

    return isinstance(exc, httpx.TransportError | OSError) or _prefect_busy(exc)


def _prefect_busy(exc: BaseException) -> bool:
    """Prefect is there but overloaded: it answered with a server error (503: its database is busy),
    or took the connection and did not answer in time."""
    import httpx

    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return True
    response = getattr(exc, "response", None)
    return response is not None and getattr(response, "status_code", 0) >= 500


def run_name(row: run_outbox.RunRequest) -> str:
    """The name the engine gives the run (flows.engine), so it need not rename it: one API write less.
    A route may name its runbook by path: the engine names the run by the runbook's id."""
    runbook = row.parameters.get("runbook")
    if isinstance(runbook, str) and runbook:
        from tasks.catalog import load_runbook

        try:
            runbook = load_runbook(runbook).runbook.id  # cached per file and modification time
        except Exception as exc:  # noqa: BLE001  the engine reports a runbook it cannot load; a name is no reason to fail here
            log.debug("run of %s named by its runbook parameter: %s", row.incident_id, exc)
    return f"{row.incident_id} · {runbook or row.flow_name}"


def _register_flow(client: Any, flow: Any) -> Any:
    """The flow's id on the server (POST /flows/ returns the existing flow for a known name)."""
    from prefect.client.schemas.actions import FlowCreate
    from prefect.client.schemas.objects import Flow

    return Flow.model_validate(
        client.request("POST", "/flows/", json=FlowCreate(name=flow.name).model_dump(mode="json")).json()).id


def _create_pending_run(client: Any, flow: Any, flow_id: Any, row: run_outbox.RunRequest, tags: list[str]) -> Any:
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


def _enter_client_context(settings: Callable[[], AbstractContextManager[Any]], tls: Callable[[], Any]) -> ExitStack:
    """Enter the API settings and a Prefect client context in this thread, so every flow run and API
    call made from it reuses one client, which verifies the API with the `tls()` context shared by all
    slots. If Prefect cannot be reached now, the thread goes on without: each run then makes its own
    client, as Prefect does.

    The caller keeps what this returns for the thread's life: dropped, a context could be left at once
    (a generator-based one was, when collected: the slot's runs then went on with the process's
    settings, Prefect's heartbeat thread and its API URL)."""
    contexts = ExitStack()
    contexts.enter_context(settings())
    try:
        from prefect.client.orchestration import get_client
        from prefect.context import SyncClientContext

        # model_construct, not SyncClientContext(httpx_settings=…): get_client() hands out a context's
        # client only to callers asking with the same httpx settings, and the runs' calls ask with none.
        client = get_client(sync_client=True, httpx_settings={"verify": tls()})
        contexts.enter_context(SyncClientContext.model_construct(client=client))
    except Exception as exc:  # noqa: BLE001  optional reuse: without it each run makes its own client, as Prefect does
        log.info("no lasting Prefect client for %s: %s: %s", threading.current_thread().name,
                 type(exc).__name__, exc)
    return contexts
