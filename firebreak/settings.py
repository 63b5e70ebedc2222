"""Firebreak settings, read from the environment with the FIREBREAK_ prefix.

Prefect's own PREFECT_* settings are left to Prefect; nothing here shadows them.
"""
from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIREBREAK_", extra="ignore")

    # One home per checkout, found from the package's location, not the working directory: a command run
    # from another directory must not open a second records database (and a second INC-2026-0001).
    home: Path = Field(default=PROJECT_ROOT / "var",
                       description="Data directory: records, reports, local Prefect server state.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the records database; default SQLite (WAL) under FIREBREAK_HOME.",
    )
    runbooks_dir: Path = Field(default=PROJECT_ROOT / "runbooks")
    contacts_file: Path = Field(default=PROJECT_ROOT / "notifications" / "contacts.yaml")
    local_timezone: str = Field(default="Asia/Shanghai", description="Zone shown beside UTC in reports.")
    prefect_port: int = Field(default=4200, description="Port of the local Prefect server that `firebreak` starts itself.")
    simulator_port: int = Field(default=8765, description="Port of the contact-centre simulator (`firebreak up "
                                                          "--with-simulator`, `firebreak simulator`).")
    services_file: Path = Field(default=PROJECT_ROOT / "runbooks" / "config" / "services.yaml",
                                description="Where each runbook's operations API is (default of URL parameters).")
    # Notifications (issue 3). The acknowledgement-link secret is never written to git or logs:
    # unset, a random one is kept in FIREBREAK_HOME/ack-secret (mode 0600), see notifications.acknowledgement.links.
    ack_secret: SecretStr | None = Field(default=None, description="HMAC key that signs acknowledgement links.")
    # The audit trail (issue 10): the key that signs every audit-chain head. Kept outside the records
    # database like the ack secret: unset, a random one is kept in FIREBREAK_HOME/audit-key (mode 0600),
    # see records.audit_key. Never logged.
    audit_key: SecretStr | None = Field(default=None, description="HMAC key that signs the audit-chain heads.")
    public_url: str = Field(default="http://127.0.0.1:8700",
                            description="Base URL of the HTTP service that serves acknowledgement links.")
    roster_file: Path = Field(default=PROJECT_ROOT / "notifications" / "roster.yaml")
    escalation_file: Path = Field(default=PROJECT_ROOT / "notifications" / "escalation.yaml")
    routing_file: Path = Field(default=PROJECT_ROOT / "notifications" / "level_routing.yaml")
    ack_link_ttl_hours: float = Field(default=24.0, gt=0, description="How long an acknowledgement link stays valid.")
    # The records database's connections (issue 13; README "Connection budget"). A process keeps one
    # pool per database URL, shared by all its threads: every run on a worker's slots uses it.
    # Unset, `firebreak worker` and `firebreak serve` size their own pool (intake.connection_budget);
    # any other process (the CLI, a run Prefect started) gets SQLAlchemy's 5 + 10.
    db_pool_size: int | None = Field(default=None, ge=1, description="Connections each process keeps open.")
    db_max_overflow: int | None = Field(default=None, ge=0,
                                        description="Connections a process may open beyond its pool at a peak.")
    # 10 s, as SQLite's busy wait (records.db): a run-lock renewal stuck waiting for a connection must
    # fail while its lease (30 s) is still fresh, and be tried again, rather than let the lease go stale.
    db_pool_timeout: float = Field(default=10.0, gt=0, description=(
        "How long a thread waits for a connection of its process's pool (and retries a server that is full) "
        "before the operation fails."))
    db_connection_budget: int | None = Field(default=None, ge=1, description=(
        "Connections this installation may open to the records database, all processes together; "
        "each intake and worker refuses to start if the configuration could use more."))
    db_reserved_connections: int = Field(default=10, ge=0, description=(
        "Part of the budget kept for everything else: the CLI, reconcile, runs started from the Prefect UI."))

    # Cached: every records write asks (Path.resolve is a system call per path part, measured at 5 % of
    # the intake's CPU in a burst); the settings object is rebuilt when the environment changes.
    @cached_property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @cached_property
    def records_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_home / 'firebreak.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reload_settings() -> Settings:
    """Forget the cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
    return get_settings()
