"""The incident record on SQLite and, where it is reachable, PostgreSQL."""
from __future__ import annotations

import threading
from datetime import timezone

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from records import deliveries, incidents
from records.db import MIGRATIONS_DIR, get_engine, migrate
from records.models import EventPhase, IncidentStatus, RunState


def _open(**overrides):
    fields = dict(runbook_id="system-outage", runbook_version="1.0", title="Chat down", level="II",
                  source="operator", parameters={"service_url": "http://x"})
    return incidents.open_incident(**{**fields, **overrides})


def test_migration_creates_the_schema(backend: str) -> None:
    migrate()
    migrate()  # idempotent
    tables = set(inspect(get_engine()).get_table_names())
    assert {"incidents", "timeline_events", "notifications", "sequences", "alembic_version"} <= tables
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    with get_engine().connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar_one() == head


def test_incident_ids_are_per_year_and_unique_under_concurrency(backend: str) -> None:
    first = _open()
    year = first.created_at.year
    assert first.id == f"INC-{year}-0001"
    opened: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            incident = _open()
            with lock:
                opened.append(incident.id)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = sorted(int(i.rsplit("-", 1)[1]) for i in opened)
    assert numbers == list(range(2, 32))


def test_lifecycle_moves_forward_with_timestamps(backend: str) -> None:
    incident = _open()
    assert incident.status == "triggered" and incident.triggered_at.tzinfo == timezone.utc
    incidents.transition(incident.id, IncidentStatus.acknowledged, actor="li-wei", reason="on it")
    again = incidents.transition(incident.id, "acknowledged", actor="li-wei")  # a retried step: no-op
    assert again.status == "acknowledged"
    jumped = incidents.transition(incident.id, IncidentStatus.resolved, actor="runbook")
    assert jumped.mitigated_at == jumped.resolved_at  # implied by the jump, recorded as such
    with pytest.raises(incidents.InvalidTransition):
        incidents.transition(incident.id, IncidentStatus.mitigated, actor="x")
    closed = incidents.transition(incident.id, "closed", actor="runbook")
    assert closed.triggered_at <= closed.acknowledged_at <= closed.resolved_at <= closed.closed_at
    notes = [(e.status, e.data.get("implied")) for e in incidents.events(incident.id)]
    assert notes == [("triggered", None), ("acknowledged", []), ("resolved", ["mitigated"]), ("closed", [])]


def test_concurrent_appends_keep_a_gapless_order(backend: str) -> None:
    incident = _open()

    def worker(n: int) -> None:
        for i in range(15):
            incidents.append_event(incident.id, phase=EventPhase.note, status="info", actor=f"t{n}",
                                   summary=f"{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    timeline = incidents.events(incident.id)
    assert [e.seq for e in timeline] == list(range(1, 92))
    for n in range(6):  # each writer's own events stay in its order
        mine = [int(e.summary.split("-")[1]) for e in timeline if e.actor == f"t{n}"]
        assert mine == list(range(15))


def test_side_effect_lookup_and_run_states(backend: str) -> None:
    incident = _open(flow_run_id="run-1")
    assert incident.run_state == "running"
    key = f"{incident.id}:fail_over"
    assert incidents.succeeded_outcome(incident.id, key) is None
    incidents.append_event(incident.id, phase=EventPhase.outcome, status="failed", actor="r", summary="x",
                           idempotency_key=key)
    assert incidents.succeeded_outcome(incident.id, key) is None
    incidents.append_event(incident.id, phase=EventPhase.outcome, status="succeeded", actor="r", summary="x",
                           idempotency_key=key, data={"output": {"active_node": "standby"}})
    assert incidents.succeeded_outcome(incident.id, key).data["output"] == {"active_node": "standby"}
    ended = incidents.set_run_state(incident.id, RunState.failed, error="boom")
    assert ended.run_state == "failed" and ended.run_ended_at is not None
    assert incident.id not in {i.id for i in incidents.open_runs()}


def test_a_delivered_notification_is_never_claimed_again(backend: str) -> None:
    incident = _open()
    key = f"{incident.id}:page:li-wei:0"
    common = dict(key=key, incident_id=incident.id, step_id="page", contact="li-wei", role="technical_support",
                  channel="json://127.0.0.1/inbox/li-wei", title="t", body="b", drill=False)
    first = deliveries.begin_attempt(**common)
    assert first.status == "sending" and first.attempts == 1
    deliveries.finish_attempt(key, delivered=False, error="HTTP 500")
    second = deliveries.begin_attempt(**common)
    assert second.status == "sending" and second.attempts == 2
    done = deliveries.finish_attempt(key, delivered=True, error=None)
    assert done.status == "delivered" and done.sent_at is not None
    third = deliveries.begin_attempt(**common)
    assert third.status == "delivered" and third.attempts == 2  # not counted, not re-sent
    assert len(incidents.notifications(incident.id)) == 1


def test_a_read_neither_waits_for_an_open_write_nor_sees_it_and_cannot_write(backend: str) -> None:
    """read_scope: while another thread's write transaction is open (on SQLite it holds this process's
    writer turn and the write lock), a read goes ahead at once and sees the last commit; a write in a read
    scope is refused on SQLite (query_only)."""
    from records.db import read_scope, session_scope

    incident = incidents.open_incident(runbook_id="system-outage", runbook_version="1", title="Read beside a write",
                                       level="II", source="test", parameters={})
    writing, release = threading.Event(), threading.Event()

    def write_and_hold() -> None:
        with session_scope() as session:
            session.execute(text("UPDATE incidents SET level = 'I' WHERE id = :id"), {"id": incident.id})
            writing.set()
            release.wait(30)

    writer = threading.Thread(target=write_and_hold)
    writer.start()
    try:
        assert writing.wait(30)
        read = []
        reader = threading.Thread(target=lambda: read.append(incidents.level_of(incident.id)))
        reader.start()
        reader.join(5)  # a read queued behind the open write would still be waiting (the writer holds 30 s)
        assert read == ["II"], "the read waited for the open write, or saw it before its commit"
    finally:
        release.set()
        writer.join(30)
    assert incidents.level_of(incident.id) == "I"  # committed now: the next read sees it
    if backend == "sqlite":
        with pytest.raises(Exception, match="readonly"), read_scope() as session:
            session.execute(text("UPDATE incidents SET level = 'III' WHERE id = :id"), {"id": incident.id})
