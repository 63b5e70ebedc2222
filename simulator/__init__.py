"""A simulated contact-centre service that runbooks act on over plain HTTP.

    with start_simulator(fault="down", recovery_seconds=0.3) as sim:
        httpx.get(f"{sim.url}/health")   # 503 until isolate + failover

Stdlib only (http.server + json) so the demo and the end-to-end tests can start one in
milliseconds; see simulator/routes.py for the API and simulator/scenarios.py for the
numbers behind each fault.

One address serves everything (the service, /state, the notification inbox), except with
fault="unreachable": then `url` is a port that refuses TCP connections (bound, never
listening, so nothing else takes it) and the inbox and /state listen at `inbox_url`, so
the pages a drill sends about the outage still arrive. Point FIREBREAK_INBOX at
`inbox_address`, which is `host:port` of `url` for every other fault.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from simulator.routes import INBOX_ROUTES
from simulator.scenarios import LISTENER_FAULTS
from simulator.server import SimulatorServer
from simulator.state import ContactCentre

__all__ = ["ContactCentre", "RunningSimulator", "start_simulator"]


class RunningSimulator:
    """Handle on a simulator serving in a background thread."""

    def __init__(self, server: SimulatorServer, thread: threading.Thread,
                 refusing: socket.socket | None = None) -> None:
        self._server = server
        self._thread = thread
        self._refusing = refusing  # the unreachable service's port: bound, never listening
        self._stopped = False
        inbox_host, inbox_port = server.server_address[:2]
        host, port = refusing.getsockname()[:2] if refusing is not None else (inbox_host, inbox_port)
        self.host: str = str(host)
        self.port: int = int(port)
        self.url = f"http://{self.host}:{self.port}"
        self.inbox_host: str = str(inbox_host)
        self.inbox_port: int = int(inbox_port)
        self.inbox_url = f"http://{self.inbox_host}:{self.inbox_port}"
        self.state: ContactCentre = server.state

    @property
    def inbox_address(self) -> str:
        """host:port of the notification inbox, the value for FIREBREAK_INBOX."""
        return f"{self.inbox_host}:{self.inbox_port}"

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()  # returns once serve_forever has exited its loop
        self._server.server_close()
        self._thread.join(timeout=5)
        if self._refusing is not None:
            self._refusing.close()

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningSimulator(url={self.url!r}, scenario={self.state.snapshot()['scenario']!r})"


def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    fault: str | None = None,
    recovery_seconds: float = 3.0,
    verbose: bool = False,
) -> RunningSimulator:
    """Start the simulator in a daemon thread; port=0 picks a free port (see .url).

    The socket is bound before this returns, so the URL is usable immediately. With
    fault="unreachable", `port` is the service's port, which refuses connections, and the
    inbox listens on a free port of its own (.inbox_url).
    """
    state = ContactCentre(fault=fault or "none", recovery_seconds=recovery_seconds)
    refusing = None
    if (fault or "none") in LISTENER_FAULTS:
        # Bound so no other process takes the port, but never listening: the kernel answers every
        # connection attempt with a reset, which is what a client of a dead service sees.
        refusing = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        refusing.bind((host, port))
        server = SimulatorServer((host, 0), state, verbose=verbose, routes=INBOX_ROUTES)
    else:
        server = SimulatorServer((host, port), state, verbose=verbose)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},  # quick shutdown() in tests
        name=f"simulator-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return RunningSimulator(server, thread, refusing)
