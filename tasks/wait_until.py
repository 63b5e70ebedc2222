"""`wait_until`: poll a check until a condition holds N times in a row, or a deadline passes."""
from __future__ import annotations

import time
from typing import Any, Literal

from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field

from firebreak.errors import StepFailed
from runbooks.templating import evaluate
from tasks.base import Attempt, action
from tasks.http import HttpInput, parse_json, request

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


class WaitUntilOutput(BaseModel):
    satisfied: bool
    checks: int
    consecutive: int
    elapsed_seconds: float
    last_status: int | None
    last_json: Any
    resolved_by_monitor: bool = False


class ConditionNotMet(StepFailed, TimeoutError):
    """The condition did not hold the required number of times in a row before the deadline."""


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
    while True:
        checks += 1
        try:
            response = request(probe, attempt)
            status, body = response.status_code, parse_json(response)
            holds = bool(evaluate(inp.condition, {"status": status, "json": body}))
        except (OSError, TemplateError, TypeError, KeyError) as exc:
            # An unreachable service or a body without the field simply "does not hold yet".
            status, body, holds = None, {"error": f"{type(exc).__name__}: {exc}"}, False
        except Exception as exc:  # httpx transport errors
            status, body, holds = None, {"error": f"{type(exc).__name__}: {exc}"}, False
        streak = streak + 1 if holds else 0
        monitor_says_resolved = inp.finish_on_monitor_resolve and _monitor_resolved(attempt.context.incident_id)
        if streak >= inp.consecutive or monitor_says_resolved:
            return WaitUntilOutput(satisfied=True, checks=checks, consecutive=streak,
                                   elapsed_seconds=round(time.monotonic() - started, 3),
                                   last_status=status, last_json=body,
                                   resolved_by_monitor=monitor_says_resolved and streak < inp.consecutive)
        if time.monotonic() + inp.interval > deadline:
            raise ConditionNotMet(
                f"`{inp.condition}` held {streak}/{inp.consecutive} times in a row after {checks} checks "
                f"in {time.monotonic() - started:.1f}s; last status {status}"
            )
        attempt.sleep(inp.interval)


def _monitor_resolved(incident_id: str) -> bool:
    """The monitor's latest word on this incident's alert is "resolved" (a later firing cancels it)."""
    from records.alert_queries import monitor_reported

    resolved = monitor_reported(incident_id, "resolved")
    firing = monitor_reported(incident_id, "firing")
    return resolved is not None and (firing is None or resolved > firing)
