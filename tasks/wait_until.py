"""`wait_until`: poll a check until a condition holds N times in a row, or a deadline passes.

Each poll is a request made by tasks.http.request, so each is held to the runbook's allowed_hosts;
a refused one fails the step at once instead of counting as a check that does not hold yet."""
from __future__ import annotations

import re
import time
from typing import Any, Literal

import httpx
from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field

from firebreak.errors import StepFailed
from records.models import utcnow
from runbooks.templating import evaluate
from tasks.base import Attempt, action
from tasks.http import HttpInput, RequestRefused, parse_json, request

#: Names a wait_until condition may use.
CONDITION_NAMES = frozenset({"status", "json"})


class WaitUntilInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://")
    method: Literal["GET", "HEAD"] = "GET"
    condition: str = Field(min_length=1, description="Jinja2 expression over `status` and `json`")
    consecutive: int = Field(default=3, ge=1, le=1000)
    interval: float = Field(default=1.0, gt=0, le=3600)
    deadline: float = Field(default=300.0, gt=0, description="seconds before giving up")
    finish_on_monitor_resolve: bool = Field(
        default=False, description="stop waiting once the monitor that raised the incident reports it resolved")


#: Samples kept for the report's chart of what the step watched: every check up to this many,
#: then every other one (and so on), so a long wait stays a bounded record.
MAX_SAMPLES = 240
#: `json.<field> <op> <number or json.field>` in a condition: the figures a chart draws, with their bound.
_COMPARISON = re.compile(r"json\.([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|==|!=)\s*"
                         r"(json\.[A-Za-z_][A-Za-z0-9_]*|-?\d+(?:\.\d+)?)")


class Bound(BaseModel):
    """One comparison in the condition: `field op bound`, the bound a number or another field."""

    field: str
    op: str
    value: float | None = None
    other_field: str | None = None


class Sample(BaseModel):
    t: float  # seconds since the step started waiting
    at: str  # UTC, ISO 8601
    status: int | None
    holds: bool
    values: dict[str, float] = Field(default_factory=dict)


class WaitUntilOutput(BaseModel):
    satisfied: bool
    checks: int
    consecutive: int
    elapsed_seconds: float
    last_status: int | None
    last_json: Any
    resolved_by_monitor: bool = False
    condition: str = ""
    bounds: list[Bound] = Field(default_factory=list)
    samples: list[Sample] = Field(default_factory=list)


class ConditionNotMet(StepFailed, TimeoutError):
    """The condition did not hold the required number of times in a row before the deadline."""

    def __init__(self, message: str, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.data = data  # the samples, recorded with the failure (tasks.base)


def bounds_of(condition: str) -> list[Bound]:
    found = []
    for name, op, right in _COMPARISON.findall(condition):
        if right.startswith("json."):
            found.append(Bound(field=name, op=op, other_field=right.removeprefix("json.")))
        else:
            found.append(Bound(field=name, op=op, value=float(right)))
    return found


def _numbers(body: Any, names: set[str]) -> dict[str, float]:
    if not isinstance(body, dict):
        return {}
    return {name: float(body[name]) for name in sorted(names)
            if isinstance(body.get(name), (int, float)) and not isinstance(body.get(name), bool)}


class _Samples:
    def __init__(self, fields: set[str]):
        self.fields = fields
        self.kept: list[Sample] = []
        self.stride = 1
        self.seen = 0

    def add(self, t: float, status: int | None, holds: bool, body: Any) -> None:
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        self.kept.append(Sample(t=round(t, 3), at=utcnow().isoformat(timespec="milliseconds"), status=status,
                                holds=holds, values=_numbers(body, self.fields)))
        if len(self.kept) >= MAX_SAMPLES:
            self.kept = self.kept[::2]
            self.stride *= 2


@action(
    "wait_until",
    WaitUntilInput,
    describe=lambda inp: f"poll {inp.url} every {inp.interval:g}s until `{inp.condition}` holds {inp.consecutive}× (deadline {inp.deadline:g}s)",
    side_effect=False,
    expression_fields={"condition": CONDITION_NAMES},
)
def wait_until(inp: WaitUntilInput, attempt: Attempt) -> WaitUntilOutput:
    started = time.monotonic()
    deadline = min(started + inp.deadline, attempt.deadline)
    checks = streak = 0
    status: int | None = None
    body: Any = None
    probe = HttpInput(url=inp.url, method=inp.method, request_timeout=max(inp.interval, 1.0))
    bounds = bounds_of(inp.condition)
    samples = _Samples({b.field for b in bounds} | {b.other_field for b in bounds if b.other_field}
                       | {"queue_length"})

    def observed() -> dict[str, Any]:
        return {"condition": inp.condition, "bounds": [b.model_dump() for b in bounds],
                "samples": [s.model_dump() for s in samples.kept]}

    while True:
        checks += 1
        try:
            response = request(probe, attempt)
            status, body = response.status_code, parse_json(response)
            holds = bool(evaluate(inp.condition, {"status": status, "json": body}))
        except RequestRefused:
            raise  # nothing was sent, and waiting cannot make the host an allowed one
        except (OSError, TemplateError, TypeError, KeyError) as exc:
            # An unreachable service or a body without the field simply "does not hold yet".
            status, body, holds = None, {"error": f"{type(exc).__name__}: {exc}"}, False
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, ArithmeticError, LookupError) as exc:
            # httpx's own errors (not OSErrors), a condition that fails on this body (`json.x / 0`, `json[9]`).
            status, body, holds = None, {"error": f"{type(exc).__name__}: {exc}"}, False
        streak = streak + 1 if holds else 0
        samples.add(time.monotonic() - started, status, holds, body)
        monitor_says_resolved = inp.finish_on_monitor_resolve and _monitor_resolved(attempt.context.incident_id)
        if streak >= inp.consecutive or monitor_says_resolved:
            return WaitUntilOutput(satisfied=True, checks=checks, consecutive=streak,
                                   elapsed_seconds=round(time.monotonic() - started, 3),
                                   last_status=status, last_json=body,
                                   resolved_by_monitor=monitor_says_resolved and streak < inp.consecutive,
                                   condition=inp.condition, bounds=bounds, samples=samples.kept)
        if time.monotonic() + inp.interval > deadline:
            raise ConditionNotMet(
                f"`{inp.condition}` held {streak}/{inp.consecutive} times in a row after {checks} checks "
                f"in {time.monotonic() - started:.1f}s; last status {status}", observed()
            )
        attempt.sleep(inp.interval)


def _monitor_resolved(incident_id: str) -> bool:
    """The monitor's latest word on this incident's alert is "resolved" (a later firing cancels it)."""
    from records.alert_queries import monitor_reported

    resolved = monitor_reported(incident_id, "resolved")
    firing = monitor_reported(incident_id, "firing")
    return resolved is not None and (firing is None or resolved > firing)
