"""Firebreak settings, read from the environment with the FIREBREAK_ prefix.

Prefect's own PREFECT_* settings are left to Prefect; nothing here shadows them.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIREBREAK_", extra="ignore")

    home: Path = Field(default=Path("./var"), description="Data directory: records, reports, local Prefect server state.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the records database; default SQLite (WAL) under FIREBREAK_HOME.",
    )
    runbooks_dir: Path = Field(default=PROJECT_ROOT / "runbooks")
    contacts_file: Path = Field(default=PROJECT_ROOT / "notifications" / "contacts.yaml")
    local_timezone: str = Field(default="Asia/Shanghai", description="Zone shown beside UTC in reports.")
    prefect_port: int = Field(default=4200, description="Port of the local Prefect server that `firebreak` starts itself.")
    simulator_port: int = Field(default=8765)
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

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
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
