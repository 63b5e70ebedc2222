"""Signed, expiring acknowledgement links.

A token is `<payload>.<signature>`, both base64url: the payload names the
incident, the contact and the expiry (Unix seconds), and the signature is
HMAC-SHA256 of the payload under the project's secret. Anyone holding the link
can acknowledge as that contact until it expires; nobody can make one up.

The secret comes from FIREBREAK_ACK_SECRET. Unset, a random secret is created
once in FIREBREAK_HOME/ack-secret with mode 0600 and reused, so links survive a
restart; it is never printed or logged.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

from firebreak.errors import Refused
from firebreak.settings import get_settings

SECRET_FILE_NAME = "ack-secret"
_PAYLOAD_ID = re.compile(r"^[A-Za-z0-9._@-]{1,120}$")
_lock = threading.Lock()


class AckTokenError(Refused, ValueError):
    """The token cannot be used to acknowledge; `reason` says why, for the person holding it."""

    status_code = 403

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class AckTokenForged(AckTokenError):
    """The link is malformed, unreadable or not signed with this installation's secret."""

    status_code = 403


class AckTokenExpired(AckTokenError):
    """The link was genuine but its expiry has passed."""

    status_code = 410


def _secret() -> bytes:
    configured = get_settings().ack_secret
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value().encode()
    path = get_settings().resolved_home / SECRET_FILE_NAME
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it first
                pass
            else:
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        value = Path(path).read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty; delete it to have a new acknowledgement secret generated")
    return value.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: bytes) -> str:
    return _b64(hmac.new(_secret(), payload, hashlib.sha256).digest())


def make_ack_token(incident_id: str, contact_id: str, expires_at: datetime) -> str:
    for name, value in (("incident_id", incident_id), ("contact_id", contact_id)):
        if not _PAYLOAD_ID.match(value):
            raise ValueError(f"{name} {value!r} cannot go into an acknowledgement link")
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    payload = f"{incident_id}|{contact_id}|{int(expires_at.timestamp())}".encode()
    return f"{_b64(payload)}.{_sign(payload)}"


def make_ack_link(incident_id: str, contact_id: str, expires_at: datetime) -> str:
    base = get_settings().public_url.rstrip("/")
    return f"{base}/ack/{quote(make_ack_token(incident_id, contact_id, expires_at), safe='')}"


def default_expiry(now: datetime | None = None) -> datetime:
    return (now or datetime.now(timezone.utc)) + timedelta(hours=get_settings().ack_link_ttl_hours)


def verify_ack_token(token: str, *, now: datetime | None = None) -> tuple[str, str]:
    """Return (incident_id, contact_id); raise AckTokenForged or AckTokenExpired."""
    try:
        encoded_payload, signature = token.split(".")
        payload = _unb64(encoded_payload)
    except (ValueError, TypeError) as exc:
        raise AckTokenForged("the link is malformed") from exc
    if not hmac.compare_digest(_sign(payload), signature):
        raise AckTokenForged("the link's signature does not match; it was altered or not issued by Firebreak")
    try:
        incident_id, contact_id, expiry = payload.decode().split("|")
        expires = datetime.fromtimestamp(int(expiry), timezone.utc)
    except (ValueError, UnicodeDecodeError) as exc:  # signed but unreadable: only with a leaked key
        raise AckTokenForged("the link's content is unreadable") from exc
    if (now or datetime.now(timezone.utc)) >= expires:
        raise AckTokenExpired(f"the link expired at {expires:%Y-%m-%d %H:%M}Z; acknowledge with "
                              f"`firebreak ack {incident_id} --by NAME` or in the Prefect UI")
    return incident_id, contact_id


def make_form_token(token: str, nonce: str | None = None) -> str:
    """The hidden field of the link's confirmation page: `<nonce>.<HMAC of "ack-form|<token>|<nonce>">`.

    Only a GET of the page (which needs the link) gets one, and a page of another site cannot read
    it, so a POST carrying it comes from the confirmation page (notifications.acknowledgement.http)."""
    nonce = nonce or secrets.token_urlsafe(16)
    return f"{nonce}.{_sign(f'ack-form|{token}|{nonce}'.encode())}"


def form_token_valid(token: str, value: str) -> bool:
    nonce, dot, _mac = value.partition(".")
    if not nonce or not dot or len(value) > 200:
        return False
    return hmac.compare_digest(make_form_token(token, nonce), value)
