"""Sources: who may post alerts, in which format, and how each proves who it is.

Configured in YAML (intake/sources.yaml). Secrets are never written there:
each auth method names the environment variable that holds its secret.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

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
    The timestamp (Unix seconds) may be at most `replay_window_seconds` old and at most
    `future_skew_seconds` ahead of this server's clock, and a signature is accepted once only
    (it is remembered until its timestamp is older than the window: records.signatures)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["hmac"]
    secret_env: str = Field(pattern=ENV_NAME)
    signature_header: str = "X-Firebreak-Signature"
    timestamp_header: str = "X-Firebreak-Timestamp"
    separator: str = "."
    replay_window_seconds: int = Field(default=300, ge=1, le=86400)
    #: How far ahead of this server's clock a sender's may be (a small skew, not a second window).
    future_skew_seconds: int = Field(default=60, ge=0, le=300)


Auth = Annotated[BearerAuth | RoutingKeyAuth | HmacAuth, Field(discriminator="type")]


class RateLimit(BaseModel):
    """A token bucket: `per_second` requests a second on average, up to `burst` at once.
    Kept per intake process (each of `--workers N`, each replica, has its own)."""

    model_config = ConfigDict(extra="forbid")
    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


class Limits(BaseModel):
    """What one alert may carry. Labels are what routing reads and every alert row stores (PagerDuty's
    `custom_details` become labels, so they count as labels); annotations are free text. Lengths count
    characters; `max_total_bytes` counts the UTF-8 bytes of one alert's label and annotation keys and
    values together. Past a count or length: 422 naming the field; past the total: 413."""

    model_config = ConfigDict(extra="forbid")
    max_labels: int = Field(default=64, ge=1, le=10_000)
    max_annotations: int = Field(default=32, ge=0, le=10_000)
    max_key_length: int = Field(default=128, ge=1, le=10_000)
    max_label_value_length: int = Field(default=1024, ge=1, le=1_048_576)
    max_annotation_value_length: int = Field(default=16_384, ge=1, le=1_048_576)
    max_total_bytes: int = Field(default=65_536, ge=1, le=16_777_216)


#: A monitor's default: far above what Alertmanager or Grafana send (they group alerts), low enough
#: that a leaked credential cannot bury the records.
DEFAULT_SOURCE_RATE = RateLimit(per_second=50, burst=500)
#: A reader's default: dashboards and scripts polling the incidents API.
DEFAULT_READER_RATE = RateLimit(per_second=5, burst=50)
#: An operator's default: a person (or their chat bot) acting on incidents.
DEFAULT_OPERATOR_RATE = RateLimit(per_second=2, burst=20)


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Format
    description: str = ""
    auth: Auth
    limits: Limits = Field(default_factory=Limits)
    #: null: no limit (benchmarks); answered 429 with Retry-After once the bucket is empty.
    rate_limit: RateLimit | None = DEFAULT_SOURCE_RATE

    @field_validator("auth")
    @classmethod
    def _auth_fits_format(cls, auth: BearerAuth | RoutingKeyAuth | HmacAuth,
                          info: ValidationInfo) -> BearerAuth | RoutingKeyAuth | HmacAuth:
        # On `auth` (not the whole source) so the problem is reported at the auth line.
        source_format = info.data.get("format")
        if source_format is not None and (source_format == "pagerduty") != isinstance(auth, RoutingKeyAuth):
            raise ValueError("a pagerduty source authenticates with `type: routing_key`, and only it does")
        return auth


class Reader(BaseModel):
    """Who may read the incidents API and its docs: `Authorization: Bearer <token>` (or, for a
    browser opening /docs, HTTP Basic with the reader's name and token)."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    token_env: str = Field(pattern=ENV_NAME)
    rate_limit: RateLimit | None = DEFAULT_READER_RATE


class Operator(BaseModel):
    """A person who may act on incidents over HTTP (`POST /v1/incidents/{id}/{action}`) with their own
    token: `Authorization: Bearer <token>`. The token speaks for exactly one contact, so what the
    timeline records as `by` is who holds the token, never a name the request chose."""

    model_config = ConfigDict(extra="forbid")
    #: The contact id in the contacts directory this token acts as.
    contact: str = Field(min_length=1, max_length=200)
    description: str = ""
    token_env: str = Field(pattern=ENV_NAME)
    rate_limit: RateLimit | None = DEFAULT_OPERATOR_RATE


Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,59}$")]


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: dict[Name, Source]
    #: Nobody may read the incidents API until a reader is configured here.
    readers: dict[Name, Reader] = Field(default_factory=dict)
    #: Nobody may act on incidents over HTTP until an operator is configured here.
    operators: dict[Name, Operator] = Field(default_factory=dict)


class SourcesInvalid(ConfigInvalid, ValueError):
    """The sources file has problems (one `file:line: field: problem` line each)."""


#: Keys someone might write the secret itself under, instead of naming its variable.
_SECRET_KEYS = ("token", "secret", "routing_key", "password", "key")


def _explain(problem: ErrorDetails) -> str | None:
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
    return load_access(path).sources


def load_access(path: Path) -> SourcesFile:
    """The whole file: sources and readers (SourcesInvalid as for load_sources)."""
    return load_model(path, SourcesFile, SourcesInvalid, explain=_explain)[0]


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
    #: For HMAC sources: the signed timestamp, and when the timestamp check alone refuses it
    #: (sent_at + window): the signature is remembered at least until then.
    sent_at: float | None = None
    expires_at: float | None = None


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
    if not math.isfinite(sent_at):
        raise AuthFailed(f"{auth.timestamp_header} is not Unix seconds")
    if now - sent_at > auth.replay_window_seconds:
        raise AuthFailed(f"{auth.timestamp_header} is outside the {auth.replay_window_seconds}s replay window "
                         "(too old)")
    if sent_at - now > auth.future_skew_seconds:
        raise AuthFailed(f"{auth.timestamp_header} is outside the {auth.replay_window_seconds}s replay window "
                         f"(more than {auth.future_skew_seconds}s ahead of this server's clock)")
    given = signature.strip().removeprefix("sha256=")
    if not _HEX.match(given):
        raise AuthFailed(f"{auth.signature_header} is not a hex SHA-256 HMAC")
    expected = hmac.new(secret.encode(), stamp.encode() + auth.separator.encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.lower(), expected):
        raise AuthFailed("signature does not match the body and timestamp")
    return Verified(name, signature=f"{name}:{expected}", sent_at=sent_at,
                    expires_at=sent_at + auth.replay_window_seconds)


def sign(secret: str, body: bytes, timestamp: int | None = None, separator: str = ".") -> tuple[str, str]:
    """(timestamp, signature header value) for a body: what a sender computes."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), stamp.encode() + separator.encode() + body, hashlib.sha256).hexdigest()
    return stamp, f"sha256={digest}"


def _bearer_holder(holders: dict[str, Reader] | dict[str, Operator], token: str) -> str | None:
    """The name whose token is `token`; every holder is compared, in constant time each, so the
    answer's timing does not tell which one (or whether any) came close."""
    found = None
    for name, holder in holders.items():
        expected = secret_of(holder.token_env)
        if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
            found = name
    return found


def verify_reader(readers: dict[str, Reader], authorization: str | None) -> str:
    """The reader whose token `authorization` carries (`Bearer <token>`, or `Basic` with the reader's
    name and token), else AuthFailed. Checked before anything is looked up, so an unauthenticated
    caller learns nothing about what exists."""
    if not authorization:
        raise AuthFailed("missing Authorization header (expected `Bearer <read token>`)")
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        found = _bearer_holder(readers, credentials)
        if found is not None:
            return found
    elif scheme.lower() == "basic" and credentials:
        try:
            name, _, token = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise AuthFailed("Authorization header is not `Basic <base64 of name:token>`") from None
        named = readers.get(name)
        expected = secret_of(named.token_env) if named is not None else None
        if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
            return name
    else:
        raise AuthFailed("Authorization header is not `Bearer <read token>`")
    raise AuthFailed("read token is not valid")


def verify_operator(operators: dict[str, Operator], authorization: str | None) -> str:
    """The operator (sources file `operators:`) whose own token `authorization` carries, else
    AuthFailed. A source's credential or a read token is no operator's: monitors post alerts and
    readers read; only a person's token changes an incident by hand."""
    if not authorization:
        raise AuthFailed("missing Authorization header (expected `Bearer <operator token>`, an operator's own "
                         "token from the sources file's `operators:`)")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthFailed("Authorization header is not `Bearer <operator token>`")
    found = _bearer_holder(operators, token.strip())
    if found is None:
        raise AuthFailed("not an operator's token (a source's credential or a read token cannot act on incidents)")
    return found


def source_for_routing_key(sources: dict[str, Source], routing_key: str) -> str | None:
    """The pagerduty source whose routing key this is (constant-time per comparison)."""
    found = None
    for name, source in sources.items():
        if isinstance(source.auth, RoutingKeyAuth):
            expected = secret_of(source.auth.routing_key_env)
            if expected is not None and hmac.compare_digest(routing_key.encode(), expected.encode()):
                found = name
    return found
