"""HTTP shell around the contact-centre state: stdlib only, so it starts in milliseconds.

HTTP/1.1 with keep-alive, because runbook clients (httpx, Apprise's requests) reuse
connections; that obliges us to always read the whole request body and always send a
Content-Length, or the next request on the connection would be misparsed.
"""

from __future__ import annotations

import json
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from simulator.routes import ROUTES, Route, dispatch
from simulator.state import ContactCentre, Outcome

MAX_BODY_BYTES = 1_000_000  # a notice or an Apprise message is tiny; refuse floods


class SimulatorServer(ThreadingHTTPServer):
    """One thread per connection; daemon threads so a stuck client never blocks exit."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of parallel clients (50 threads posting
    # notices, a drill's fan-out of pages) overflowed it, and the kernel dropped or delayed SYNs, so
    # some requests failed with connection errors (tests/simulator/test_simulator.py's parallel-posts test
    # failed 2 runs in 6). Real services accept far deeper queues.
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], state: ContactCentre, verbose: bool = False,
                 routes: tuple[Route, ...] = ROUTES) -> None:
        super().__init__(address, SimulatorHandler)
        self.state = state
        self.verbose = verbose
        self.routes = routes  # INBOX_ROUTES for the inbox listener of an unreachable service


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SimulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SimulatorServer  # narrowed for type checkers
    # Idle keep-alive connections give up their thread after this many seconds.
    timeout = 30
    # Headers and body go out in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True

    # ---- one entry point for every method, so unknown ones get 404/405, not 501
    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        try:
            raw = self._read_body()
        except _BodyError as exc:
            self.close_connection = True  # body not consumed: connection is unusable
            self._send(Outcome(exc.status, {"error": exc.message}))
            return
        path = urlsplit(self.path).path
        if len(path) > 1:
            path = path.rstrip("/")
        key = self.headers.get("Idempotency-Key")
        try:
            outcome = dispatch(self.server.state, self.command, path, raw, key, self.server.routes)
        except Exception as exc:  # noqa: BLE001  a simulator bug must still answer (500), not hang the runbook
            if self.server.verbose:
                traceback.print_exc()
            outcome = Outcome(500, {"error": f"simulator error: {type(exc).__name__}: {exc}"})
        self._send(outcome)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BodyError(400, f"Content-Length header is not an integer: {length_header!r}") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise _BodyError(413, f"request body must be 0..{MAX_BODY_BYTES} bytes, got {length}")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(65537).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BodyError(400, "malformed chunked request body") from None
            if size == 0:
                # Trailer section ends with an empty line.
                while self.rfile.readline(65537).strip():
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)  # CRLF after each chunk

    def _send(self, outcome: Outcome) -> None:
        data = json.dumps(outcome.payload, ensure_ascii=False).encode("utf-8")
        self.send_response(outcome.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if outcome.replayed:
            # Lets a client (and a test) see that the stored first answer was returned.
            self.send_header("Idempotent-Replayed", "true")
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # Quiet by default: the demo's console belongs to the runbook, not to us.
        if self.server.verbose:
            sys.stderr.write(f"simulator: {self.address_string()} {format % args}\n")
