"""Where the services runbooks act on are: configuration, not runbook text.

A runbook's URL parameters (`format: url`) get their default from the services file
(FIREBREAK_SERVICES_FILE, default runbooks/config/services.yaml): `defaults` per parameter name,
`runbooks.<id>` per runbook. The runbook's own `default:` is used only where the file names none,
so a form, `firebreak run` or an alert route shows the endpoint that is configured here and now
(`firebreak up --with-simulator --simulator-port 9000` writes a file with port 9000), not a port
written into the runbook. The host must still be in the runbook's `allowed_hosts`.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from firebreak.config_files import cached_by_mtime, load_model
from firebreak.errors import ConfigInvalid
from firebreak.settings import get_settings


class ServicesInvalid(ConfigInvalid, ValueError):
    """The services file has problems."""


class ServicesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, str] = Field(default_factory=dict, description="parameter name → URL, every runbook")
    runbooks: dict[str, dict[str, str]] = Field(default_factory=dict,
                                                description="runbook id → parameter name → URL")

    def url_for(self, runbook_id: str, parameter: str) -> str | None:
        return self.runbooks.get(runbook_id, {}).get(parameter, self.defaults.get(parameter))


@cached_by_mtime(ServicesInvalid, "services")
def load_services(path: Path) -> ServicesFile:
    return load_model(path, ServicesFile, ServicesInvalid)[0]


def services() -> tuple[ServicesFile, float]:
    """The configured services and the file's modification time (0 without a file: nothing configured)."""
    path = get_settings().services_file
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return ServicesFile(), 0.0
    return load_services(path), stamp
