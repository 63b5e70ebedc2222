"""Small real HTTP servers on localhost for tests: a service that fails N times
before it answers, and one that answers slowly."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedServer:
    """Answers each request with the next (status, body) of a script; the last one repeats.

    hold: each answer waits until the test sets this event (at most `hold_max` seconds, below the
    notify action's 10 s send timeout), so a test can see what happens while a request is in flight.

    host: the loopback address it listens on (another one than 127.0.0.1 is another host to a client)."""

    def __init__(self, script: list[tuple[int, Any]], delay: float = 0.0, hold: threading.Event | None = None,
                 hold_max: float = 9.0, host: str = "127.0.0.1"):
        self.script = script
        self.delay = delay
        self.hold = hold
        self.hold_max = hold_max
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with outer._lock:
                    index = min(len(outer.requests), len(outer.script) - 1)
                    outer.requests.append({"method": self.command, "path": self.path, "body": body.decode(),
                                           "headers": dict(self.headers), "at": time.monotonic()})
                    status, payload = outer.script[index]
                if outer.delay:
                    time.sleep(outer.delay)
                if outer.hold is not None:
                    outer.hold.wait(outer.hold_max)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
