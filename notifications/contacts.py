"""The contacts directory: people, their roles and their channels (Apprise URLs).

Runbooks name roles, never people. Secrets in channel URLs are written as
`${ENV_NAME}` references and filled in only at send time, so the file (and git)
never holds them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from notifications.roles import ROLES

ENV_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    name: str
    department: str
    roles: list[str] = Field(min_length=1)
    locale: str = Field(default="zh", pattern=r"^(zh|en)$")
    channels: list[str] = Field(min_length=1, description="Apprise URLs in order of preference")


class ContactsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contacts: list[Contact]


class ContactsInvalid(ValueError):
    pass


class Directory:
    def __init__(self, contacts: list[Contact]):
        self.contacts = contacts

    def for_role(self, role: str) -> list[Contact]:
        return [c for c in self.contacts if role in c.roles]


def load_directory(path: Path) -> Directory:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = ContactsFile.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ContactsInvalid(f"{path}: cannot read contacts: {exc}") from exc
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ContactsInvalid(f"{path}: {details}") from exc
    for contact in parsed.contacts:
        unknown = [r for r in contact.roles if r not in ROLES]
        if unknown:
            raise ContactsInvalid(f"{path}: contact {contact.id}: unknown role(s) {unknown}; known: {sorted(ROLES)}")
    return Directory(parsed.contacts)


def expand_secrets(url: str) -> str:
    """Fill `${ENV}` references from the environment at send time."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ContactsInvalid(f"channel refers to ${{{name}}}, which is not set in the environment")
        return os.environ[name]

    return ENV_REFERENCE.sub(substitute, url)
