"""The records database's connection budget (README "Connection budget"):

- every process keeps one pool, shared by all its threads: a worker's runs never hold more than
  its pool (sized to its slots), however many run at once;
- a new connection the server refuses as full ("too many clients") is waited for, not a failed
  run: a burst through a real outbox on a private PostgreSQL with max_connections=30, nearly all
  of it taken by other clients, ends with every run completed, once;
- a configuration that could open more than FIREBREAK_DB_CONNECTION_BUDGET, or a budget over
  the server's max_connections, is refused at start with one line naming the formula.
"""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from firebreak.errors import ConfigInvalid
from firebreak.settings import PROJECT_ROOT, Settings
from intake.connection_budget import ServerLimit, check_budget, plan_connections
from intake.settings import IntakeSettings, WorkerSettings
from records.incidents import get_incident
from records.models import utcnow
from tests.polling import wait_for
from tests.private_postgres import private_cluster
from tests.records_env import records_database_at
from tests.run_workers import (
    FIREBREAK,
    WorkerProcess,
    ask_for_runs,
    flow_run_state,
    prefect_runs,
    quick_steps,
    runs_begun,
    wait_until_finished,
)
from tests.runbook_helpers import write_runbook


def _refused(command: list[str], env: dict[str, str]) -> str:
    """Run a process that must refuse to start; its one line of stderr."""
    done = subprocess.run([FIREBREAK, *command], cwd=PROJECT_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_the_formula_counts_every_process_of_each_kind() -> None:
    settings = Settings(db_connection_budget=100, db_reserved_connections=10)
    plan = plan_connections("worker", intake=IntakeSettings(executor="none", replicas=2, workers=2),
                            worker=WorkerSettings(slots=8, processes=3), settings=settings)
    # intake: 2 replicas × 2 processes × (5 + 0); workers: 3 × (8 slots + 3 + 0); reserved 10
    assert (plan.intake_pool, plan.worker_pool, plan.overflow, plan.total) == (5, 11, 0, 20 + 33 + 10)
    assert plan.pool == 11
    warm = plan_connections("intake", intake=IntakeSettings(executor="warm", max_concurrent_runs=16),
                            worker=WorkerSettings(), settings=Settings(db_max_overflow=2))
    # 5 + 16 run slots + 1 for its outbox listener, + overflow 2
    assert (warm.pool, warm.per_process, warm.worker_processes, warm.total) == (22, 24, 0, 24 + 10)
    explicit = plan_connections("worker", worker=WorkerSettings(slots=30), settings=Settings(db_pool_size=6))
    assert explicit.pool == 6  # FIREBREAK_DB_POOL_SIZE wins over the slots
    check_budget(plan, ServerLimit(200, 3))  # 63 ≤ budget 100 ≤ 197 usable on the server
    with pytest.raises(ConfigInvalid, match=r"FIREBREAK_DB_CONNECTION_BUDGET 100 > the server's max_connections 90"):
        check_budget(plan, ServerLimit(90, 3))
    with pytest.raises(ConfigInvalid, match=r"= 63 > FIREBREAK_DB_CONNECTION_BUDGET 50"):
        check_budget(plan_connections("worker", intake=IntakeSettings(executor="none", replicas=2, workers=2),
                                      worker=WorkerSettings(slots=8, processes=3),
                                      settings=Settings(db_connection_budget=50)), None)


def test_a_worker_and_an_intake_over_the_budget_refuse_to_start(tmp_path: Path) -> None:
    env = {"FIREBREAK_DATABASE_URL": f"sqlite:///{tmp_path / 'records.db'}", "FIREBREAK_DB_CONNECTION_BUDGET": "20",
           "FIREBREAK_WORKER_PROCESSES": "2", "FIREBREAK_INTAKE_REPLICAS": "2", "FIREBREAK_INTAKE_EXECUTOR": "none"}
    line = _refused(["worker", "--slots", "8"], env)
    assert line == ("error: connection budget exceeded: intake 2 replica(s) × 1 process(es) × (pool 5 + overflow 0) "
                    "+ worker 2 process(es) × (pool 11 + overflow 0) + reserved 10 = 42 > "
                    "FIREBREAK_DB_CONNECTION_BUDGET 20; lower FIREBREAK_DB_POOL_SIZE, the slots or the process "
                    "counts, or raise the budget")
    line = _refused(["serve", "--port", "1"], {**env, "FIREBREAK_WORKER_SLOTS": "4"})
    assert "intake 2 replica(s) × 1 process(es) × (pool 5 + overflow 0) + worker 2 process(es) × (pool 7" in line
    assert not (tmp_path / "records.db").exists()  # refused before anything connected


def _client_connections(cluster, exclude_pid: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Client connections to the cluster by application name (the sampler's own left out)."""
    rows = cluster.sql(f"SELECT application_name, count(*) FROM pg_stat_activity WHERE backend_type = "
                       f"'client backend' AND pid NOT IN ({exclude_pid}, pg_backend_pid()) GROUP BY 1")[0]
    return {name: count for name, count in rows}


def _full_server_is_waited_for(cluster, base: str, usable: int) -> None:  # type: ignore[no-untyped-def]
    """records.db: a new connection the full server refuses is tried again until a slot is free
    (FIREBREAK_DB_POOL_TIMEOUT); past that, the server's refusal is raised as it was."""
    import psycopg
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from firebreak.settings import reload_settings
    from records.db import get_engine, server_full

    hogs = [psycopg.connect(f"postgresql://firebreak@127.0.0.1:{cluster.port}/records?application_name=hog",
                            autocommit=True) for _ in range(usable)]
    try:
        with pytest.raises(psycopg.OperationalError) as refused:  # the server is full for firebreak
            psycopg.connect(f"postgresql://firebreak@127.0.0.1:{cluster.port}/records")
        assert server_full(refused.value), str(refused.value)
        os.environ["FIREBREAK_DB_POOL_TIMEOUT"] = "0.3"
        reload_settings()
        try:
            impatient = get_engine(f"{base}?application_name=impatient")
        finally:
            os.environ.pop("FIREBREAK_DB_POOL_TIMEOUT")
            reload_settings()
        with pytest.raises(OperationalError) as gave_up:
            impatient.connect()
        assert server_full(gave_up.value)
        patient = get_engine(f"{base}?application_name=patient")  # 10 s, the default
        threading.Timer(1.0, hogs.pop().close).start()  # another client leaves after a second
        with patient.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
        patient.dispose()
        impatient.dispose()
    finally:
        for hog in hogs:
            hog.close()


def test_a_burst_on_a_nearly_full_server_waits_for_connections_and_fails_no_run(
        tmp_path: Path, prefect_server: str) -> None:
    import psycopg

    slots = 6
    with private_cluster(max_connections=30) as cluster:
        cluster.create_database("records", owner="firebreak")
        base = f"postgresql+psycopg://firebreak@127.0.0.1:{cluster.port}/records"
        mine = f"{base}?application_name=firebreak-test"  # this test's own reads and writes
        usable = 30 - 3  # superuser_reserved_connections: firebreak is no superuser

        # Over the budget, or a budget the server cannot give: refused at start, naming the formula.
        line = _refused(["worker", "--slots", str(slots)], {"FIREBREAK_DATABASE_URL": base,
                                                            "FIREBREAK_DB_CONNECTION_BUDGET": "45"})
        assert "FIREBREAK_DB_CONNECTION_BUDGET 45 > the server's max_connections 30 − 3 reserved = 27" in line
        line = _refused(["worker", "--slots", "30"], {"FIREBREAK_DATABASE_URL": base,  # no budget: the server's
                                                      "FIREBREAK_INTAKE_EXECUTOR": "none"})
        assert "(pool 33 + overflow 0) + reserved 10 = 48 > the server's max_connections 30 − 3 reserved" in line

        _full_server_is_waited_for(cluster, base, usable)

        quick = write_runbook(tmp_path, "budget-quick", quick_steps("run on a nearly full server"))
        with records_database_at(mine):
            warm = ask_for_runs(quick, 1, prefix=f"warm-{tmp_path.name}", url=mine)  # migrates the schema
            sampler = psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/records", autocommit=True)
            sampler_pid = sampler.info.backend_pid
            peak: dict[str, int] = {}  # most connections seen at once, by application name
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.is_set():
                    rows = sampler.execute("SELECT application_name, count(*) FROM pg_stat_activity WHERE "
                                           "backend_type = 'client backend' AND pid <> %s GROUP BY 1",
                                           (sampler_pid,)).fetchall()
                    for name, count in rows:
                        peak[name] = max(peak.get(name, 0), count)
                    sampling.wait(0.05)

            hogs: list[psycopg.Connection] = []
            since = utcnow()
            # One intake (records only: 5) + this worker (slots + 3) + reserved 10 = 24 ≤ the budget.
            env = {"FIREBREAK_DB_CONNECTION_BUDGET": str(usable), "FIREBREAK_INTAKE_EXECUTOR": "none"}

            def worker_process(name: str) -> WorkerProcess:
                process = WorkerProcess(tmp_path, records_url=f"{base}?application_name=firebreak-worker",
                                        prefect_api_url=prefect_server, slots=slots, name=name)
                process.env.update(env)
                return process

            with worker_process("warm-worker") as warm_worker:
                assert f"≤ {slots + 3} here (pool {slots + 3} + overflow 0)" in warm_worker.log()
                wait_until_finished(warm, url=mine, timeout=180, what="the warm-up run")
            wait_for(lambda: "firebreak-worker" not in _client_connections(cluster, sampler_pid), timeout=30,
                     what="the warm-up worker's connections to close")
            thread = threading.Thread(target=sample, daemon=True)
            worker = worker_process("worker")
            try:
                thread.start()
                # Other clients take the server all but full: one connection left, so the worker (started
                # now, its pool empty) gets one and every further one it needs must wait for the others.
                used = sum(_client_connections(cluster, sampler_pid).values()) + 1  # + the sampler
                for _ in range(usable - used - 1):
                    hogs.append(psycopg.connect(f"postgresql://firebreak@127.0.0.1:{cluster.port}/records"
                                                "?application_name=hog", autocommit=True))
                with worker:
                    ids = ask_for_runs(quick, 18, prefix=f"burst-{tmp_path.name}", url=mine)
                    # The worker's runs find the server full, and wait for it instead of failing …
                    wait_for(lambda: "the records database is full" in worker.log(), timeout=120,
                             what="the worker to find the server full")
                    # … until the other clients go away.
                    for hog in hogs:
                        hog.close()
                    finished = wait_until_finished(ids, url=mine, timeout=300)
                    log = worker.log()
            finally:
                sampling.set()
                for hog in hogs:
                    hog.close()
                if thread.is_alive():
                    thread.join(timeout=5)
                sampler.close()
            states = {i: get_incident(i).run_state for i in ids}
            begun = runs_begun(ids, mine)
            per_incident = {i: len(r) for i, r in prefect_runs(ids, since).items()}
        print(f"\nburst of {len(ids)} on {slots} slots, server nearly full: run states "
              f"{sorted(set(map(str, states.values())))}; peak connections by client {peak}; "
              f"'full' waits logged {log.count('the records database is full')}")
        assert begun == dict.fromkeys(ids, 1)
        assert per_incident == dict.fromkeys(ids, 1)
        assert all(r.status == "finished" and r.attempts == 1 for r in finished.values())
        assert set(states.values()) == {"completed"}, states
        assert {flow_run_state(r.flow_run_id) for r in finished.values()} == {"COMPLETED"}
        # Every run on the worker's slots shared its one pool: never more connections than the pool.
        assert 0 < peak["firebreak-worker"] <= slots + 3, peak
        assert "Traceback" not in log, log[-3000:]
