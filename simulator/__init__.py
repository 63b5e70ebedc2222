"""A simulated contact-centre service that runbooks act on over plain HTTP.

    with start_simulator(fault="down", recovery_seconds=0.3) as sim:
        httpx.get(f"{sim.url}/health")   # 503 until isolate + failover

Stdlib only (http.server + json) so the demo and the end-to-end tests can start one in
milliseconds; see simulator/routes.py for the API and simulator/scenarios.py for the
numbers behind each fault.
"""

from __future__ import annotations

import threading
from types import TracebackType

from simulator.server import SimulatorServer
from simulator.state import ContactCentre

__all__ = ["ContactCentre", "RunningSimulator", "start_simulator"]


class RunningSimulator:
    """Handle on a simulator serving in a background thread."""

    def __init__(self, server: SimulatorServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._stopped = False
        host, port = server.server_address[:2]
        self.host: str = str(host)
        self.port: int = int(port)
        self.url = f"http://{self.host}:{self.port}"
        self.state: ContactCentre = server.state

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()  # returns once serve_forever has exited its loop
        self._server.server_close()
        self._thread.join(timeout=5)

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

    The socket is bound before this returns, so the URL is usable immediately.
    """
    state = ContactCentre(fault=fault or "none", recovery_seconds=recovery_seconds)
    server = SimulatorServer((host, port), state, verbose=verbose)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},  # quick shutdown() in tests
        name=f"simulator-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return RunningSimulator(server, thread)
