"""Group commit: one writer stores every accepted request, many per transaction.

A request handler hands its alerts to the writer and waits; the writer takes
everything that has queued up (up to `max_batch` requests), stores it in one
transaction (records.alert_ingest.ingest_many) and only then wakes each waiting
handler, which answers 202. Under load, requests that arrive while one batch
commits form the next one, so the cost of a commit (and its fsync) is shared;
when idle, a batch is a single request and nothing waits for company.

If a batch fails, its requests are retried one per transaction, so one request
the store refuses cannot fail the others; a store that is down fails each of
them (the handler answers 503).

The writer here is a thread of the intake process (on PostgreSQL, and in tests that
run the app in-process); `firebreak serve` on SQLite runs the same batches in a
process of its own (intake.writer_process, which says why).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

from records import alert_ingest
from records.alert_ingest import AlertResult, IngestRequest

log = logging.getLogger("firebreak.intake.writer")


@dataclass
class _Waiting:
    request: IngestRequest
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[AlertResult]]


def _settle(future: asyncio.Future[list[AlertResult]], outcome: list[AlertResult] | BaseException) -> None:
    if future.done():  # the client went away; its alerts are stored all the same
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _settle_all(settled: list[tuple[_Waiting, list[AlertResult] | BaseException]]) -> None:
    for waiting, outcome in settled:
        _settle(waiting.future, outcome)


class GroupCommitWriter:
    def __init__(self, *, max_batch: int = 256, url: str | None = None):
        self.max_batch = max_batch
        self.url = url
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.requests = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="alert-writer", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Store what is queued, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    async def ingest(self, request: IngestRequest) -> list[AlertResult]:
        """Store the request (committed when this returns); raises SignatureReplayed or the store's error."""
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AlertResult]] = loop.create_future()
        self._queue.put(_Waiting(request, loop, future))
        return await asyncio.shield(future)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)
            if stopping:
                return

    def _write(self, batch: list[_Waiting]) -> None:
        outcomes = store_batch([w.request for w in batch], url=self.url)
        self.batches += 1
        self.requests += len(batch)
        # One wake-up per event loop, not one per request: each call_soon_threadsafe writes to the
        # loop's self-pipe, and every such system call hands the GIL to the busy event loop and waits
        # to get it back (up to a switch interval), which made a batch's answers cost more than its commit.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiting, list[AlertResult] | BaseException]]] = {}
        for waiting, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(waiting.loop, []).append((waiting, outcome))
        for loop, settled in by_loop.items():
            if not loop.is_closed():  # closed: nobody is waiting any more
                with contextlib.suppress(RuntimeError):  # it closed since the check
                    loop.call_soon_threadsafe(_settle_all, settled)


def store_batch(requests: list[IngestRequest], *, url: str | None = None) -> list[list[AlertResult] | BaseException]:
    """Each request's outcome (its results, SignatureReplayed, or the error that refused it), all stored
    in one transaction; if that fails, one transaction per request, so one request the store refuses
    cannot fail the others. Never raises: the outcomes are answered, and a writer must not die."""
    try:
        return list(alert_ingest.ingest_many(requests, url=url))
    except Exception as exc:  # noqa: BLE001  handed to the waiting requests to answer
        if len(requests) == 1:
            return [exc]
        # The driver's own error, not SQLAlchemy's wrapper: that one repeats every row's values.
        cause = getattr(exc, "orig", None) or exc
        log.warning("a batch of %d requests failed (%s: %s); storing them one by one",
                    len(requests), type(cause).__name__, cause)
        return [_store_one(request, url) for request in requests]


def _store_one(request: IngestRequest, url: str | None) -> list[AlertResult] | BaseException:
    try:
        (outcome,) = alert_ingest.ingest_many([request], url=url)
        return outcome
    except Exception as exc:  # noqa: BLE001  this request's own outcome, answered by the intake; the writer goes on
        return exc
