"""A records database that stops answering for a while (a restart, a fail-over) pauses a run's
writes instead of failing its steps (records.db.waiting_out_outages, set by flows.engine around
every run), while anything outside a run (the intake above all, which must answer 503 at once so
that the monitor sends again) still fails at once.

Against a private PostgreSQL cluster stopped with `pg_ctl -m immediate` (a crash) and started
again on the same port, and for the run, a real Prefect server."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from records.db import dispose_all, get_engine, server_unreachable, session_scope, waiting_out_outages
from records.incidents import events, list_incidents
from tests.polling import wait_for
from tests.private_postgres import PrivateCluster, private_cluster
from tests.records_env import records_database_at
from tests.runbook_helpers import write_runbook


@pytest.fixture
def records_cluster() -> PrivateCluster:
    # Commits durable before they return (the private clusters' default is off, for speed), as a real
    # server's are: an immediate stop must not lose what was committed before it.
    with private_cluster(max_connections=30, settings={"synchronous_commit": "on"}) as cluster:
        cluster.create_database("records")
        with records_database_at(cluster.url("records")):
            try:
                yield cluster
            finally:
                dispose_all()


def _operational_error(engine) -> type[BaseException]:  # type: ignore[no-untyped-def]
    return engine.dialect.loaded_dbapi.OperationalError


def test_a_write_in_a_run_waits_for_the_server_to_come_back_and_one_outside_fails_at_once(
        records_cluster: PrivateCluster) -> None:
    url = records_cluster.url("records")
    engine = get_engine(url)
    with session_scope() as session:  # migrated; the pool now holds a connection the stop will kill
        session.execute(text("CREATE TABLE outage_probe (n integer)"))

    records_cluster.stop()
    # Outside a run: the server's refusal at once, recognised as "not answering".
    with pytest.raises(OperationalError) as refused, session_scope() as session:
        session.execute(text("INSERT INTO outage_probe VALUES (1)"))
    assert server_unreachable(refused.value.orig, _operational_error(engine)), refused.value

    # Inside a run's patience: the write waits, and lands once the server is back (the pooled
    # connection that died with the server is replaced on the way: pool_pre_ping).
    threading.Timer(2.0, records_cluster.start).start()
    with waiting_out_outages(60), session_scope() as session:
        session.execute(text("INSERT INTO outage_probe VALUES (2)"))
    with session_scope() as session:
        assert session.execute(text("SELECT n FROM outage_probe")).scalars().all() == [2]


def test_patience_never_covers_a_refusal_that_names_the_caller(records_cluster: PrivateCluster) -> None:
    # No such database: the server answered, and waiting would not change its answer.
    missing = get_engine(records_cluster.url("no_such_database"))
    with waiting_out_outages(60), pytest.raises(OperationalError) as refused:
        missing.connect()
    assert not server_unreachable(refused.value.orig, _operational_error(missing)), refused.value
    assert "no_such_database" in str(refused.value)


@pytest.mark.usefixtures("prefect_server")
def test_a_run_caught_by_a_records_outage_mid_step_completes_once_the_store_is_back(
        tmp_path: Path, records_cluster: PrivateCluster) -> None:
    from flows.engine import run_runbook

    runbook = write_runbook(tmp_path, "store-outage-run", [
        {"id": "note", "action": "record", "with": {"message": "started"}},
        {"id": "hold", "action": "wait", "needs": ["note"], "with": {"seconds": 3}},
        {"id": "done", "action": "record", "needs": ["hold"], "with": {"message": "held"}}])
    states: list = []
    run = threading.Thread(target=lambda: states.append(run_runbook(runbook=str(runbook), return_state=True)))
    run.start()

    def holding() -> bool:
        return any(e.step_id == "hold" and e.phase == "intent"
                   for incident in list_incidents(10) for e in events(incident.id))

    wait_for(holding, timeout=60, what="the run to begin its 3 s hold")
    # Down for longer than the hold has left: the hold's outcome, the next step's intent and the
    # run's end are all written while, or just after, the server is away.
    records_cluster.stop()
    threading.Event().wait(5.0)
    records_cluster.start()
    run.join(timeout=120)
    assert not run.is_alive()

    [state] = states
    assert state.is_completed(), state.message
    [incident] = list_incidents(10)
    assert incident.run_state == "completed"
    outcomes = {(e.step_id, e.status) for e in events(incident.id) if e.phase == "outcome"}
    assert {("note", "succeeded"), ("hold", "succeeded"), ("done", "succeeded")} <= outcomes, outcomes
    # Each step acted once: the outage cost no attempt.
    intents = [e.step_id for e in events(incident.id) if e.phase == "intent"]
    assert sorted(intents) == ["done", "hold", "note"], intents
