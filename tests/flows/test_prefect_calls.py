"""What a runbook run asks of the Prefect server, against the session's real server.

Every request costs the server CPU, and in a burst of new incidents that CPU is what the first
pages wait for (bench/burst.py). These pin two requests a run no longer makes: the server's
default result storage (asked twice a run before: runbook runs keep no Prefect results), and the
read of the audit anchor before creating it for a new incident. The requests are watched at
httpx's own log of each request, which every Prefect client makes through it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from records import incidents
from records.audit_anchor import anchor, variable_name
from records.models import EventPhase
from reports.publish import publish_report
from tests.audit_support import incident_with_events
from tests.runbook_helpers import run, write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")


class PrefectRequests(logging.Handler):
    """The requests this process sends through httpx (every Prefect client does), as (method, path):
    from httpx's own log line for each answered request, at INFO. A handler of the httpx logger
    itself: Prefect sets up logging at its first flow run and replaces the root logger's handlers."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("HTTP Request:") and len(record.args or ()) >= 2:
            method, url = record.args[0], record.args[1]  # type: ignore[index]
            self.seen.append((str(method), httpx.URL(str(url)).path))

    def to(self, path_end: str, method: str | None = None) -> list[tuple[str, str]]:
        return [r for r in list(self.seen) if r[1].endswith(path_end) and (method is None or r[0] == method)]

    def variable(self, name: str) -> list[tuple[str, str]]:
        """The requests about one variable, by its name in the path, and every variable creation (its
        name is in the body, which the log line does not show: each test makes one incident only)."""
        return [(m, p) for m, p in list(self.seen) if p.endswith(f"/variables/name/{name}")
                or (m == "POST" and p.endswith("/variables/"))]


@pytest.fixture
def prefect_requests() -> Iterator[PrefectRequests]:
    logger = logging.getLogger("httpx")
    watch, level = PrefectRequests(), logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


def test_a_run_does_not_ask_the_server_for_its_default_result_storage(tmp_path: Path,
                                                                      prefect_requests: PrefectRequests) -> None:
    path = write_runbook(tmp_path, "result-storage", [
        {"id": "note", "action": "record", "with": {"message": "one step"}}])
    state, incident_id = run(path)
    assert state.is_completed()
    # The run did talk to this server through httpx (so the watch saw it): its states went there.
    assert prefect_requests.to("/set_state", "POST"), prefect_requests.seen
    assert prefect_requests.to("/admin/storage") == []
    # Its new incident's anchor was created without a read before it.
    name = variable_name(incidents.get_incident(incident_id).uid)
    assert prefect_requests.variable(name) == [("POST", "/api/variables/")], prefect_requests.variable(name)


def test_a_republished_head_asks_prefect_nothing_and_a_new_head_moves_the_anchor(
        backend: str, prefect_requests: PrefectRequests) -> None:
    incident_id = incident_with_events(3)
    name = variable_name(incidents.get_incident(incident_id).uid)
    publish_report(incident_id, None, artifact=False)
    assert prefect_requests.variable(name) == [("POST", "/api/variables/")]
    publish_report(incident_id, None, artifact=False)  # the same head: the records say it is anchored
    assert prefect_requests.variable(name) == [("POST", "/api/variables/")]
    incidents.append_event(incident_id, phase=EventPhase.note, status="info", actor="tester",
                           summary="a late note")  # the head moves on
    anchored = anchor(incident_id)
    assert anchored is not None and anchored.ok, anchored
    assert prefect_requests.variable(name)[1:] == [("GET", f"/api/variables/name/{name}"),
                                                   ("PATCH", f"/api/variables/name/{name}")]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        held = client.read_variable_by_name(name)
    assert held is not None and held.value["seq"] == anchored.seq


def test_an_anchor_already_in_prefect_without_a_record_of_it_is_moved_on_not_duplicated(
        backend: str, prefect_requests: PrefectRequests) -> None:
    """Anchored by a process whose record of it was lost: the creation meets the variable, and the
    read and checks decide as before (here: an older head, so it moves on)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate

    incident_id = incident_with_events(3)
    uid = incidents.get_incident(incident_id).uid
    name = variable_name(uid)
    with get_client(sync_client=True) as client:
        client.create_variable(VariableCreate(name=name, value={"uid": uid, "seq": 1, "hash": "0" * 64}))
    anchored = anchor(incident_id)
    assert anchored is not None and anchored.ok and anchored.seq > 1, anchored
    methods = [m for m, _ in prefect_requests.variable(name)]
    assert methods == ["POST", "POST", "GET", "PATCH"], prefect_requests.variable(name)
    with get_client(sync_client=True) as client:
        held = client.read_variable_by_name(name)
    assert held is not None and held.value["seq"] == anchored.seq


def test_two_anchorings_of_the_same_new_head_at_once_make_one_creation(
        backend: str, prefect_requests: PrefectRequests) -> None:
    """A run's live view and its report anchor the same new head at about the same moment: the second
    waits its turn and finds the first's record, rather than meeting a refused creation and reading."""
    incident_id = incident_with_events(3)
    name = variable_name(incidents.get_incident(incident_id).uid)
    start = threading.Barrier(2)
    results: list[Any] = []

    def anchor_at_once() -> None:
        start.wait()
        results.append(anchor(incident_id))

    threads = [threading.Thread(target=anchor_at_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2 and all(r is not None and r.ok for r in results), results
    assert prefect_requests.variable(name) == [("POST", "/api/variables/")], prefect_requests.variable(name)
