"""The intake's edge: the checks every request meets before it is acted on, and the one place
Firebreak's errors become HTTP answers.

Framework-free (plain ASGI `receive`, header values and documents), so the alert routes
(intake.alert_routes), which answer on their own for speed, and the FastAPI routes (intake.app,
intake.operator_http) check and answer alike.
"""
from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from firebreak import errors
from intake import payloads, strict_json
from intake.ratelimit import RateLimiter
from intake.sources import AuthFailed, Source
from records.alert_ingest import IncomingAlert
from records.signatures import SignatureReplayed

#: What the records store raises when it cannot be reached (the answer is 503, not 500).
STORE_DOWN = (OperationalError, InterfaceError, PoolTimeout, OSError)
RETRY_AFTER_SECONDS = "5"

#: What an incident id can look like (INC-2026-0001); anything else is answered as unknown
#: (the incidents API in intake.app, the operator actions in intake.operator_http).
INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class Refused(errors.Refused):
    """A request the intake refuses at its edge, carrying its HTTP answer (status, error, details, headers)."""

    def __init__(self, status: int, error: str, details: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.details, self.headers = status, error, details or [], headers or {}


#: Firebreak's errors as HTTP answers: status, the error shown (None: the exception's own message)
#: and headers; an exception takes the first of its classes listed. `Refused` carries its own
#: answer. Any other error is not meant for the client: it stays a 500.
HTTP_ANSWERS: dict[type[errors.FirebreakError], tuple[int, str | None, dict[str, str]]] = {
    AuthFailed: (401, None, {"WWW-Authenticate": "Bearer"}),
    SignatureReplayed: (401, "this signature was already used (replayed request)", {}),
    errors.NotFound: (404, None, {}),
    errors.StoreUnavailable: (503, None, {"Retry-After": RETRY_AFTER_SECONDS}),
    # An optional feature this machine lacks (reports.pdf: WeasyPrint, Pango or a CJK font): the message says how.
    errors.NotInstalled: (501, None, {}),
}
ANSWERED: tuple[type[Exception], ...] = (Refused, *HTTP_ANSWERS)


def as_refused(exc: Exception) -> Refused:
    """The HTTP answer for `exc` (see HTTP_ANSWERS); raises `exc` itself if it has none."""
    if isinstance(exc, Refused):
        return exc
    for kind in type(exc).__mro__:
        if kind in HTTP_ANSWERS:
            status, error, headers = HTTP_ANSWERS[kind]
            return Refused(status, error or str(exc), headers=dict(headers))
    raise exc


def refusal_body(exc: Refused, *, pagerduty: bool = False) -> dict[str, Any]:
    """The JSON of a refusal: `{"error", "details"}`, or PagerDuty Events v2's shape on /v2/enqueue."""
    if not pagerduty:
        return {"error": exc.error, "details": exc.details}
    invalid = exc.status in (400, 422)
    # PagerDuty's documented message; `errors` names each field and why.
    return {"status": "invalid event" if invalid else "error",
            "message": "Event object is invalid" if invalid and exc.details else exc.error,
            "errors": [f"{d['field']}: {d['reason']}" for d in exc.details] or [exc.error]}


def json_bytes(document: Any) -> bytes:
    """A JSON answer's body, encoded as Starlette's JSONResponse does (compact UTF-8)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


# --- the checks, in the order the alert routes apply them ---------------------------------------


def require_json(declared: str | None) -> None:
    """415 unless the Content-Type header (`declared`) is JSON: `application/json`, optionally
    `; charset=utf-8` (what Alertmanager, Grafana and PagerDuty clients send)."""
    if declared is None:
        raise Refused(415, "Content-Type must be application/json; none was given",
                      [{"field": "Content-Type", "reason": "missing; send application/json"}])
    media, *parameters = declared.split(";")
    if media.strip().lower() != "application/json":
        raise Refused(415, "Content-Type must be application/json",
                      [{"field": "Content-Type", "reason": "not application/json"}])
    for parameter in parameters:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise Refused(415, "Content-Type charset must be utf-8",
                          [{"field": "Content-Type", "reason": "charset is not utf-8"}])


async def read_body(receive: Receive, declared_length: str | None, limit: int) -> bytes:
    """The request body from ASGI `receive`; 413 as soon as it (or its Content-Length) passes `limit`."""
    if declared_length and declared_length.isdigit() and int(declared_length) > limit:
        raise Refused(413, f"body is {declared_length} bytes; the limit is {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise Refused(400, "the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(body: bytes, status: int = 422) -> Any:
    """The body as strict JSON (intake.strict_json): 400 if it is not JSON, `status` naming each refused field."""
    try:
        return strict_json.loads(body)
    except strict_json.NotJson as exc:
        raise Refused(400, str(exc)) from None
    except strict_json.JsonRefused as exc:
        details = [{"field": p.field, "reason": p.reason} for p in exc.problems]
        raise Refused(status, "body is not acceptable JSON: " + listed(details), details) from None


def listed(details: list[dict[str, str]]) -> str:
    return "; ".join(f"{d['field']}: {d['reason']}" for d in details)


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    details = []
    for error in exc.errors()[:strict_json.MAX_PROBLEMS]:
        details.append({"field": strict_json.join_path(error["loc"]), "reason": error["msg"]})
    return details


def validate(model: type[BaseModel], document: Any, status: int = 422) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        details = field_errors(exc)
        raise Refused(status, "body does not fit the format: " + listed(details), details) from None


def check_limits(spec: Source, document: BaseModel, status: int = 422) -> None:
    """The source's label and annotation limits (intake.sources.Limits), naming each field over them."""
    details = payloads.limit_problems(document, spec.limits)
    if details:
        raise Refused(status, "over this source's limits: " + listed(details), details)


def check_sizes(spec: Source, alerts: list[IncomingAlert], where: list[str]) -> None:
    """413 naming each alert that would store more than the source's `max_total_bytes`."""
    details = payloads.size_problems(alerts, where, spec.limits)
    if details:
        raise Refused(413, "over this source's size limit: " + listed(details), details)


def throttle(limiter: RateLimiter, key: str) -> None:
    """429 with Retry-After once the bucket of `key` (a source, reader or operator) is empty (intake.ratelimit)."""
    wait = limiter.retry_after(key)
    if wait is not None:
        raise Refused(429, f"too many requests for {key.replace(':', ' ')}; try again in {wait} s",
                      headers={"Retry-After": str(wait)})
