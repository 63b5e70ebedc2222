"""Group commit (intake/alert_writer.py, records.alert_ingest.ingest_many) on SQLite and, where it is
reachable, PostgreSQL: several requests in one transaction behave as if stored one after another;
a replayed signature refuses only its own request; a request the store refuses does not fail the
requests batched with it."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from sqlalchemy import func, select

from intake.alert_writer import GroupCommitWriter, _Waiting
from records import alert_ingest
from records.alert_ingest import Alert, IncomingAlert, IngestRequest, RunPlan
from records.db import dispose_all, session_scope
from records.signatures import SeenSignature, SignatureReplayed
from tests.postgres import temporary_database

UNROUTED = RunPlan(route="default", runbook_id=None)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'records.db'}"
        else:
            yield stack.enter_context(temporary_database())
        dispose_all()


def request_for(fingerprint: str, *, signature: str | None = None, payload: dict | None = None) -> IngestRequest:
    alert = IncomingAlert(source="am", format="alertmanager", fingerprint=f"am/{fingerprint}", status="firing",
                          summary=f"alert {fingerprint}", labels={"alertname": "A"}, payload=payload or {})
    return IngestRequest([(alert, UNROUTED)], signature=signature, source="am")


def stored(url: str) -> list[str]:
    with session_scope(url) as session:
        return list(session.scalars(select(Alert.fingerprint).order_by(Alert.id)))


def test_a_batch_is_stored_in_order_with_each_requests_own_ids(url: str) -> None:
    outcomes = alert_ingest.ingest_many([request_for("a"), request_for("b"), request_for("c")], url=url)
    ids = [outcome[0].alert_id for outcome in outcomes]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [outcome[0].fingerprint for outcome in outcomes] == ["am/a", "am/b", "am/c"]
    assert all(outcome[0].disposition == "unrouted" for outcome in outcomes)
    assert stored(url) == ["am/a", "am/b", "am/c"]


def test_each_alert_id_names_its_own_row_across_batches_and_statements(url: str) -> None:
    """On SQLite the ids are derived from the last row's id (records.alert_ingest._insert_on_sqlite):
    after rows already stored, and over more rows than one INSERT statement takes."""
    alert_ingest.ingest_many([request_for("before-1"), request_for("before-2")], url=url)
    count = alert_ingest.SQLITE_ROWS_PER_INSERT + 7
    outcomes = alert_ingest.ingest_many([request_for(f"many-{i}") for i in range(count)], url=url)
    by_id = {outcome[0].alert_id: outcome[0].fingerprint for outcome in outcomes}
    assert len(by_id) == count
    with session_scope(url) as session:
        rows = dict(session.execute(select(Alert.id, Alert.fingerprint).where(Alert.id.in_(list(by_id)))).all())
    assert rows == by_id
    assert [by_id[outcome[0].alert_id] for outcome in outcomes] == [f"am/many-{i}" for i in range(count)]


def test_a_signature_seen_earlier_in_the_batch_refuses_only_that_request(url: str) -> None:
    alert_ingest.ingest_many([request_for("seen", signature="sig-0")], url=url)
    outcomes = alert_ingest.ingest_many([request_for("x", signature="sig-1"), request_for("y", signature="sig-1"),
                                   request_for("z", signature="sig-0"), request_for("w", signature="sig-2")], url=url)
    assert isinstance(outcomes[1], SignatureReplayed) and isinstance(outcomes[2], SignatureReplayed)
    assert [o[0].fingerprint for o in (outcomes[0], outcomes[3])] == ["am/x", "am/w"]
    assert stored(url) == ["am/seen", "am/x", "am/w"]  # the refused requests wrote nothing
    with session_scope(url) as session:
        assert session.scalar(select(func.count()).select_from(SeenSignature)) == 3


def test_a_request_the_store_refuses_does_not_fail_its_batch(url: str) -> None:
    writer = GroupCommitWriter(url=url)
    poisoned = request_for("poisoned", payload={"not json": {1, 2}})  # a set: the JSON column refuses it

    async def write_one_batch() -> list[object]:
        loop = asyncio.get_running_loop()
        waiting = [_Waiting(r, loop, loop.create_future())
                   for r in (request_for("before"), poisoned, request_for("after"))]
        await asyncio.to_thread(writer._write, waiting)  # one batch, as the writer thread forms it
        return list(await asyncio.gather(*(w.future for w in waiting), return_exceptions=True))

    before, refused, after = asyncio.run(write_one_batch())
    assert isinstance(refused, Exception) and "not JSON serializable" in str(refused)
    assert before[0].fingerprint == "am/before" and after[0].fingerprint == "am/after"
    assert stored(url) == ["am/before", "am/after"]


def test_the_writer_answers_concurrent_requests_after_commit(url: str) -> None:
    writer = GroupCommitWriter(url=url)

    async def post_many() -> list[list[alert_ingest.AlertResult]]:
        return list(await asyncio.gather(*(writer.ingest(request_for(f"c{i}")) for i in range(50))))

    try:
        results = asyncio.run(post_many())
    finally:
        writer.stop()
    assert sorted(r[0].fingerprint for r in results) == sorted(f"am/c{i}" for i in range(50))
    assert len(stored(url)) == 50  # each answer came after its commit
    assert writer.requests == 50 and writer.batches <= 50
