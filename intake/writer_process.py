"""The alert writer as a process of its own, for intakes on SQLite (`firebreak serve` starts it).

Why a process. Group commit (intake.alert_writer) batches well, but in the intake's own process
the writer thread shares the GIL with the event loop: every commit, statement and answer hands
the GIL over and waits up to a switch interval to get it back, and the writer's own Python work
(SQLAlchemy's session, statements, rows) takes the event loop's CPU. Measured on 2 cores, a
writer that cost nothing would let one intake process accept about 2.5 times the alerts it
did. Here the writer has its own interpreter: the intake process parses and checks, this one
stores. Every intake worker process (`--workers N`) talks to the same writer, so SQLite's single
writer is one process taking everybody's requests together, not N processes taking turns.

Nothing acknowledged is lost: the intake answers 202 only after this process answers that the
request's transaction committed. If this process dies, the requests it had not answered get 503
(the monitor sends them again; one that did commit is then absorbed by fingerprint) and
`WriterProcess` starts a new one. If the intake dies, this process exits (parent-death signal,
and a check of its parent every second).

Wire: a Unix socket in a directory only this user can open. Each message is a frame: 4 bytes of
length (big-endian), then a pickle. Intake → writer: (request id, records.alert_ingest.IngestRequest).
Writer → intake, once per batch: [(request id, outcome)], an outcome being ("stored", [AlertResult]),
("replayed", source), ("unavailable", reason) or ("failed", reason). Pickle is safe here only
because both ends are this installation's own processes run by one user.

    python -m intake.writer_process SOCKET_PATH PARENT_PID     (what WriterProcess runs)
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from firebreak import errors
from intake.alert_writer import store_batch
from intake.edge import STORE_DOWN
from records.alert_ingest import AlertResult, IngestRequest
from records.signatures import SignatureReplayed

log = logging.getLogger("firebreak.intake.writer")

_LENGTH = struct.Struct("!I")
#: Requests stored in one transaction at most (as the in-process writer).
MAX_BATCH = 256
#: How long `WriterProcess.start` waits for a new writer to listen (it imports SQLAlchemy and the models).
START_SECONDS = 60.0


class WriterUnreachable(errors.StoreUnavailable, ConnectionError):
    """The writer process cannot be reached, went away before answering, or reports the store
    unavailable: the intake answers 503 and the monitor sends the request again (intake.edge.STORE_DOWN)."""


class WriterFailed(errors.FirebreakError, RuntimeError):
    """The writer process could not store a request for a reason that is not the store being down (a 500)."""


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


# --- the writer process ---------------------------------------------------------------------------


def _outcome(result: list[AlertResult] | BaseException) -> tuple[str, Any]:
    if isinstance(result, list):
        return ("stored", result)
    if isinstance(result, SignatureReplayed):
        return ("replayed", str(result))
    cause = getattr(result, "orig", None) or result  # the driver's error, not SQLAlchemy's wrapper with every row
    reason = f"{type(cause).__name__}: {cause}"[:500]
    return ("unavailable", reason) if isinstance(result, STORE_DOWN) else ("failed", reason)


class _Client:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def frames(self) -> Iterator[Any]:
        """The complete frames received so far (unpickled), removed from the buffer."""
        while len(self.buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer)
            if len(self.buffer) < _LENGTH.size + length:
                return
            data = bytes(self.buffer[_LENGTH.size:_LENGTH.size + length])
            del self.buffer[:_LENGTH.size + length]
            yield pickle.loads(data)


def run_writer(socket_path: str, url: str | None = None) -> None:
    """Serve intake processes on `socket_path` until SIGTERM or the parent process is gone."""
    parent = os.getppid()
    # A plain flag: a handler that took a lock (threading.Event.set) deadlocked when a second signal
    # arrived while the first handler held it (the parent-death SIGTERM and the intake's own).
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    # Ctrl-C reaches the terminal's whole process group: the intake then finishes the requests in
    # flight, which need this writer, and stops it afterwards (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(128)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    clients: dict[socket.socket, _Client] = {}

    def gather(timeout: float) -> list[tuple[_Client, int, IngestRequest]]:
        """The requests that have arrived, once any has (or none, after `timeout`)."""
        waiting: list[tuple[_Client, int, IngestRequest]] = []
        for key, _events in selector.select(timeout=timeout):
            if key.fileobj is listener:
                with contextlib.suppress(BlockingIOError):
                    sock, _address = listener.accept()
                    sock.setblocking(False)  # reads take what has arrived (_receive); sends block (_send)
                    clients[sock] = _Client(sock)
                    selector.register(sock, selectors.EVENT_READ)
                continue
            client = clients[key.fileobj]  # type: ignore[index]
            if not _receive(client):
                selector.unregister(client.sock)
                del clients[client.sock]
                client.sock.close()
                continue
            waiting.extend((client, request_id, request) for request_id, request in client.frames())
        return waiting

    gc.freeze()  # what the imports made lives as long as the process: no full collection walks it again
    while not stopping and os.getppid() == parent:
        # No waiting for company: requests that arrive while a batch is stored form the next one.
        # (Waiting 1–3 ms for more was measured: less CPU at 1,000 alerts/s, no better p99, worse p50.)
        waiting = gather(1.0)
        for start in range(0, len(waiting), MAX_BATCH):
            batch = waiting[start:start + MAX_BATCH]
            results = store_batch([request for _client, _id, request in batch], url=url)
            answers: dict[_Client, list[tuple[int, tuple[str, Any]]]] = {}
            for (client, request_id, _request), result in zip(batch, results, strict=True):
                answers.setdefault(client, []).append((request_id, _outcome(result)))
            for client, answered in answers.items():
                _send(client.sock, _frame(answered))
    listener.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)


def _send(sock: socket.socket, data: bytes) -> None:
    sock.settimeout(30)  # waits at most this long for a stuck intake process to read
    try:
        sock.sendall(data)
    except OSError:  # that intake process is gone (its connection is dropped at the next read)
        log.warning("an intake process went away before its answers were sent; they are stored all the same")
    finally:
        sock.setblocking(False)


def _receive(client: _Client) -> bool:
    """Read what the client has sent so far, without waiting; False once it has closed."""
    while True:
        try:
            chunk = client.sock.recv(1 << 20)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        client.buffer += chunk


# --- in the intake: the client -----------------------------------------------------------------------


class _Connection:
    """One event loop's connection to the writer, with its requests in flight."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.open = True
        self.answers = asyncio.get_running_loop().create_task(self._read_answers())

    async def _read_answers(self) -> None:
        try:
            while True:
                (length,) = _LENGTH.unpack(await self.reader.readexactly(_LENGTH.size))
                for request_id, outcome in pickle.loads(await self.reader.readexactly(length)):
                    future = self.pending.pop(request_id, None)
                    if future is not None and not future.done():
                        future.set_result(outcome)
        except (asyncio.IncompleteReadError, OSError) as exc:
            if self.pending:
                log.error("the alert writer went away (%s) with %d requests unanswered; they are answered 503",
                          type(exc).__name__, len(self.pending))
        finally:
            self.open = False
            self.writer.close()
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(WriterUnreachable("the alert writer went away before answering; "
                                                           "nothing is acknowledged, send again"))
            self.pending.clear()


class WriterClient:
    """What the intake stores alerts through when the writer is a process (same interface as
    intake.alert_writer.GroupCommitWriter): `ingest` returns once the request's transaction committed."""

    def __init__(self, socket_path: str | Path):
        self.socket_path = str(socket_path)
        #: Per event loop: its connection, or the attempt to connect that every request meanwhile awaits.
        self._connections: dict[asyncio.AbstractEventLoop, asyncio.Future[_Connection]] = {}
        self._ids = itertools.count(1)

    def start(self) -> None:
        """Nothing to start: each event loop connects on its first request."""

    def stop(self, timeout: float = 30) -> None:
        """Close the connections (called on the intake's event loop as it shuts down)."""
        for attempt in self._connections.values():
            if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                connection = attempt.result()
                connection.answers.cancel()
                connection.writer.close()
        self._connections.clear()

    async def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        attempt = self._connections.get(loop)
        if attempt is not None and attempt.done() and (attempt.exception() is not None or not attempt.result().open):
            attempt = None  # the last attempt failed, or the writer went away since: connect again
        if attempt is None:
            attempt = self._connections[loop] = loop.create_task(self._connect())
        return await asyncio.shield(attempt)

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError as exc:
            raise WriterUnreachable(f"the alert writer is not reachable ({type(exc).__name__})") from None
        return _Connection(reader, writer)

    async def ingest(self, request: IngestRequest) -> list[AlertResult]:
        """Store the request (committed when this returns); raises SignatureReplayed, WriterUnreachable
        (the store or the writer is down: 503) or WriterFailed."""
        connection = await self._connection()
        if not connection.open:
            # It closed while this request waited for it to connect, before anything was sent: a new
            # connection is safe to try, and the check and the registration below share one step of
            # the event loop, so a connection that closes later fails this request's future itself.
            connection = await self._connection()
            if not connection.open:
                raise WriterUnreachable("the alert writer went away; nothing is acknowledged, send again")
        request_id = next(self._ids)
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        connection.pending[request_id] = future
        connection.writer.write(_frame((request_id, request)))
        kind, value = await asyncio.shield(future)
        if kind == "stored":
            return list(value)
        if kind == "replayed":
            raise SignatureReplayed(request.source)
        if kind == "unavailable":
            raise WriterUnreachable(f"the alert store is unavailable ({value})")
        raise WriterFailed(value)


# --- in `firebreak serve`: the process, started and kept running -------------------------------------


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when the one that started it dies (Linux's PR_SET_PDEATHSIG); exit now if it
    already has. Done here rather than between fork and exec, where a threaded parent may hold locks."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(0)


class WriterProcess:
    """The writer process for `firebreak serve`: started before the intake listens, started again if it
    dies, stopped (after its last batch) when the intake stops."""

    def __init__(self) -> None:
        # A short path (Unix socket paths hold about 100 bytes) in a directory only this user can open.
        self.directory = tempfile.mkdtemp(prefix="firebreak-writer-")
        self.socket_path = os.path.join(self.directory, "writer.sock")
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="alert-writer-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self.process = subprocess.Popen([sys.executable, "-m", "intake.writer_process", self.socket_path,
                                         str(os.getpid())])
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the alert writer process exited at start (status {self.process.returncode})")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(self.socket_path)
                return
            time.sleep(0.05)
        raise RuntimeError(f"the alert writer process did not listen within {START_SECONDS:.0f} s")

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self.process
            assert process is not None
            status = process.wait()
            if self._stopping.is_set():
                return
            self.restarts += 1
            log.error("the alert writer process exited (status %s); starting a new one (requests meanwhile "
                      "are answered 503 and sent again by their monitors)", status)
            while not self._stopping.is_set():
                try:
                    self._spawn()
                    break
                except RuntimeError as exc:
                    log.error("%s; trying again in 1 s", exc)
                    self._stopping.wait(1)

    def stop(self, timeout: float = 30) -> None:
        self._stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # it ends after the batch it is storing
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[2]))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_writer(sys.argv[1])
