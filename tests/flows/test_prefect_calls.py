"""What a runbook run asks of the Prefect server, against the session's real server.

Every request costs the server CPU, and in a burst of new incidents that CPU is what the first
pages wait for (bench/burst.py). These pin two requests a run no longer makes: the server's
default result storage (asked twice a run before: runbook runs keep no Prefect results), and the
read of the audit anchor before creating it for a new incident. The requests are watched at
httpx's send, which every Prefect client goes through, and passed on unchanged.
"""
from __future__ import annotations

import json
import threading
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


class PrefectRequests:
    """Every request this process sends through httpx while it is installed: (method, path, body)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

        def note(request: httpx.Request) -> None:
            try:
                body = request.content.decode(errors="replace")
            except httpx.RequestNotRead:  # a streamed body: not a Prefect API call
                body = ""
            with self._lock:
                self.seen.append((request.method, request.url.path, body))

        def send(client: httpx.Client, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
            note(request)
            return sync_send(client, request, *args, **kwargs)

        async def asend(client: httpx.AsyncClient, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
            note(request)
            return await async_send(client, request, *args, **kwargs)

        monkeypatch.setattr(httpx.Client, "send", send)
        monkeypatch.setattr(httpx.AsyncClient, "send", asend)

    def to(self, path_end: str, method: str | None = None) -> list[tuple[str, str, str]]:
        with self._lock:
            return [r for r in self.seen if r[1].endswith(path_end) and (method is None or r[0] == method)]

    def variable(self, name: str) -> list[tuple[str, str]]:
        """The requests about one variable: by its name in the path, or in a creation's body."""
        with self._lock:
            return [(m, p) for m, p, body in self.seen if "/variables" in p and (
                p.endswith(f"/name/{name}") or (m == "POST" and p.endswith("/variables/")
                                                and json.loads(body or "{}").get("name") == name))]


@pytest.fixture
def prefect_requests(monkeypatch: pytest.MonkeyPatch) -> PrefectRequests:
    return PrefectRequests(monkeypatch)


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
