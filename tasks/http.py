"""`http`: one HTTP request with an expected status and expected JSON fields.

Used for health checks, failover hooks and status notices. A request that
changes something carries an Idempotency-Key header, so if an attempt fails after
the far side acted, the retry is recognisable there too. The key is
`firebreak:<incident uid>:<runbook>:<step>` (tasks.base.StepContext.sent_idempotency_key):
the same for every run of the incident (reuse="incident": a re-run does not fail
over twice) and unique across installations (the uid, not the incident number,
which restarts with each records database).

Before every request (here and in `wait_until`, which polls through `request`) the final URL, as
httpx parses it, must go to a host the runbook allows (runbooks.hosts.origin_problem): validation and
the run's parameter check judged the URL's parts, this judges what is actually requested. A step may
not set the `Host` header either (refused by `firebreak validate`, and here for a header a template
made). A refused request fails the step without retrying, and nothing is sent. Redirects are not
followed (httpx's default), so a response cannot send the request on to another host.
"""
from __future__ import annotations

from typing import Any, Literal

import httpx
from prefect.context import FlowRunContext
from pydantic import BaseModel, ConfigDict, Field

from firebreak.errors import ConfigInvalid, NotFound, StepFailed
from firebreak.yaml_lines import Path_
from runbooks.hosts import DEFAULT_PORTS, Origin, origin_problem, written_base
from runbooks.schema import Runbook, Step
from runbooks.validate import Report
from tasks.base import Attempt, StepContext, StepInputError, action

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


class RequestRefused(StepInputError):
    """The request would go to a host its runbook does not allow, or set Host: nothing was sent."""


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
    refuse_unless_allowed(inp.url, inp.headers, attempt.context)
    headers = dict(inp.headers)
    if inp.method not in SAFE_METHODS:
        headers.setdefault("Idempotency-Key", attempt.context.sent_idempotency_key)
    timeout = min(inp.request_timeout, max(attempt.remaining(), 0.1))
    with httpx.Client(timeout=timeout) as client:
        return client.request(inp.method, inp.url, json=inp.json_body, headers=headers)


def refuse_unless_allowed(url: str, headers: dict[str, str], context: StepContext) -> None:
    """Raise RequestRefused unless a request to `url` with `headers` is one the step's runbook allows."""
    if any(_is_host(name) for name in headers):
        raise RequestRefused("request refused, nothing sent: a step may not set the Host header (the host is the "
                             "URL's, checked against the runbook's allowed_hosts)")
    try:
        origin = _origin(url)
    except (httpx.InvalidURL, UnicodeDecodeError) as exc:
        raise RequestRefused(f"request refused, nothing sent: {url!r} is not a valid URL ({exc})") from None
    runbook = _runbook_of(context)
    if runbook is None:
        raise RequestRefused(f"request refused, nothing sent: runbook {context.runbook_id!r} cannot be loaded, so "
                             "its allowed_hosts cannot be checked")
    problem = origin_problem(origin, runbook.allowed_hosts, _written_origin(runbook, context.step_id))
    if problem is not None:
        raise RequestRefused(f"request refused, nothing sent: {problem}")


def _origin(url: str) -> Origin:
    # httpx's parser, the one the request is made with: the host checked is the host connected to.
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.raw_host.decode("ascii").lower(), parsed.port or DEFAULT_PORTS.get(parsed.scheme, 0)


def _written_origin(runbook: Runbook, step_id: str) -> Origin | None:
    """The origin the step's URL writes out in the runbook (runbooks.hosts.written_base), if it does."""
    try:
        url = runbook.step(step_id).with_.get("url")
    except KeyError:
        return None
    written = written_base(url) if isinstance(url, str) else None
    if written is None:
        return None
    try:
        return _origin(written)
    except (httpx.InvalidURL, UnicodeDecodeError):
        return None


def _runbook_of(context: StepContext) -> Runbook | None:
    """The runbook the step runs for: the file its flow run was given (a path, for a runbook outside the
    runbooks directory), else the runbook of that id in the runbooks directory; as the file is now."""
    # Imported here, not at the top: tasks.catalog imports every action module, this one included.
    from tasks.catalog import load_runbook

    names = [context.runbook_id]
    flow_run = FlowRunContext.get()
    if flow_run is not None and flow_run.flow_run is not None and str(flow_run.flow_run.id) == context.flow_run_id:
        given = (flow_run.parameters or {}).get("runbook")
        if isinstance(given, str) and given != context.runbook_id:
            names.insert(0, given)
    for name in names:
        try:
            runbook = load_runbook(name).runbook
        except (ConfigInvalid, NotFound, OSError):
            continue
        if runbook.id == context.runbook_id:
            return runbook
    return None


def _is_host(name: str) -> bool:
    return name.strip().lower() == "host"


def _check_step(step: Step, at: Path_, runbook: Runbook, problem: Report) -> None:
    """Validating a runbook: no `Host` header, which would send the request to a site other than the URL's
    host (a server that hosts several) while allowed_hosts checks only the URL."""
    headers = step.with_.get("headers")
    if not isinstance(headers, dict):
        return
    for name in headers:
        if isinstance(name, str) and _is_host(name):
            problem(at + ("with", "headers", name), "a step may not set the Host header: the request's host is "
                                                    "its URL's, which is checked against allowed_hosts")


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
    check_step=_check_step,
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
