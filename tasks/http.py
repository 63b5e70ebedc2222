"""`http`: one HTTP request with an expected status and expected JSON fields.

Used for health checks, failover hooks and status notices. A request that
changes something carries an Idempotency-Key header, so if an attempt fails after
the far side acted, the retry is recognisable there too. The key is
`firebreak:<incident uid>:<runbook>:<step>` (tasks.base.StepContext.sent_idempotency_key):
the same for every run of the incident (reuse="incident": a re-run does not fail
over twice) and unique across installations (the uid, not the incident number,
which restarts with each records database).
"""
from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from firebreak.errors import StepFailed
from tasks.base import Attempt, action

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class HttpInput(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str = Field(pattern=r"^https?://")
    method: Literal["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    json_body: Any = Field(default=None, alias="json")
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: list[int] = Field(default_factory=lambda: list(range(200, 300)))
    expect_json: dict[str, Any] = Field(default_factory=dict, description="dotted path → expected value")
    request_timeout: float = Field(default=10.0, gt=0)


class HttpOutput(BaseModel):
    status: int
    json_body: Any = Field(default=None, serialization_alias="json")
    elapsed_ms: float


class HttpCheckFailed(StepFailed, RuntimeError):
    """The response's status or JSON fields are not what the step expects."""


def dig(document: Any, dotted: str) -> Any:
    """Follow a dotted path (`nodes.primary.up`, `items.0.id`) into parsed JSON."""
    current = document
    for part in dotted.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise KeyError(dotted)
    return current


def request(inp: HttpInput, attempt: Attempt) -> httpx.Response:
    headers = dict(inp.headers)
    if inp.method not in SAFE_METHODS:
        headers.setdefault("Idempotency-Key", attempt.context.sent_idempotency_key)
    timeout = min(inp.request_timeout, max(attempt.remaining(), 0.1))
    with httpx.Client(timeout=timeout) as client:
        return client.request(inp.method, inp.url, json=inp.json_body, headers=headers)


def parse_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@action(
    "http",
    HttpInput,
    describe=lambda inp: f"{inp.method} {inp.url}",
    side_effect=lambda inp: inp.method not in SAFE_METHODS,
    reuse="incident",  # an idempotent mutation, keyed like the Idempotency-Key it sends
)
def http(inp: HttpInput, attempt: Attempt) -> HttpOutput:
    response = request(inp, attempt)
    body = parse_json(response)
    if response.status_code not in inp.expect_status:
        raise HttpCheckFailed(f"{inp.method} {inp.url} returned {response.status_code}, expected {_statuses(inp.expect_status)}")
    for path, expected in inp.expect_json.items():
        try:
            actual = dig(body, path)
        except KeyError:
            raise HttpCheckFailed(f"response has no field {path!r}") from None
        if actual != expected:
            raise HttpCheckFailed(f"response field {path!r} is {actual!r}, expected {expected!r}")
    return HttpOutput(status=response.status_code, json_body=body, elapsed_ms=response.elapsed.total_seconds() * 1000)


def _statuses(codes: list[int]) -> str:
    if codes == list(range(200, 300)):
        return "2xx"
    return ", ".join(map(str, codes))
