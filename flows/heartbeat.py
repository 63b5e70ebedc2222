"""A background heartbeat for the incident a run is working on.

A process killed outright (SIGKILL, power loss, OOM) runs no Prefect hook, so
the run could look "running" forever. The heartbeat lets flows.reconcile tell a
live run from a dead one."""
from __future__ import annotations

from contextlib import AbstractContextManager

from firebreak.background import repeating
from records import incidents

HEARTBEAT_SECONDS = 5.0


def heartbeat(incident_id: str, every: float = HEARTBEAT_SECONDS) -> AbstractContextManager[None]:
    return repeating(lambda: incidents.heartbeat(incident_id), every, f"heartbeat-{incident_id}")
