"""The run lifecycle (README, "How runs are started"), against the session's real Prefect server
and real `firebreak worker` processes killed with SIGKILL:

alert → outbox row (pending) → claimed (by a live worker) → started (the run really begins) → finished

- reconcile judges only runs Prefect reports Running whose heartbeat is stale, never waiting
  ones, and nothing at all while Prefect cannot be reached;
- an executor claims no more rows than it has free slots, and a row is started only when its
  run begins;
- a killed worker's claimed and queued runs are each started exactly once by another;
- two workers on one PostgreSQL records database run every row once.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from flows.reconcile import PrefectUnreachable, reconcile_runs
from intake.runs import RunDispatcher
from records import incidents, run_outbox
from records.db import session_scope
from records.incidents import events, get_incident
from records.models import utcnow
from tests.intake_harness import free_port
from tests.polling import wait_for
from tests.postgres import temporary_database
from tests.records_env import records_database_at
from tests.run_workers import (
    FIREBREAK,
    StallingPrefect,
    WorkerProcess,
    ask_for_runs,
    create_flow_run_for,
    flow_run_state,
    number_incidents_apart,
    prefect_runs,
    quick_steps,
    rows,
    runs_begun,
    wait_until_finished,
)
from tests.runbook_helpers import write_runbook

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def own_records(tmp_path: Path) -> Iterator[str]:
    """A records database of the test's own (SQLite): reconcile and the workers see only its runs."""
    with records_database_at(f"sqlite:///{tmp_path / 'records.db'}") as url:
        number_incidents_apart(url)
        yield url


def _hold_runbook(directory: Path, seconds: float = 600) -> Path:
    return write_runbook(directory, "lifecycle-hold", [
        {"id": "note", "action": "record", "with": {"message": "before the wait"}},
        {"id": "hold", "action": "wait", "needs": ["note"], "with": {"seconds": seconds}, "timeout": seconds + 300}])


def _snapshot(incident_ids: list[str]) -> dict[str, tuple]:
    """What reconcile could change: each incident's run state and timeline length, and its outbox row."""
    found = rows(incident_ids)
    return {i: (get_incident(i).run_state, len(events(i)), found[i].status, found[i].attempts, found[i].finished_at)
            for i in incident_ids}


def _running(row: run_outbox.RunRequest) -> str:
    """A flow run Prefect shows Running for `row`, attached to its incident as the engine does;
    nobody beats its heartbeat (a process that died right after it began)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending, Running

    flow_run = create_flow_run_for(row, Pending())
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Running(), force=True)
    incidents.attach_run(row.incident_id, str(flow_run.id))
    return str(flow_run.id)


# ------------------------------------------------------------------------------------- (a) reconcile


def test_reconcile_leaves_waiting_runs_alone_and_crashes_only_a_running_run_whose_heartbeat_stopped(
        tmp_path: Path, own_records: str, prefect_server: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Paused, Pending, Running, Scheduled

    hold, quick = _hold_runbook(tmp_path), write_runbook(tmp_path, "lifecycle-quick", quick_steps())
    # A run a worker began, then the worker was killed outright: Running in Prefect, no heartbeat.
    (dead,) = ask_for_runs(hold, 1, prefix=f"dead-{tmp_path.name}")
    with WorkerProcess(tmp_path, records_url=own_records, prefect_api_url=prefect_server, slots=1) as worker:
        wait_for(lambda: any(e.step_id == "hold" and e.phase == "intent" for e in events(dead)), timeout=90,
                 what="the worker's run to begin its wait")
        worker.kill()

    # Runs that only wait. Pending: created, and its worker died before it began (row `started`
    # just before). Scheduled: handed to Prefect's workers, all busy. Paused: waiting for an approval.
    pending, scheduled, paused = ask_for_runs(quick, 3, prefix=f"waiting-{tmp_path.name}")
    (queued,) = ask_for_runs(quick, 1, prefix=f"queued-{tmp_path.name}")  # still in the outbox: no run yet
    run_outbox.register_worker("ghost", host="test", pid=0, slots=3)
    claimed = {r.incident_id: r for r in run_outbox.claim_run_requests("ghost", limit=3, stale_after=3600)}
    assert set(claimed) == {pending, scheduled, paused}
    pending_run = create_flow_run_for(claimed[pending], Pending())
    assert run_outbox.mark_run_started(pending, str(pending_run.id), worker="ghost")
    scheduled_run = create_flow_run_for(claimed[scheduled], Scheduled())
    assert run_outbox.mark_run_elsewhere(scheduled, str(scheduled_run.id), "scheduled", worker="ghost")
    paused_run = create_flow_run_for(claimed[paused], Pending())
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(paused_run.id, Running(), force=True)
        client.set_flow_run_state(paused_run.id, Paused(timeout_seconds=3600, pause_key="gate"), force=True)
    incidents.attach_run(paused, str(paused_run.id))
    assert run_outbox.mark_run_elsewhere(paused, str(paused_run.id), "started", worker="ghost")
    waiting = [queued, pending, scheduled, paused]
    before = _snapshot(waiting)

    # Every heartbeat counts as stale: only what Prefect reports Running may be judged.
    done = reconcile_runs(stale_after=timedelta(seconds=0))

    assert [r.incident_id for r in done] == [dead]
    assert _snapshot(waiting) == before
    assert rows([queued])[queued].status == "pending" and rows([queued])[queued].attempts == 0
    assert flow_run_state(str(pending_run.id)) == "PENDING"
    assert flow_run_state(str(scheduled_run.id)) == "SCHEDULED"
    assert flow_run_state(str(paused_run.id)) == "PAUSED"
    crashed = get_incident(dead)
    assert crashed.run_state == "crashed" and "Running" in crashed.run_error and "heartbeat" in crashed.run_error
    assert flow_run_state(crashed.flow_run_id) == "CRASHED"
    statuses = [e.status for e in events(dead)]
    assert any(s.startswith("alarm") for s in statuses)  # paged through flows.run_failure, or says why not
    assert statuses.index(next(s for s in statuses if s.startswith("alarm"))) < statuses.index("run-crashed")
    assert rows([dead])[dead].status == "finished"  # its outbox row too
    print(f"\nreconcile: 1 dead Running run crashed; left alone: queued, Pending, Scheduled, Paused ({len(waiting)})")


def test_a_run_id_that_is_no_prefect_run_is_left_alone_and_the_others_are_still_judged(
        tmp_path: Path, own_records: str, prefect_server: str) -> None:
    """A record written by hand or by another tool may name a run Prefect cannot know (not even a UUID):
    reconcile leaves it as it is and judges the rest, rather than failing on it every minute."""
    strange = incidents.open_incident(runbook_id="system-outage", runbook_version="1.0", title="hand-made",
                                      level="II", source="alert", parameters={}, flow_run_id="imported-run-7")
    (dead,) = ask_for_runs(write_runbook(tmp_path, "lifecycle-quick", quick_steps()), 1, prefix=f"dead-{tmp_path.name}")
    run_outbox.register_worker("ghost", host="test", pid=0, slots=1)
    (row,) = run_outbox.claim_run_requests("ghost", limit=1, stale_after=3600)
    _running(row)  # Running in Prefect, nobody beating its heartbeat
    done = reconcile_runs(stale_after=timedelta(seconds=0))
    assert [r.incident_id for r in done] == [dead]
    assert get_incident(strange.id).run_state == "running" and len(events(strange.id)) == 1


def test_with_prefect_unreachable_reconcile_judges_nothing_and_says_so(
        tmp_path: Path, own_records: str, prefect_server: str) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    quick = write_runbook(tmp_path, "lifecycle-quick", quick_steps())
    running, queued = ask_for_runs(quick, 2, prefix=f"unreachable-{tmp_path.name}")
    run_outbox.register_worker("ghost", host="test", pid=0, slots=1)
    (row,) = run_outbox.claim_run_requests("ghost", limit=1, stale_after=3600)
    flow_run_id = _running(row)
    assert run_outbox.mark_run_elsewhere(running, flow_run_id, "started", worker="ghost")
    before = _snapshot([running, queued])
    nowhere = f"http://127.0.0.1:{free_port()}/api"

    with temporary_settings(updates={PREFECT_API_URL: nowhere}), pytest.raises(PrefectUnreachable) as refused:
        reconcile_runs(stale_after=timedelta(seconds=0))
    assert "cannot be reached" in str(refused.value) and "no run was judged" in str(refused.value)
    assert _snapshot([running, queued]) == before
    # The command says so too, and exits 1.
    cli = subprocess.run([FIREBREAK, "reconcile"], env={**os.environ, "PREFECT_API_URL": nowhere},
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "cannot be reached" in cli.stderr and "no run was judged" in cli.stderr, cli.stderr
    assert _snapshot([running, queued]) == before
    assert flow_run_state(flow_run_id) == "RUNNING"

    # Prefect answers again: the Running run without a heartbeat is judged, the queued one is not.
    assert [r.incident_id for r in reconcile_runs(stale_after=timedelta(seconds=0))] == [running]
    assert get_incident(queued).run_state == "pending" and rows([queued])[queued].status == "pending"


# ----------------------------------------------------------------------------- (c) slots and claims


def test_claims_never_exceed_free_slots_and_a_row_is_started_only_when_its_run_begins(
        tmp_path: Path, own_records: str) -> None:
    runbook = _hold_runbook(tmp_path, seconds=1.5)
    since = utcnow()
    ids = ask_for_runs(runbook, 6, prefix=f"slots-{tmp_path.name}")  # a burst: all due at once
    executor = RunDispatcher("warm", max_concurrent_runs=2, poll_seconds=0.2)
    most_held, checked_queue = 0, False
    executor.start()
    try:
        deadline = time.monotonic() + 180
        while True:
            found = rows(ids)
            held = [r for r in found.values() if r.status in ("claimed", "started")]
            assert len(held) <= 2, f"{len(held)} rows held by a 2-slot executor"
            most_held = max(most_held, len(held))
            for row in found.values():
                if row.status == "pending":  # waiting in the database: never claimed, no flow run yet
                    assert row.attempts == 0 and row.flow_run_id is None and row.started_at is None
            if not checked_queue and len([r for r in held if r.status == "started"]) == 2:
                # Both slots run; the others wait in the outbox, and Prefect has no run for them.
                assert executor.free_slots == 0
                queued = [i for i, r in found.items() if r.status == "pending"]
                ended = [i for i, r in found.items() if r.status == "finished"]
                assert queued and len(queued) == len(ids) - 2 - len(ended)
                assert not any(prefect_runs(queued, since).values())
                checked_queue = True
            if all(r.finished_at is not None for r in found.values()):
                break
            assert time.monotonic() < deadline, f"runs did not finish: {[(r.status, r.attempts) for r in found.values()]}"
            time.sleep(0.05)
    finally:
        executor.stop(wait_for_runs=True)
    assert checked_queue and most_held == 2
    finished = rows(ids)
    assert all(r.status == "finished" and r.attempts == 1 and r.started_at <= r.finished_at for r in finished.values())
    assert runs_begun(ids) == dict.fromkeys(ids, 1)
    assert {i: len(r) for i, r in prefect_runs(ids, since).items()} == dict.fromkeys(ids, 1)
    assert all(get_incident(i).run_state == "completed" for i in ids)
    (worker,) = [w for w in run_outbox.live_workers(stale_after=3600) if w.id == executor.worker_id] or [None]
    assert worker is None  # stopped cleanly: no longer live


def test_a_run_waiting_for_others_first_pages_gives_its_slot_to_the_next_incident(
        tmp_path: Path, own_records: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """First pages first (flows.first_pages), as `firebreak serve` and `firebreak worker` run it: a
    run whose steps are done waits for the runs still on their way to their first page, and gives
    its slot up while it waits, so the next new incident starts now rather than after them."""
    from flows import first_pages

    monkeypatch.setattr(first_pages, "_enabled", True)
    monkeypatch.setattr(first_pages, "PENDING_SECONDS", 120)  # the holding run counts as on its way throughout
    first_pages._pending.clear()
    quick = write_runbook(tmp_path, "lifecycle-quick", quick_steps())
    (done_first,) = ask_for_runs(quick, 1, prefix=f"first-{tmp_path.name}")
    (holding,) = ask_for_runs(_hold_runbook(tmp_path, seconds=8), 1, prefix=f"holding-{tmp_path.name}")
    (next_one,) = ask_for_runs(quick, 1, prefix=f"next-{tmp_path.name}")
    ids = [done_first, holding, next_one]
    executor = RunDispatcher("warm", max_concurrent_runs=2, poll_seconds=0.2)
    executor.start()
    try:
        # The two slots take the first two; the quick one's steps end while the other holds.
        started = wait_for(lambda: rows(ids)[next_one].started_at, timeout=120, what="the third run to start")
        wait_until_finished(ids, timeout=180)
    finally:
        executor.stop(wait_for_runs=True)
        first_pages._pending.clear()
    (hold_ended,) = [e.at for e in events(holding) if e.step_id == "hold" and e.status == "succeeded"]
    assert started < hold_ended, "the third incident waited for a slot held by a run that had done its steps"
    finished = rows(ids)
    # The first run still waited for the holding run's first page before its report: it ended after it.
    assert finished[done_first].finished_at > hold_ended
    assert all(r.status == "finished" and r.attempts == 1 for r in finished.values())
    assert runs_begun(ids) == dict.fromkeys(ids, 1)
    assert all(get_incident(i).run_state == "completed" for i in ids)
    assert executor.free_slots == 2 and executor._finishing == 0


def test_a_dead_workers_claims_are_taken_over_and_a_live_ones_are_not(tmp_path: Path, own_records: str) -> None:
    quick = write_runbook(tmp_path, "lifecycle-quick", quick_steps())
    ids = ask_for_runs(quick, 3, prefix=f"takeover-{tmp_path.name}")
    for worker in ("alive", "silent", "taker"):
        run_outbox.register_worker(worker, host="test", pid=0, slots=1)
    (of_alive,) = run_outbox.claim_run_requests("alive", limit=1)
    (of_silent,) = run_outbox.claim_run_requests("silent", limit=1)
    assert run_outbox.mark_run_started(of_silent.incident_id, "00000000-0000-0000-0000-000000000001", worker="silent")
    (pending,) = run_outbox.claim_run_requests("taker", limit=5)  # the one nobody holds
    assert pending.incident_id not in (of_alive.incident_id, of_silent.incident_id)
    assert run_outbox.claim_run_requests("taker", limit=5) == []  # the others' holders are alive
    with session_scope() as session:  # "silent" stops beating: its heartbeat is older than the stale time
        session.execute(update(run_outbox.RunWorker).where(run_outbox.RunWorker.id == "silent")
                        .values(heartbeat_at=utcnow() - timedelta(seconds=run_outbox.WORKER_STALE_SECONDS + 1)))
    assert run_outbox.claim_run_requests("silent", limit=5) == []  # its own rows: never claimed twice by it
    (taken,) = run_outbox.claim_run_requests("taker", limit=5)
    assert taken.incident_id == of_silent.incident_id and taken.attempts == 2 and taken.status == "claimed"
    # The silent worker wakes up: every change it tries is fenced off.
    assert not run_outbox.mark_run_started(of_silent.incident_id, "00000000-0000-0000-0000-000000000002",
                                           worker="silent")
    assert rows(ids)[of_silent.incident_id].claimed_by == "taker"
    # A clean stop gives back what it claimed but did not begin, at once.
    assert run_outbox.stop_worker("alive") == 1
    (given_back,) = run_outbox.claim_run_requests("taker", limit=5)
    assert given_back.incident_id == of_alive.incident_id and given_back.attempts == 2


# ------------------------------------------------------------------ (d) kill -9 a worker, start another


def test_a_killed_workers_claimed_and_queued_runs_each_start_exactly_once_elsewhere(
        tmp_path: Path, own_records: str, prefect_server: str) -> None:
    from prefect.states import Scheduled

    quick = write_runbook(tmp_path, "lifecycle-quick", quick_steps())
    since = utcnow()
    ids = ask_for_runs(quick, 12, prefix=f"killed-{tmp_path.name}")

    answered: list[str] = []  # idempotency keys of the creations answered (a retry of one is answered too)

    def rule(method: str, path: str, body: bytes) -> str:
        if method == "POST" and path == "/api/flow_runs/":
            key = json.loads(body)["idempotency_key"]
            if key not in answered and len(answered) < 2:
                answered.append(key)
            return "forward" if key in answered else "drop-answer"  # the others: created, the answer lost
        if method == "POST" and path.endswith("/set_state"):
            return "hold"  # runs 1 and 2: `started`, but Prefect never hears that they begin
        return "forward"

    # The first worker's Prefect hangs half-way: it dies holding 4 claimed rows (2 started, 2 not),
    # each with a Pending flow run, while 8 rows wait in the outbox.
    with StallingPrefect(prefect_server, rule) as stalling:
        first = WorkerProcess(tmp_path, records_url=own_records, prefect_api_url=stalling.api_url, slots=4,
                              name="first")
        first.start()
        try:
            def caught() -> bool:
                held = [r for r in rows(ids).values() if r.claimed_by == first.worker_id]
                return (len(held) == 4 and sorted(r.status for r in held) == ["claimed", "claimed", "started", "started"]
                        and sum(h.endswith("/set_state") for h in stalling.held) >= 2
                        and sum(h.endswith("/flow_runs/") for h in stalling.held) >= 2)

            wait_for(caught, timeout=90, what="the first worker to hold 2 started and 2 claimed rows")
            first.kill()
        finally:
            first.stop()
    held = {i for i, r in rows(ids).items() if r.claimed_by == first.worker_id}
    started_not_begun = [i for i in held if rows(ids)[i].status == "started"]
    assert all(flow_run_state(rows(ids)[i].flow_run_id) == "PENDING" for i in started_not_begun)
    assert runs_begun(ids) == dict.fromkeys(ids, 0)  # none began
    # Two queued rows whose runs Prefect already shows Scheduled (a deployment executor died after
    # creating them): the next worker runs them too, once.
    queued = [i for i in ids if i not in held]
    for incident_id in queued[:2]:
        create_flow_run_for(rows(ids)[incident_id], Scheduled())

    with WorkerProcess(tmp_path, records_url=own_records, prefect_api_url=prefect_server, slots=4,
                       stale_seconds=3, name="second") as second:
        finished = wait_until_finished(ids, timeout=180)
        second_id = second.worker_id

    begun = runs_begun(ids)
    per_incident = {i: len(r) for i, r in prefect_runs(ids, since).items()}
    attempts = {i: r.attempts for i, r in finished.items()}
    print(f"\nkill -9 with {len(held)} claimed rows ({len(started_not_begun)} marked started, none begun) and "
          f"{len(queued)} queued (2 Scheduled in Prefect): runs begun per incident {sorted(set(begun.values()))}, "
          f"Prefect runs per incident {sorted(set(per_incident.values()))}, attempts {sorted(attempts.values())}")
    assert begun == dict.fromkeys(ids, 1)
    assert per_incident == dict.fromkeys(ids, 1)
    # Claimed once by the dead worker and once by the live one, or once only: never twice by a live one.
    assert attempts == {i: 2 if i in held else 1 for i in ids}
    assert all(r.claimed_by == second_id and r.status == "finished" for r in finished.values())
    assert {get_incident(i).run_state for i in ids} == {"completed"}
    assert all(flow_run_state(r.flow_run_id) == "COMPLETED" for r in finished.values())
    assert reconcile_runs(stale_after=timedelta(seconds=0)) == []  # nothing left Running: nothing to judge


# ------------------------------------------------------------------- (e) two workers, one PostgreSQL


def _listeners(url: str) -> list[int]:
    """Backends LISTENing for outbox wake-ups on the database at `url` (their last statement)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = :listen"),
                {"listen": f"LISTEN {run_outbox.WAKE_CHANNEL}"}).scalars())
    finally:
        engine.dispose()


def _terminate(url: str, pids: list[int]) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            for pid in pids:
                assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    finally:
        engine.dispose()


def test_on_postgresql_an_executor_claims_when_the_row_commits_not_at_its_next_poll(
        tmp_path: Path, prefect_server: str) -> None:
    """The incident's transaction sends NOTIFY as it commits; the executor LISTENs. Its poll here is
    an hour away, and nothing in this process kicks it: only the database's signal can wake it."""
    with temporary_database() as url, records_database_at(url):
        number_incidents_apart(url)
        quick = write_runbook(tmp_path, "lifecycle-quick", quick_steps())
        executor = RunDispatcher("warm", max_concurrent_runs=2, poll_seconds=3600)
        executor.start()
        ids: list[str] = []
        try:
            (listener,) = wait_for(lambda: _listeners(url), timeout=60, what="the executor to listen")
            ids += ask_for_runs(quick, 1, prefix=f"notify-{tmp_path.name}")
            wait_until_finished(ids, url=url, timeout=120, what="the run its commit announced")
            # Its listening connection is cut (a restart, a fail-over). A row committed meanwhile is
            # claimed when it listens again; so is one committed after.
            _terminate(url, [listener])
            ids += ask_for_runs(quick, 1, prefix=f"cut-{tmp_path.name}")
            wait_until_finished(ids, url=url, timeout=120, what="the run committed while nobody listened")
            (again,) = wait_for(lambda: _listeners(url), timeout=60, what="the executor to listen again")
            assert again != listener
            ids += ask_for_runs(quick, 1, prefix=f"after-{tmp_path.name}")
            wait_until_finished(ids, url=url, timeout=120, what="the run committed after it listened again")
        finally:
            executor.stop(wait_for_runs=True)
        assert _listeners(url) == []  # a stopped executor leaves nothing listening
        assert runs_begun(ids, url) == dict.fromkeys(ids, 1)
        assert all(get_incident(i).run_state == "completed" for i in ids)


def test_two_workers_on_one_postgresql_database_run_every_row_once(tmp_path: Path, prefect_server: str) -> None:
    with temporary_database() as url, records_database_at(url):
        number_incidents_apart(url)
        quick = write_runbook(tmp_path, "lifecycle-quick", quick_steps())
        since = utcnow()
        with WorkerProcess(tmp_path, records_url=url, prefect_api_url=prefect_server, slots=3, name="a") as a, \
                WorkerProcess(tmp_path, records_url=url, prefect_api_url=prefect_server, slots=3, name="b") as b:
            ids = ask_for_runs(quick, 30, prefix=f"pg-{tmp_path.name}")  # both workers race for these
            finished = wait_until_finished(ids, url=url, timeout=240)
            workers = {a.worker_id, b.worker_id}
        split = {w: sum(r.claimed_by == w for r in finished.values()) for w in workers}
        print(f"\ntwo workers, 30 runs: {sorted(split.values())} each; attempts {sorted({r.attempts for r in finished.values()})}")
        assert all(r.attempts == 1 and r.claimed_by in workers for r in finished.values())
        assert runs_begun(ids, url) == dict.fromkeys(ids, 1)
        assert {i: len(r) for i, r in prefect_runs(ids, since).items()} == dict.fromkeys(ids, 1)
        assert {get_incident(i).run_state for i in ids} == {"completed"}
