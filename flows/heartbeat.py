"""A background heartbeat for the incident a run is working on.

A process killed outright (SIGKILL, power loss, OOM) runs no Prefect hook, so
the run could look "running" forever. The heartbeat lets flows.reconcile tell a
live run from a dead one."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from records import incidents

HEARTBEAT_SECONDS = 5.0


@contextmanager
def heartbeat(incident_id: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                incidents.heartbeat(incident_id)
            except Exception:  # a missed beat is retried; it must never kill the run
                pass
            if stop.wait(every):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{incident_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
