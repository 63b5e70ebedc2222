"""Routing and request validation: turns (method, path, raw body) into an Outcome.

Kept free of socket code so the HTTP handler stays a thin shell. Validation is strict
(unknown fields are refused too) because this is a test double: a runbook that sends a
misspelt field should fail loudly here, not silently act on a default.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simulator.errors import ApiError
from simulator.scenarios import SCENARIOS
from simulator.state import NODES, ROUTING_MODES, ContactCentre, Outcome

Body = Any
Params = dict[str, str]
Handler = Callable[[ContactCentre, Body, Params], Outcome]

# Methods that may change state: logged in /state "requests" and idempotency-keyed.
# (PUT/PATCH/DELETE never match a route, but a 405 for them is still a recorded attempt.)
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# ------------------------------------------------------------------ validation
def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _object(body: Body, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        wanted = ", ".join(f"'{f}'" for f in sorted(required)) or "no fields"
        raise ApiError(400, f"request body must be a JSON object with {wanted}; got {_type_name(body)}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field '{unknown[0]}'; allowed fields: {', '.join(sorted(allowed))}")
    for name in sorted(required):
        if name not in body:
            raise ApiError(400, f"field '{name}' is required")
    return body


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body[name]
    if not isinstance(value, bool):
        raise ApiError(400, f"field '{name}' must be a boolean (true/false), got {_type_name(value)}")
    return value


def _int(body: dict[str, Any], name: str, minimum: int) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"field '{name}' must be an integer, got {_type_name(value)}")
    if value < minimum:
        raise ApiError(400, f"field '{name}' must be >= {minimum}, got {value}")
    return value


def _choice(body: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = body[name]
    if not isinstance(value, str) or value not in choices:
        raise ApiError(400, f"field '{name}' must be one of {', '.join(choices)}; got {json.dumps(value)}")
    return value


def _text(body: dict[str, Any], name: str, nullable: bool = False) -> str | None:
    value = body.get(name)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        kind = "a non-empty string or null" if nullable else "a non-empty string"
        raise ApiError(400, f"field '{name}' must be {kind}, got {_type_name(value)}")
    return value


# -------------------------------------------------------------------- handlers
def _ok(payload: Any, status: int = 200) -> Outcome:
    return Outcome(status, payload)


def get_health(state: ContactCentre, body: Body, params: Params) -> Outcome:
    status, payload = state.health()
    return Outcome(status, payload)


def isolate(state: ContactCentre, body: Body, params: Params) -> Outcome:
    name = params["name"]
    if name not in NODES:
        raise ApiError(404, f"unknown node '{name}'; nodes are {', '.join(NODES)}")
    if body is not None:  # no body needed; tolerate {} from generic clients
        _object(body, allowed=set(), required=set())
    return _ok(state.isolate(name))


def failover(state: ContactCentre, body: Body, params: Params) -> Outcome:
    b = _object(body, allowed={"to"}, required={"to"})
    return _ok(state.failover(_choice(b, "to", NODES)))


def get_metrics(state: ContactCentre, body: Body, params: Params) -> Outcome:
    return _ok(state.metrics())


def routing(state: ContactCentre, body: Body, params: Params) -> Outcome:
    b = _object(body, allowed={"mode"}, required={"mode"})
    return _ok(state.set_routing(_choice(b, "mode", ROUTING_MODES)))


def key_customers(state: ContactCentre, body: Body, params: Params) -> Outcome:
    b = _object(body, allowed={"enabled"}, required={"enabled"})
    return _ok(state.set_key_customer_channel(_bool(b, "enabled")))


NOTICE_FIELDS = ("channel", "audience", "text", "expected_recovery", "alternative_channel")


def post_notice(state: ContactCentre, body: Body, params: Params) -> Outcome:
    b = _object(body, allowed=set(NOTICE_FIELDS), required={"channel", "audience", "text"})
    fields = {
        "channel": _text(b, "channel"),
        "audience": _text(b, "audience"),
        "text": _text(b, "text"),
        # Optional: omitted means null (no recovery time promised / no alternative).
        "expected_recovery": _text(b, "expected_recovery", nullable=True),
        "alternative_channel": _text(b, "alternative_channel", nullable=True),
    }
    return _ok(state.add_notice(fields), status=201)


def get_notices(state: ContactCentre, body: Body, params: Params) -> Outcome:
    return _ok(state.notices())


def reserve(state: ContactCentre, body: Body, params: Params) -> Outcome:
    b = _object(body, allowed={"agents"}, required={"agents"})
    return _ok(state.call_in_reserve(_int(b, "agents", minimum=1)))


def overtime(state: ContactCentre, body: Body, params: Params) -> Outcome:
    b = _object(body, allowed={"enabled", "agents"}, required={"enabled", "agents"})
    return _ok(state.set_overtime(_bool(b, "enabled"), _int(b, "agents", minimum=0)))


def volunteers(state: ContactCentre, body: Body, params: Params) -> Outcome:
    b = _object(body, allowed={"agents", "queues"}, required={"agents", "queues"})
    agents = _int(b, "agents", minimum=0)
    queues = b["queues"]
    if not isinstance(queues, list) or not all(isinstance(q, str) and q.strip() for q in queues):
        raise ApiError(400, "field 'queues' must be an array of non-empty strings")
    if agents > 0 and not queues:
        raise ApiError(400, "field 'queues' must name at least one queue when 'agents' > 0")
    return _ok(state.set_volunteers(agents, queues))


def human_share(state: ContactCentre, body: Body, params: Params) -> Outcome:
    b = _object(body, allowed={"min_share"}, required={"min_share"})
    value = b["min_share"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"field 'min_share' must be a number, got {_type_name(value)}")
    if not 0.0 <= value <= 1.0:
        raise ApiError(400, f"field 'min_share' must be between 0 and 1, got {value}")
    return _ok(state.set_human_chat_share(float(value)))


def faults(state: ContactCentre, body: Body, params: Params) -> Outcome:
    b = _object(body, allowed={"fault"}, required={"fault"})
    return _ok(state.reset(_choice(b, "fault", SCENARIOS)))


def get_state(state: ContactCentre, body: Body, params: Params) -> Outcome:
    return _ok(state.snapshot())


def post_inbox(state: ContactCentre, body: Body, params: Params) -> Outcome:
    if body is None:
        raise ApiError(400, "request body is empty; the inbox stores a JSON document")
    return _ok(state.deliver(params["name"], body))


def get_inbox(state: ContactCentre, body: Body, params: Params) -> Outcome:
    return _ok(state.inbox(params.get("name")))


# ---------------------------------------------------------------------- table
@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def _r(method: str, pattern: str, handler: Handler) -> Route:
    return Route(method, re.compile(pattern), handler)


_NAME = r"(?P<name>[A-Za-z0-9_.~-]+)"
ROUTES: tuple[Route, ...] = (
    _r("GET", r"/health", get_health),
    _r("POST", rf"/nodes/{_NAME}/isolate", isolate),
    _r("POST", r"/failover", failover),
    _r("GET", r"/metrics", get_metrics),
    _r("POST", r"/routing", routing),
    _r("POST", r"/channels/key-customers", key_customers),
    _r("POST", r"/notices", post_notice),
    _r("GET", r"/notices", get_notices),
    _r("POST", r"/staff/reserve", reserve),
    _r("POST", r"/staff/overtime", overtime),
    _r("POST", r"/staff/volunteers", volunteers),
    _r("POST", r"/chat/human-share", human_share),
    _r("POST", r"/faults", faults),
    _r("GET", r"/state", get_state),
    _r("GET", r"/inbox", get_inbox),
    _r("POST", rf"/inbox/{_NAME}", post_inbox),
    _r("GET", rf"/inbox/{_NAME}", get_inbox),
)


# What the inbox listener of a simulator whose service is unreachable serves (scenarios.LISTENER_FAULTS):
# the notification inbox and the test double's own controls, none of the service's endpoints.
INBOX_ROUTES: tuple[Route, ...] = tuple(r for r in ROUTES if r.handler in (post_inbox, get_inbox, get_state, faults))


def resolve(method: str, path: str, routes: tuple[Route, ...] = ROUTES) -> tuple[Handler, Params]:
    """Find the handler, or raise 404 (no such path) / 405 (path exists, not this method)."""
    if routes is not ROUTES and any(r.pattern.fullmatch(path) for r in ROUTES) and \
            not any(r.pattern.fullmatch(path) for r in routes):
        raise ApiError(404, f"{path} is a service endpoint; this address is only the simulator's inbox, and the "
                            "service's own address refuses connections (fault: unreachable)")
    allowed: set[str] = set()
    for route in routes:
        match = route.pattern.fullmatch(path)
        if match:
            if route.method == method:
                return route.handler, match.groupdict()
            allowed.add(route.method)
    if allowed:
        allow = ", ".join(sorted(allowed))
        raise ApiError(405, f"method {method} is not allowed on {path}; use {allow}", {"Allow": allow})
    raise ApiError(404, f"no such path: {path}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(raw: bytes) -> Body:
    """JSON body, or None if empty. NaN/Infinity are refused (not JSON, and they would
    poison the numbers)."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def _body_for_log(raw: bytes) -> Any:
    try:
        return parse_body(raw)
    except ApiError:
        return raw.decode("utf-8", errors="replace")  # keep what was sent, for the audit trail


def dispatch(state: ContactCentre, method: str, path: str, raw: bytes, idempotency_key: str | None,
             routes: tuple[Route, ...] = ROUTES) -> Outcome:
    """Handle one request. Mutating methods go through state.execute (log + idempotency)."""

    def action() -> Outcome:
        handler, params = resolve(method, path, routes)
        return handler(state, parse_body(raw) if method in MUTATING_METHODS else None, params)

    if method in MUTATING_METHODS:
        return state.execute(method, path, _body_for_log(raw), idempotency_key, action)
    try:
        return action()
    except ApiError as exc:
        return Outcome(exc.status, {"error": exc.message}, dict(exc.headers))
