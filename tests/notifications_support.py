"""Test plumbing for notifications: a notifications configuration written per test,
a real SMTP server (aiosmtpd) and an HTTP receiver that notes when each request arrived."""
from __future__ import annotations

import email
import email.policy
import os
import socket
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller

from firebreak.settings import reload_settings

#: Level routing used unless a test gives its own: every level engages technical support.
LEVELS = {"III": ["technical_support"], "II": ["technical_support"], "I": ["technical_support"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound and released, so nobody else holds it right now)."""
    return free_port()


@dataclass
class NotifyConfig:
    directory: Path
    env: dict[str, str | None] = field(default_factory=dict)

    def write(self, contacts: list[dict[str, Any]], *, policies: dict[str, Any] | None = None,
              roster: dict[str, Any] | None = None, levels: dict[str, list[str]] | None = None) -> None:
        files = {
            "FIREBREAK_CONTACTS_FILE": ("contacts.yaml", {"contacts": contacts}),
            "FIREBREAK_ESCALATION_FILE": ("escalation.yaml", {"policies": policies or {}}),
            "FIREBREAK_ROSTER_FILE": ("roster.yaml", roster or {"timezone": "Asia/Shanghai", "shifts": []}),
            "FIREBREAK_ROUTING_FILE": ("routing.yaml", {"levels": levels or LEVELS, "groups": {"default": {}}}),
        }
        for variable, (name, document) in files.items():
            path = self.directory / name
            path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
            self.set_env(variable, str(path))
        # Only the test's own runbooks count when checking that every role used is staffed.
        runbooks = self.directory / "runbooks"
        runbooks.mkdir(exist_ok=True)
        self.set_env("FIREBREAK_RUNBOOKS_DIR", str(runbooks))
        reload_settings()

    def set_env(self, name: str, value: str) -> None:
        self.env.setdefault(name, os.environ.get(name))
        os.environ[name] = value
        reload_settings()

    def restore(self) -> None:
        for name, value in self.env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reload_settings()


def contact(contact_id: str, roles: list[str], channels: list[str], locale: str = "en",
            department: str = "Technical Support") -> dict[str, Any]:
    return {"id": contact_id, "name": contact_id.replace("-", " ").title(), "department": department,
            "roles": roles, "locale": locale, "channels": channels}


class _Mailbox:
    def __init__(self, reject: str | None):
        self.reject = reject
        self.messages: list[Message] = []
        self.envelopes: list[Any] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.reject:
            return self.reject
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted"


class SmtpServer:
    """A real SMTP server on localhost (aiosmtpd). `reject` answers every recipient with that reply."""

    def __init__(self, reject: str | None = None):
        self.mailbox = _Mailbox(reject)
        self.port = free_port()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)

    def url(self, to: str) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=firebreak@example.com&to={to}&mode=insecure"

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Message]:
        return self.mailbox.messages


def body_parts(message: Message) -> dict[str, str]:
    parts: dict[str, str] = {}
    for part in message.walk():
        if not part.is_multipart():
            parts[part.get_content_type()] = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
    return parts


def page_step(step_id: str = "page", to: list[str] | None = None, **extra) -> dict:
    return {"id": step_id, "title": "Page technical support", "action": "notify",
            "with": {"to": to or ["technical_support"], "event": "triggered",
                     "title": "Chat <script>alert(1)</script> down", "message": "Online chat fails: {{ params.what }}"},
            **extra}


WHAT = {"what": {"type": "string", "description": "alert text", "default": "<b>HTTP 503</b> {{ 7 * 7 }}"}}
