"""Sources: who may post alerts, in which format, and how each proves who it is.

Configured in YAML (intake/sources.yaml). Secrets are never written there:
each auth method names the environment variable that holds its secret.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from firebreak.config_files import load_model
from firebreak.errors import ConfigInvalid, Refused

ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
Format = Literal["alertmanager", "grafana", "pagerduty", "generic"]


class BearerAuth(BaseModel):
    """`Authorization: Bearer <token>` (Alertmanager's `http_config.authorization`, Grafana's webhook)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["bearer"]
    token_env: str = Field(pattern=ENV_NAME)


class RoutingKeyAuth(BaseModel):
    """PagerDuty Events v2: the event's `routing_key` is the credential."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["routing_key"]
    routing_key_env: str = Field(pattern=ENV_NAME)


class HmacAuth(BaseModel):
    """HMAC-SHA256 over `<timestamp><separator><body>`, hex, optionally prefixed `sha256=`.
    The timestamp (Unix seconds) must be within `replay_window_seconds` of now, and a
    signature is accepted once only."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["hmac"]
    secret_env: str = Field(pattern=ENV_NAME)
    signature_header: str = "X-Firebreak-Signature"
    timestamp_header: str = "X-Firebreak-Timestamp"
    separator: str = "."
    replay_window_seconds: int = Field(default=300, ge=1, le=86400)


Auth = Annotated[BearerAuth | RoutingKeyAuth | HmacAuth, Field(discriminator="type")]


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Format
    description: str = ""
    auth: Auth

    @field_validator("auth")
    @classmethod
    def _auth_fits_format(cls, auth: BearerAuth | RoutingKeyAuth | HmacAuth,
                          info: ValidationInfo) -> BearerAuth | RoutingKeyAuth | HmacAuth:
        # On `auth` (not the whole source) so the problem is reported at the auth line.
        source_format = info.data.get("format")
        if source_format is not None and (source_format == "pagerduty") != isinstance(auth, RoutingKeyAuth):
            raise ValueError("a pagerduty source authenticates with `type: routing_key`, and only it does")
        return auth


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,59}$")], Source]


class SourcesInvalid(ConfigInvalid, ValueError):
    """The sources file has problems (one `file:line: field: problem` line each)."""


#: Keys someone might write the secret itself under, instead of naming its variable.
_SECRET_KEYS = ("token", "secret", "routing_key", "password", "key")


def _explain(problem: dict[str, Any]) -> str | None:
    """Messages for the two ways a secret ends up in this file; neither repeats the value."""
    field = str(problem["loc"][-1]) if problem["loc"] else ""
    if problem["type"] == "extra_forbidden" and field in _SECRET_KEYS:
        return "secrets are not written in this file; name the environment variable that holds it (…_env)"
    if problem["type"] == "string_pattern_mismatch" and field.endswith("_env"):
        # Not echoed: a value that is not a variable name may well be the secret itself.
        return f"must be the name of an environment variable ({ENV_NAME}); the value is not shown"
    return None


def load_sources(path: Path) -> dict[str, Source]:
    """The sources in `path`; SourcesInvalid names `file:line: field: problem` for each problem."""
    return load_model(path, SourcesFile, SourcesInvalid, explain=_explain)[0].sources


class AuthFailed(Refused):
    """The request is not from the source it claims to be; `reason` is safe to show (no secret in it)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    source: str
    #: For HMAC sources: the signature, stored with the alert so a replay is refused.
    signature: str | None = None


def secret_of(env: str) -> str | None:
    value = os.environ.get(env)
    return value if value else None


def verify_bearer(name: str, auth: BearerAuth, authorization: str | None) -> Verified:
    expected = secret_of(auth.token_env)
    if expected is None:
        raise AuthFailed(f"source {name!r} has no token configured ({auth.token_env} is unset); it accepts nothing")
    if not authorization:
        raise AuthFailed("missing Authorization header (expected `Bearer <token>`)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthFailed("Authorization header is not `Bearer <token>`")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise AuthFailed("bearer token is not valid for this source")
    return Verified(name)


_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def verify_hmac(name: str, auth: HmacAuth, headers: dict[str, str], body: bytes,
                now: float | None = None) -> Verified:
    secret = secret_of(auth.secret_env)
    if secret is None:
        raise AuthFailed(f"source {name!r} has no HMAC secret configured ({auth.secret_env} is unset); it accepts nothing")
    signature = headers.get(auth.signature_header.lower())
    stamp = headers.get(auth.timestamp_header.lower())
    if not signature:
        raise AuthFailed(f"missing {auth.signature_header} header")
    if not stamp:
        raise AuthFailed(f"missing {auth.timestamp_header} header")
    try:
        sent_at = float(stamp)
    except ValueError:
        raise AuthFailed(f"{auth.timestamp_header} is not Unix seconds") from None
    now = time.time() if now is None else now
    if abs(now - sent_at) > auth.replay_window_seconds:
        raise AuthFailed(f"{auth.timestamp_header} is outside the {auth.replay_window_seconds}s replay window")
    given = signature.strip().removeprefix("sha256=")
    if not _HEX.match(given):
        raise AuthFailed(f"{auth.signature_header} is not a hex SHA-256 HMAC")
    expected = hmac.new(secret.encode(), stamp.encode() + auth.separator.encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.lower(), expected):
        raise AuthFailed("signature does not match the body and timestamp")
    return Verified(name, signature=f"{name}:{expected}")


def sign(secret: str, body: bytes, timestamp: int | None = None, separator: str = ".") -> tuple[str, str]:
    """(timestamp, signature header value) for a body: what a sender computes."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), stamp.encode() + separator.encode() + body, hashlib.sha256).hexdigest()
    return stamp, f"sha256={digest}"


def source_for_routing_key(sources: dict[str, Source], routing_key: str) -> str | None:
    """The pagerduty source whose routing key this is (constant-time per comparison)."""
    found = None
    for name, source in sources.items():
        if isinstance(source.auth, RoutingKeyAuth):
            expected = secret_of(source.auth.routing_key_env)
            if expected is not None and hmac.compare_digest(routing_key.encode(), expected.encode()):
                found = name
    return found
