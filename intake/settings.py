"""Intake settings, from FIREBREAK_INTAKE_* environment variables."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

INTAKE_DIR = Path(__file__).resolve().parent


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIREBREAK_INTAKE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8700
    sources_file: Path = Field(default=INTAKE_DIR / "sources.yaml", description="who may post, and how they authenticate")
    routes_file: Path = Field(default=INTAKE_DIR / "routes.yaml", description="label matchers → runbook and level")
    max_body_bytes: int = Field(default=1_048_576, gt=0, description="larger bodies get 413")
    #: warm: runs execute in this process as soon as the alert is stored (sub-second start);
    #: deployment: runs are created from the Prefect deployments and a worker (or `serve`) runs them;
    #: none: runs are only created by another replica (this one only records).
    executor: Literal["warm", "deployment", "none"] = "warm"
    #: Run slots of the embedded executor: runs it executes at once (a run paused for an approval
    #: holds its slot). It claims no more outbox rows than it has free slots; the rest wait in the
    #: database for it or any `firebreak worker`.
    max_concurrent_runs: int = Field(default=16, ge=1)
    #: Processes serving the intake on one port. Each parses and checks requests on its own CPU;
    #: they share the records database (on SQLite they take turns to write, each committing its
    #: queued requests together). 2 on a 2-core machine roughly doubles the accepted alerts/s.
    workers: int = Field(default=1, ge=1, le=64)
    #: Intake replicas of this installation (`firebreak serve` on N machines behind a load balancer),
    #: each with `workers` processes: counted against FIREBREAK_DB_CONNECTION_BUDGET, nothing else.
    replicas: int = Field(default=1, ge=1)
    #: TLS: the server's certificate chain and private key (PEM). Both set: the intake serves HTTPS only.
    certfile: Path | None = Field(default=None, description="PEM certificate chain; with keyfile, serve HTTPS")
    keyfile: Path | None = Field(default=None, description="PEM private key of certfile")
    #: The private key's password, if it is encrypted (never logged).
    keyfile_password: SecretStr | None = None
    #: Where accepted alerts are stored from: `process`, a writer process of its own that every
    #: intake process of this `firebreak serve` hands its requests to (intake.writer_process: no GIL
    #: shared with the event loop, one SQLite writer for all workers); `thread`, a thread of each
    #: intake process. `auto`: a process when the records database is SQLite, else a thread (each
    #: PostgreSQL replica writes on its own; row locks decide).
    alert_writer: Literal["auto", "process", "thread"] = "auto"
    #: Set by `firebreak serve` for the processes it starts: the writer process's socket.
    writer_socket: Path | None = None
    #: How often the outbox is polled when nothing new arrives (another replica's alerts, a dead
    #: worker's runs, Prefect back up); this process's own alerts wake it at once.
    outbox_poll_seconds: float = Field(default=0.5, gt=0)


class WorkerSettings(BaseSettings):
    """Run executors (`firebreak worker`, and the intake's embedded one), from FIREBREAK_WORKER_*."""

    model_config = SettingsConfigDict(env_prefix="FIREBREAK_WORKER_", extra="ignore")

    #: Run slots of a `firebreak worker` (its --slots).
    slots: int = Field(default=16, ge=1)
    #: `firebreak worker` processes this installation runs, on all machines together: counted against
    #: FIREBREAK_DB_CONNECTION_BUDGET (a worker counts at least itself), nothing else.
    processes: int = Field(default=0, ge=0)
    #: How often a worker looks at the outbox (nothing wakes it from another process).
    poll_seconds: float = Field(default=0.5, gt=0, le=5)
    #: How often every executor renews its heartbeat (RunWorker.heartbeat_at).
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    #: An executor silent this long is dead: the rows it claimed are taken over by the others.
    stale_seconds: float = Field(default=15.0, gt=0)
