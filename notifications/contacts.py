"""The contacts directory: people, their department, roles, locale and channels (Apprise URLs).

Runbooks name roles, never people. Secrets in channel URLs are written as
`${ENV_NAME}` references and filled in only at send time, so the file (and git)
never holds them: a channel with a password or token written inline is refused
at load time, naming the contact and the channel.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import apprise
from pydantic import BaseModel, ConfigDict, Field

from firebreak.config_files import cached_by_mtime, load_model
from firebreak.errors import ConfigInvalid
from runbooks.roles import ROLES

ENV_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
DEPARTMENTS = ("Customer Service", "Technical Support", "Marketing", "Logistics", "Product Safety", "Administration")
#: Query-string keys (and custom +headers) that carry credentials in Apprise URLs.
_SECRET_KEY = re.compile(r"(pass|password|passwd|secret|token|apikey|api_key|key|auth|authorization|signature|sig"
                         r"|access|webhook|botkey|bearer)", re.IGNORECASE)
_URL_PARTS = re.compile(r"[/:@?&=#]+")
_PLACEHOLDER = "FBENVREF"


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    name: str = Field(min_length=1)
    department: str
    roles: list[str] = Field(min_length=1)
    locale: str = Field(default="zh", pattern=r"^(zh|en)$")
    channels: list[str] = Field(min_length=1, description="Apprise URLs in order of preference")


class ContactsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contacts: list[Contact]


class ContactsInvalid(ConfigInvalid, ValueError):
    """The contacts directory has problems, or names a contact or a secret variable that does not exist."""


class Directory:
    def __init__(self, contacts: list[Contact]):
        self.contacts = contacts
        self.by_id = {c.id: c for c in contacts}

    def for_role(self, role: str) -> list[Contact]:
        return [c for c in self.contacts if role in c.roles]

    def get(self, contact_id: str) -> Contact:
        try:
            return self.by_id[contact_id]
        except KeyError:
            raise ContactsInvalid(f"no contact {contact_id!r} in the directory") from None


@cached_by_mtime(ContactsInvalid, "contacts")
def load_directory(path: Path) -> Directory:
    parsed, _lines = load_model(path, ContactsFile, ContactsInvalid)
    seen: set[str] = set()
    for contact in parsed.contacts:
        where = f"{path}: contact {contact.id}"
        if contact.id in seen:
            raise ContactsInvalid(f"{where}: duplicate contact id")
        seen.add(contact.id)
        unknown = [r for r in contact.roles if r not in ROLES]
        if unknown:
            raise ContactsInvalid(f"{where}: unknown role(s) {unknown}; known: {sorted(ROLES)}")
        if contact.department not in DEPARTMENTS:
            raise ContactsInvalid(f"{where}: unknown department {contact.department!r}; expected one of "
                                  f"{', '.join(DEPARTMENTS)}")
        for index, url in enumerate(contact.channels):
            problem = inline_secret_problem(url)
            if problem:
                raise ContactsInvalid(f"{where}: channel {index + 1} ({channel_scheme(url)}): {problem}; write it as "
                                      f"a ${{ENV_NAME}} reference and set that variable in the environment")
    return Directory(parsed.contacts)


def channel_scheme(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else "(no scheme)"


def inline_secret_problem(url: str) -> str | None:
    """Why `url` holds a secret written inline, or None. Never quotes the secret itself."""
    parts = urlsplit(url)
    if parts.password is not None and not _only_references(parts.password):
        return "the password in the URL is written inline"
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_KEY.search(key) and value and not _only_references(value):
            return f"query parameter {key!r} holds a credential written inline"
    # What Apprise itself treats as private (tokens in the path of slack://, feishu://, …):
    # whatever its privacy=True form hides must be an ${ENV} reference.
    # Placeholders are plain upper-case letters and digits so that plugins which check a
    # token's shape still parse the URL.
    names = list(dict.fromkeys(ENV_REFERENCE.findall(url)))
    placeholdered = ENV_REFERENCE.sub(lambda m: f"{_PLACEHOLDER}{names.index(m.group(1))}", url)
    server = apprise.Apprise.instantiate(placeholdered, suppress_exceptions=True)
    if server is None:
        return None  # unparseable URLs are reported as a delivery error naming the scheme
    public = set(_URL_PARTS.split(server.url(privacy=True)))
    hidden = [token for token in _URL_PARTS.split(server.url(privacy=False)) if token and token not in public]
    if any(_PLACEHOLDER not in token for token in hidden):
        return "a token Apprise treats as secret is written inline"
    return None


def _only_references(text: str) -> bool:
    return bool(text) and ENV_REFERENCE.sub("", text) == ""


#: Every value filled in from a ${ENV} reference, so log output can be scrubbed of it
#: (Apprise's privacy mode does not hide everything, e.g. custom +header values).
_filled_secrets: set[str] = set()


def expand_secrets(url: str) -> str:
    """Fill `${ENV}` references from the environment at send time."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ContactsInvalid(f"channel refers to ${{{name}}}, which is not set in the environment")
        value = os.environ[name]
        if len(value) >= 4:
            _filled_secrets.add(value)
        return value

    return ENV_REFERENCE.sub(substitute, url)


def scrub(text: str) -> str:
    """`text` with every value filled in from a ${ENV} reference replaced by ****."""
    for secret in _filled_secrets:
        if secret in text:
            text = text.replace(secret, "****")
    return text


class ScrubSecrets(logging.Filter):
    """Rewrites a log record so that no value filled in from ${ENV} survives in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _filled_secrets:
            message = record.getMessage()
            cleaned = scrub(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


# Apprise logs every URL it loads (at debug level) through this one logger.
logging.getLogger("apprise").addFilter(ScrubSecrets())
