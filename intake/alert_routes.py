"""The alert routes: `POST /v1/alerts/{source}` (Alertmanager, Grafana, generic) and
`POST /v2/enqueue` (PagerDuty Events v2), answered as plain ASGI.

Every alert request goes through the same checks, in this order, and the first failure
answers:  404 unknown source · 415 not `Content-Type: application/json` · 413 too large ·
401 not authenticated · 429 over the source's rate (Retry-After) · 400 not JSON · 422
(PagerDuty: 400) not strict JSON (NUL, lone surrogates, NaN, huge integers, deep nesting,
duplicate keys: intake.strict_json), does not fit the format, or over the source's label and
annotation limits, naming each field and why · 413 an alert over the source's total size ·
422 parameters the runbook does not let an alert set (intake.plans). Then one transaction
stores everything (records.alert_ingest, through the group-commit writer); only after it
commits is the answer 202. A refused request stores nothing. If the store cannot be reached:
503 with Retry-After, so the monitor sends it again.

Why not FastAPI routes: these are the routes a storm hits, and FastAPI's per-request machinery
(middleware stack, routing, dependency solving, Request and Response objects) cost as much CPU
as the checks and the store together. The intake app (intake.app.IntakeApp) hands these paths
here before FastAPI sees them; everything else (incidents API, docs, reports, ack links) stays
FastAPI. The answers and their shapes are the same as the FastAPI routes' (intake.edge).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from firebreak import errors
from intake import payloads
from intake.edge import (
    ANSWERED,
    STORE_DOWN,
    Receive,
    Refused,
    as_refused,
    check_limits,
    check_sizes,
    json_bytes,
    listed,
    parse_json,
    read_body,
    refusal_body,
    require_json,
    throttle,
    validate,
)
from intake.plans import ParametersRefused, plan_run
from intake.routing import Route, decide
from intake.service import Intake
from intake.sources import BearerAuth, HmacAuth, Source, Verified, source_for_routing_key, verify_bearer, verify_hmac
from notifications.acknowledgement.service import acknowledge_incident
from records.alert_ingest import AlertResult, IncomingAlert, IngestRequest, RunPlan
from runbooks.templating import EVALUATION_ERRORS

log = logging.getLogger("firebreak.intake")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

ALERTS_PATH = re.compile(r"^/v1/alerts/([^/]+)$")
ENQUEUE_PATH = "/v2/enqueue"


def is_alert_route(path: str) -> bool:
    return path == ENQUEUE_PATH or ALERTS_PATH.match(path) is not None


async def serve(intake: Intake, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """Answer one request to an alert route (`is_alert_route(path)`), whatever happens."""
    path = scope["path"]
    pagerduty = path == ENQUEUE_PATH
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:  # the first of a repeated header counts, as in Starlette's .get
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    extra: dict[str, str] = {}
    try:
        if scope["method"] != "POST":
            raise Refused(405, f"{scope['method']} is not allowed here; alerts are POSTed", headers={"Allow": "POST"})
        if pagerduty:
            status, answer = 202, await enqueue(intake, headers, receive)
        else:
            match = ALERTS_PATH.match(path)
            assert match is not None
            status, answer = 202, await post_alerts(intake, match.group(1), headers, receive)
    except ANSWERED as exc:
        refused = as_refused(exc)
        status, answer, extra = refused.status, refusal_body(refused, pagerduty=pagerduty), refused.headers
    except Exception:  # noqa: BLE001  a bug, not the client's fault: logged with its traceback, answered 500
        log.exception("the alert request to %s failed", path)
        status, answer = 500, {"error": "internal error; the request may not have been stored, send it again",
                               "details": []}
    body = json_bytes(answer)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())]})
    await send({"type": "http.response.body", "body": body})


async def post_alerts(intake: Intake, source: str, headers: dict[str, str], receive: Receive) -> dict[str, Any]:
    spec = intake.sources.get(source)
    if spec is None:
        raise Refused(404, f"no source {source!r}; configured: {', '.join(sorted(intake.sources))}")
    if spec.format == "pagerduty":
        raise Refused(404, f"source {source!r} speaks PagerDuty Events v2: post to /v2/enqueue")
    require_json(headers.get("content-type"))
    body = await read_body(receive, headers.get("content-length"), intake.settings.max_body_bytes)
    verified = authenticate(source, spec, headers, body)
    throttle(intake.limiter, f"source:{source}")
    document = validate(payloads.MODELS[spec.format], parse_json(body))
    check_limits(spec, document)
    if spec.format in ("alertmanager", "grafana"):
        convert = payloads.from_alertmanager if spec.format == "alertmanager" else payloads.from_grafana
        alerts = convert(source, document)
        where = [f"alerts[{index}]" for index in range(len(alerts))]
        check_sizes(spec, alerts, where)
        items = [(a, route(intake, a, where=w)) for a, w in zip(alerts, where, strict=True)]
    else:
        alert = payloads.from_generic(source, document)
        check_sizes(spec, [alert], ["(body)"])
        items = [(alert, route(intake, alert, document))]
    return accepted(await store(intake, items, verified))


async def enqueue(intake: Intake, headers: dict[str, str], receive: Receive) -> dict[str, Any]:
    require_json(headers.get("content-type"))
    body = await read_body(receive, headers.get("content-length"), intake.settings.max_body_bytes)
    document = parse_json(body, status=400)
    routing_key = document.get("routing_key") if isinstance(document, dict) else None
    if not isinstance(routing_key, str) or not routing_key:
        raise Refused(400, "routing_key is required", [{"field": "routing_key", "reason": "Field required"}])
    source = source_for_routing_key(intake.sources, routing_key)
    if source is None:
        raise Refused(401, "routing_key is not valid for any source")
    throttle(intake.limiter, f"source:{source}")
    spec = intake.sources[source]
    event = validate(payloads.PagerDutyEvent, document, status=400)
    check_limits(spec, event, status=400)
    dedup_key, alert = payloads.from_pagerduty(source, event)
    check_sizes(spec, [alert], ["(body)"])
    await store(intake, [(alert, route(intake, alert, status=400))], Verified(source))
    return {"status": "success", "message": "Event processed", "dedup_key": dedup_key}


def authenticate(name: str, source: Source, headers: dict[str, str], body: bytes) -> Verified:
    """`headers` lower-cased. AuthFailed answers 401 with WWW-Authenticate (intake.edge.HTTP_ANSWERS)."""
    if isinstance(source.auth, BearerAuth):
        return verify_bearer(name, source.auth, headers.get("authorization"))
    if isinstance(source.auth, HmacAuth):
        return verify_hmac(name, source.auth, headers, body)
    raise Refused(401, f"source {name!r} is authenticated by routing key at POST /v2/enqueue")


def route(intake: Intake, alert: IncomingAlert, generic: payloads.GenericAlert | None = None, *,
          where: str = "(body)", status: int = 422) -> RunPlan:
    """The alert's run plan; parameters the runbook refuses from an alert answer `status` (intake.plans)."""
    try:
        if generic is not None and generic.runbook:
            decision = decide(Route("explicit", [], None, None, {}), {})
            return plan_run(decision, explicit_runbook=generic.runbook, explicit_level=generic.level,
                            explicit_parameters=generic.parameters)
        try:
            decision = decide(intake.routes, alert.labels, alert.annotations)
        except EVALUATION_ERRORS as exc:  # a parameter template that fails on this alert's labels
            return RunPlan(route="(error)", runbook_id=None, error=f"route parameters: {type(exc).__name__}: {exc}")
        return plan_run(decision, explicit_level=generic.level if generic else None,
                        explicit_parameters=generic.parameters if generic else None, where=where)
    except ParametersRefused as exc:
        raise Refused(status, "parameters refused: " + listed(exc.details), exc.details) from None


async def store(intake: Intake, items: list[tuple[IncomingAlert, RunPlan]], verified: Verified) -> list[AlertResult]:
    try:  # SignatureReplayed answers 401 (intake.edge.HTTP_ANSWERS)
        results = await intake.writer.ingest(IngestRequest(items, verified.signature, verified.source,
                                                           verified.sent_at, verified.expires_at))
    except STORE_DOWN as exc:
        log.error("alert store unavailable: %s", type(exc).__name__)
        raise errors.StoreUnavailable("the alert store is unavailable; nothing was stored, send again later") from None
    if any(r.disposition == "opened" for r in results):
        intake.dispatcher.kick()
    for result in results:
        if result.disposition == "acknowledged" and result.incident_id:
            await run_in_threadpool(_acknowledge, result.incident_id, verified.source)
    return results


def _acknowledge(incident_id: str, source: str) -> None:
    """The monitor's acknowledgement stops escalation, like a person's (notifications issue).
    The alert is already stored; if this fails, the timeline still shows the monitor's report."""
    try:
        acknowledge_incident(incident_id, by=f"monitor:{source}", via="monitor")
    except Exception as exc:  # noqa: BLE001  best-effort: the alert is stored and answered whatever stops the ack
        log.warning("monitor acknowledgement of %s not applied: %s: %s", incident_id, type(exc).__name__, exc)


def accepted(results: list[AlertResult]) -> dict[str, Any]:
    return {"status": "accepted", "alerts": [{"id": r.alert_id, "fingerprint": r.fingerprint,
                                              "disposition": r.disposition, "incident_id": r.incident_id}
                                             for r in results]}


def _json_body(*schemas: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in schemas]
    return {"required": True, "content": {"application/json": {"schema": refs[0] if len(refs) == 1
                                                                          else {"oneOf": refs}}}}


_REFUSAL = {"content": {"application/json": {"schema": {"type": "object", "properties": {
    "error": {"type": "string"}, "details": {"type": "array", "items": {"type": "object", "properties": {
        "field": {"type": "string"}, "reason": {"type": "string"}}}}}}}}}

#: The alert routes in the OpenAPI document (/docs): FastAPI does not see them, so intake.app adds these.
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/alerts/{source}": {"post": {
        "tags": ["alerts"], "operationId": "post_alerts",
        "summary": "Alertmanager, Grafana or generic alerts from a configured source",
        "parameters": [{"name": "source", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "the source's name in the sources file"}],
        "requestBody": _json_body("AlertmanagerWebhook", "GrafanaWebhook", "GenericAlert"),
        "responses": {
            "202": {"description": "Stored (committed): each alert's id, fingerprint, disposition and incident"},
            **{code: {"description": why, **_REFUSAL} for code, why in (
                ("400", "not JSON"), ("401", "not authenticated"), ("404", "no such source"),
                ("413", "too large"), ("415", "not application/json"),
                ("422", "not strict JSON, not the format, or over the source's limits, naming each field"),
                ("429", "over the source's rate (Retry-After)"),
                ("503", "the store is unavailable; nothing stored (Retry-After)"))}}}},
    ENQUEUE_PATH: {"post": {
        "tags": ["alerts"], "operationId": "enqueue",
        "summary": "PagerDuty Events API v2: trigger, acknowledge or resolve",
        "requestBody": _json_body("PagerDutyEvent"),
        "responses": {"202": {"description": "Event processed: `status`, `message` and `dedup_key`"},
                      "400": {"description": "Event object is invalid: `errors` names each field"},
                      "401": {"description": "routing_key is not valid for any source"},
                      "429": {"description": "over the source's rate (Retry-After)"},
                      "503": {"description": "the store is unavailable; nothing stored (Retry-After)"}}}},
}
