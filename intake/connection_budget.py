"""The records database's connection budget: how many connections the installation's processes
may open, checked by each intake and worker before it starts (README "Connection budget").

Every process keeps one pool per database URL, shared by all its threads (records.db), so it
never holds more than pool + overflow connections. The installation is described by one
configuration, the same for every process:

    intake replicas × processes per replica × (intake pool + overflow)
  + worker processes × (worker pool + overflow)
  + reserved (the CLI, reconcile, runs started from the Prefect UI)
  ≤ FIREBREAK_DB_CONNECTION_BUDGET ≤ the server's max_connections − its reserved slots

A pool left unset is sized to the process: a worker's run slots + 3 (its claim loop, heartbeat
and outbox listener), an intake's 5 (writer, readiness, reads, acknowledgements) plus, when it
claims runs itself, 1 for its outbox listener and (warm) its run slots. A process that would break the budget refuses to start with one
line naming the formula (firebreak.errors.ConfigInvalid).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from firebreak.errors import ConfigInvalid
from firebreak.settings import Settings, get_settings, reload_settings
from intake.settings import IntakeSettings, WorkerSettings

#: Connections a worker needs besides its run slots: the claim loop, the heartbeat, and (PostgreSQL)
#: the one its outbox listener holds (records.run_outbox.wait_for_due_rows).
WORKER_EXTRA = 3
#: An intake's connections without runs: the writer, readiness, incident reads, acknowledgements.
INTAKE_BASE = 5
#: An intake that runs alert-started runs itself (warm) also holds one for its outbox listener.
INTAKE_LISTENER = 1

Kind = Literal["intake", "worker"]


@dataclass(frozen=True)
class ServerLimit:
    max_connections: int
    reserved: int  # superuser_reserved_connections (+ reserved_connections, PostgreSQL 16+)

    @property
    def usable(self) -> int:
        return self.max_connections - self.reserved

    def describe(self) -> str:
        return f"the server's max_connections {self.max_connections} − {self.reserved} reserved = {self.usable}"


@dataclass(frozen=True)
class ConnectionPlan:
    """What each kind of process may open, and the installation's total."""

    kind: Kind
    intake_processes: int  # replicas × processes per replica
    intake_replicas: int
    intake_workers: int
    intake_pool: int
    worker_processes: int
    worker_pool: int
    overflow: int
    reserved: int
    budget: int | None

    @property
    def pool(self) -> int:
        """This process's pool size."""
        return self.intake_pool if self.kind == "intake" else self.worker_pool

    @property
    def per_process(self) -> int:
        return self.pool + self.overflow

    @property
    def total(self) -> int:
        return (self.intake_processes * (self.intake_pool + self.overflow)
                + self.worker_processes * (self.worker_pool + self.overflow) + self.reserved)

    def formula(self) -> str:
        return (f"intake {self.intake_replicas} replica(s) × {self.intake_workers} process(es) × "
                f"(pool {self.intake_pool} + overflow {self.overflow}) + worker {self.worker_processes} process(es) × "
                f"(pool {self.worker_pool} + overflow {self.overflow}) + reserved {self.reserved} = {self.total}")


def plan_connections(kind: Kind, *, intake: IntakeSettings | None = None, worker: WorkerSettings | None = None,
                     settings: Settings | None = None) -> ConnectionPlan:
    """The installation's connections as this process (`kind`, with its own settings) sees the configuration."""
    intake = intake or IntakeSettings()
    worker = worker or WorkerSettings()
    settings = settings or get_settings()
    explicit = settings.db_pool_size
    runs_here = intake.executor in ("warm", "deployment")  # both claim outbox rows, so both listen
    intake_pool = explicit or INTAKE_BASE + (intake.max_concurrent_runs if intake.executor == "warm" else 0) + (
        INTAKE_LISTENER if runs_here else 0)
    worker_pool = explicit or worker.slots + WORKER_EXTRA
    # An intake that runs nothing still counts the workers the configuration declares; a worker counts itself.
    workers = max(worker.processes, 1) if kind == "worker" else worker.processes
    return ConnectionPlan(kind=kind, intake_processes=intake.replicas * intake.workers, intake_replicas=intake.replicas,
                          intake_workers=intake.workers, intake_pool=intake_pool, worker_processes=workers,
                          worker_pool=worker_pool, overflow=settings.db_max_overflow or 0,
                          reserved=settings.db_reserved_connections, budget=settings.db_connection_budget)


def server_limit(url: str, timeout: float = 5.0) -> ServerLimit | None:
    """The PostgreSQL server's max_connections and reserved slots; None for another database, or a
    server that cannot be asked now (an intake still starts, and answers 503 until it can)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    if make_url(url).get_backend_name() != "postgresql":
        return None
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": max(1, int(timeout))})
    try:
        with engine.connect() as connection:
            maximum = int(connection.execute(text("SHOW max_connections")).scalar_one())
            reserved = int(connection.execute(text("SHOW superuser_reserved_connections")).scalar_one())
            if int(connection.execute(text("SHOW server_version_num")).scalar_one()) >= 160000:
                # PostgreSQL 16+: slots kept for roles with pg_use_reserved_connections
                reserved += int(connection.execute(text("SHOW reserved_connections")).scalar_one())
        return ServerLimit(maximum, reserved)
    except Exception:  # noqa: BLE001 - unreachable or refused: nothing to check against now
        return None
    finally:
        engine.dispose()


def check_budget(plan: ConnectionPlan, limit: ServerLimit | None) -> None:
    """Raise ConfigInvalid (one line naming the formula) if the configuration could open more
    connections than the budget, or the budget (unset: the total) more than the server allows."""
    if plan.budget is not None and plan.total > plan.budget:
        raise ConfigInvalid(f"connection budget exceeded: {plan.formula()} > FIREBREAK_DB_CONNECTION_BUDGET "
                            f"{plan.budget}; lower FIREBREAK_DB_POOL_SIZE, the slots or the process counts, "
                            "or raise the budget")
    if limit is None:
        return
    if plan.budget is not None and plan.budget > limit.usable:
        raise ConfigInvalid(f"FIREBREAK_DB_CONNECTION_BUDGET {plan.budget} > {limit.describe()} "
                            f"(this configuration: {plan.formula()}); lower the budget or raise max_connections")
    if plan.budget is None and plan.total > limit.usable:
        raise ConfigInvalid(f"connection budget exceeded: {plan.formula()} > {limit.describe()}; "
                            "lower FIREBREAK_DB_POOL_SIZE, the slots or the process counts, or raise max_connections")


def enforce(kind: Kind, *, intake: IntakeSettings | None = None, worker: WorkerSettings | None = None) -> str:
    """At a process's start: check the budget (and the server's max_connections where it can be
    asked), then size this process's pool (exported, so processes it starts size theirs alike).
    Returns one line for the start-up message."""
    settings = get_settings()
    plan = plan_connections(kind, intake=intake, worker=worker, settings=settings)
    limit = server_limit(settings.records_url, timeout=5.0)
    check_budget(plan, limit)
    os.environ.setdefault("FIREBREAK_DB_POOL_SIZE", str(plan.pool))
    os.environ.setdefault("FIREBREAK_DB_MAX_OVERFLOW", str(plan.overflow))
    reload_settings()
    budget = f"budget {plan.budget}" if plan.budget is not None else "no budget set"
    server = f"; {limit.describe()}" if limit is not None else ""
    return (f"records connections: ≤ {plan.per_process} here (pool {plan.pool} + overflow {plan.overflow}); "
            f"installation ≤ {plan.total}, {budget}{server}")
