"""The intake FastAPI application.

Every alert request goes through the same checks, in this order, and the first
failure answers:  404 unknown source · 413 too large · 401 not authenticated ·
400 not JSON · 422 (PagerDuty: 400) does not fit the format, naming each field
and why.  Then routing, and one transaction stores everything (records.alert_ingest);
only after it commits is the answer 202. If the store cannot be reached: 503
with Retry-After, so the monitor sends it again.
"""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from firebreak import errors
from intake import payloads
from intake.alert_writer import GroupCommitWriter
from intake.plans import plan_run
from intake.routing import Route, decide, load_routes
from intake.runs import RunDispatcher
from intake.settings import IntakeSettings, WorkerSettings
from intake.sources import (
    AuthFailed,
    BearerAuth,
    HmacAuth,
    Source,
    Verified,
    load_sources,
    source_for_routing_key,
    verify_bearer,
    verify_hmac,
)
from notifications.acknowledgement.http import router as ack_router
from notifications.acknowledgement.service import acknowledge_incident
from records import alert_queries, run_outbox
from records.alert_ingest import AlertResult, IncomingAlert, IngestRequest, RunPlan
from records.signatures import SignatureReplayed

log = logging.getLogger("firebreak.intake")

STORE_DOWN = (OperationalError, InterfaceError, PoolTimeout, OSError)
RETRY_AFTER_SECONDS = "5"


class Refused(errors.Refused):
    """A request the intake refuses at its edge, carrying its HTTP answer (status, error, details, headers)."""

    def __init__(self, status: int, error: str, details: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.details, self.headers = status, error, details or [], headers or {}


#: The one place Firebreak's errors become HTTP answers: status, the error shown (None: the
#: exception's own message) and headers; an exception takes the first of its classes listed.
#: `Refused` carries its own answer. Any other error is not meant for the client: it stays a 500.
HTTP_ANSWERS: dict[type[errors.FirebreakError], tuple[int, str | None, dict[str, str]]] = {
    AuthFailed: (401, None, {"WWW-Authenticate": "Bearer"}),
    SignatureReplayed: (401, "this signature was already used (replayed request)", {}),
    errors.NotFound: (404, None, {}),
    errors.StoreUnavailable: (503, None, {"Retry-After": RETRY_AFTER_SECONDS}),
}


def as_refused(exc: Exception) -> Refused:
    """The HTTP answer for `exc` (see HTTP_ANSWERS)."""
    if isinstance(exc, Refused):
        return exc
    for kind in type(exc).__mro__:
        if kind in HTTP_ANSWERS:
            status, error, headers = HTTP_ANSWERS[kind]
            return Refused(status, error or str(exc), headers=dict(headers))
    raise exc  # no answer for it: the handler is registered only for the classes above


@dataclass
class Intake:
    settings: IntakeSettings
    sources: dict[str, Source]
    routes: Route
    dispatcher: RunDispatcher
    writer: GroupCommitWriter


# --- request pipeline --------------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Refused(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, f"body is not JSON: {exc}") from None
    except RecursionError:
        raise Refused(400, "body is not acceptable JSON: nested too deeply") from None


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    details = []
    for error in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
        details.append({"field": where or "(body)", "reason": error["msg"]})
    return details


def validate(model: type[BaseModel], document: Any, status: int = 422) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        details = field_errors(exc)
        raise Refused(status, "body does not fit the format: " + "; ".join(f"{d['field']}: {d['reason']}"
                                                                          for d in details), details) from None


def authenticate(name: str, source: Source, headers: Any, body: bytes) -> Verified:
    lowered = {k.lower(): v for k, v in headers.items()}
    # AuthFailed answers 401 with WWW-Authenticate (HTTP_ANSWERS).
    if isinstance(source.auth, BearerAuth):
        return verify_bearer(name, source.auth, lowered.get("authorization"))
    if isinstance(source.auth, HmacAuth):
        return verify_hmac(name, source.auth, lowered, body)
    raise Refused(401, f"source {name!r} is authenticated by routing key at POST /v2/enqueue")


def route(intake: Intake, alert: IncomingAlert, generic: payloads.GenericAlert | None = None) -> RunPlan:
    if generic is not None and generic.runbook:
        decision = decide(Route("explicit", [], None, None, {}), {})
        return plan_run(decision, explicit_runbook=generic.runbook, explicit_level=generic.level,
                        explicit_parameters=generic.parameters)
    try:
        decision = decide(intake.routes, alert.labels, alert.annotations)
    except Exception as exc:  # a parameter template that fails on this alert's labels
        return RunPlan(route="(error)", runbook_id=None, error=f"route parameters: {type(exc).__name__}: {exc}")
    plan = plan_run(decision, explicit_level=generic.level if generic else None,
                    explicit_parameters=generic.parameters if generic else None)
    return plan


async def store(intake: Intake, items: list[tuple[IncomingAlert, RunPlan]], verified: Verified) -> list[AlertResult]:
    try:  # SignatureReplayed answers 401 (HTTP_ANSWERS)
        results = await intake.writer.ingest(IngestRequest(items, verified.signature, verified.source))
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
    except Exception as exc:
        log.warning("monitor acknowledgement of %s not applied: %s: %s", incident_id, type(exc).__name__, exc)


def accepted(results: list[AlertResult]) -> dict[str, Any]:
    return {"status": "accepted", "alerts": [{"id": r.alert_id, "fingerprint": r.fingerprint,
                                              "disposition": r.disposition, "incident_id": r.incident_id}
                                             for r in results]}


# --- the application ---------------------------------------------------------------------------------


def load_intake(settings: IntakeSettings | None = None, *, prefect_api_url: str | None = None) -> Intake:
    settings = settings or IntakeSettings()
    workers = WorkerSettings()
    # The embedded executor: the same class as `firebreak worker`, with the intake's slots and poll.
    dispatcher = RunDispatcher(settings.executor, max_concurrent_runs=settings.max_concurrent_runs,
                               poll_seconds=settings.outbox_poll_seconds, prefect_api_url=prefect_api_url,
                               heartbeat_seconds=workers.heartbeat_seconds, stale_after=workers.stale_seconds)
    return Intake(settings, load_sources(settings.sources_file), load_routes(settings.routes_file), dispatcher,
                  GroupCommitWriter())


def create_app(intake: Intake | None = None) -> FastAPI:
    intake = intake or load_intake()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        intake.writer.start()
        intake.dispatcher.start()
        try:
            yield
        finally:
            intake.writer.stop()
            intake.dispatcher.stop()

    app = FastAPI(title="Firebreak intake", version="1",
                  description="Monitors post alerts here; each opens or joins an incident and starts its runbook. "
                              "Formats: Alertmanager (webhook v4), Grafana alerting webhook, PagerDuty Events v2 "
                              "(`POST /v2/enqueue`) and Firebreak's generic JSON.",
                  lifespan=lifespan)
    app.state.intake = intake

    async def _refused(_request: Request, error: Exception) -> JSONResponse:
        exc = as_refused(error)
        if _request.url.path == "/v2/enqueue":  # PagerDuty's error shape
            invalid = exc.status in (400, 422)
            body: dict[str, Any] = {"status": "invalid event" if invalid else "error",
                                    # PagerDuty's documented message; `errors` names each field and why.
                                    "message": "Event object is invalid" if invalid and exc.details else exc.error, "errors": [f"{d['field']}: {d['reason']}" for d in exc.details]
                                    or [exc.error]}
        else:
            body = {"error": exc.error, "details": exc.details}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    answered: list[type[Exception]] = [Refused, *HTTP_ANSWERS]
    for kind in answered:
        app.add_exception_handler(kind, _refused)

    @app.get("/healthz", tags=["service"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], summary="The alert store answers; Prefect's reachability is reported")
    def readyz() -> JSONResponse:
        from records.db import session_scope

        checks: dict[str, str] = {}
        try:
            with session_scope() as session:
                session.execute(text("SELECT 1"))
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"unavailable: {type(exc).__name__}"
        checks["prefect"] = _prefect_check(intake)
        try:
            checks["outbox_waiting"] = str(run_outbox.pending_run_requests())
        except Exception:
            checks["outbox_waiting"] = "unknown"
        # Ready means alerts can be accepted; Prefect being down only delays runs (the outbox holds them).
        return JSONResponse({"ready": checks["store"] == "ok", **checks},
                            status_code=200 if checks["store"] == "ok" else 503)

    @app.post("/v1/alerts/{source}", status_code=202, tags=["alerts"],
              summary="Alertmanager, Grafana or generic alerts from a configured source",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "oneOf": [{"$ref": "#/components/schemas/AlertmanagerWebhook"},
                            {"$ref": "#/components/schemas/GrafanaWebhook"},
                            {"$ref": "#/components/schemas/GenericAlert"}]}}}}})
    async def post_alerts(source: str, request: Request) -> JSONResponse:
        spec = intake.sources.get(source)
        if spec is None:
            raise Refused(404, f"no source {source!r}; configured: {', '.join(sorted(intake.sources))}")
        if spec.format == "pagerduty":
            raise Refused(404, f"source {source!r} speaks PagerDuty Events v2: post to /v2/enqueue")
        body = await read_body(request, intake.settings.max_body_bytes)
        verified = authenticate(source, spec, request.headers, body)
        document = validate(payloads.MODELS[spec.format], parse_json(body))
        if spec.format == "alertmanager":
            items = [(a, route(intake, a)) for a in payloads.from_alertmanager(source, document)]
        elif spec.format == "grafana":
            items = [(a, route(intake, a)) for a in payloads.from_grafana(source, document)]
        else:
            alert = payloads.from_generic(source, document)
            items = [(alert, route(intake, alert, document))]
        return JSONResponse(accepted(await store(intake, items, verified)), status_code=202)

    @app.post("/v2/enqueue", status_code=202, tags=["alerts"],
              summary="PagerDuty Events API v2: trigger, acknowledge or resolve",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "$ref": "#/components/schemas/PagerDutyEvent"}}}}})
    async def enqueue(request: Request) -> JSONResponse:
        body = await read_body(request, intake.settings.max_body_bytes)
        document = parse_json(body)
        routing_key = document.get("routing_key") if isinstance(document, dict) else None
        if not isinstance(routing_key, str) or not routing_key:
            raise Refused(400, "routing_key is required", [{"field": "routing_key", "reason": "Field required"}])
        source = source_for_routing_key(intake.sources, routing_key)
        if source is None:
            raise Refused(401, "routing_key is not valid for any source")
        event = validate(payloads.PagerDutyEvent, document, status=400)
        dedup_key, alert = payloads.from_pagerduty(source, event)
        await store(intake, [(alert, route(intake, alert))], Verified(source))
        return JSONResponse({"status": "success", "message": "Event processed", "dedup_key": dedup_key},
                            status_code=202)

    @app.get("/v1/incidents", tags=["incidents"], summary="Recent incidents, newest first")
    def list_incidents(limit: int = Query(50, ge=1, le=500)) -> JSONResponse:
        from records.incidents import list_incidents as recent

        try:
            rows = recent(limit)
            counts = alert_queries.alert_counts([i.id for i in rows])
        except STORE_DOWN:
            raise errors.StoreUnavailable("the incident store is unavailable") from None
        return JSONResponse({"incidents": [_incident(i, counts.get(i.id, 0)) for i in rows]})

    @app.get("/v1/incidents/{incident_id}", tags=["incidents"], summary="One incident: status, level, milestones, run")
    def show_incident(incident_id: str) -> JSONResponse:
        from records.incidents import get_incident

        try:  # IncidentNotFound ("no incident 'INC-…'") answers 404 (HTTP_ANSWERS)
            incident = get_incident(incident_id)
            counts = alert_queries.alert_counts([incident_id])
            recent = alert_queries.alerts_of(incident_id, limit=20)
            request = run_outbox.run_request(incident_id)
        except STORE_DOWN:
            raise errors.StoreUnavailable("the incident store is unavailable") from None
        body = _incident(incident, counts.get(incident_id, 0))
        body["recent_alerts"] = [{"id": a.id, "received_at": a.received_at.isoformat(), "source": a.source,
                                  "status": a.status, "disposition": a.disposition, "summary": a.summary}
                                 for a in recent]
        if request is not None:
            body["run_request"] = {"status": request.status, "attempts": request.attempts,
                                   "last_error": request.last_error, "flow_run_id": request.flow_run_id}
        return JSONResponse(body)

    _include_ack_links(app)
    _document_payload_schemas(app)
    return app


def _prefect_check(intake: Intake) -> str:
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = intake.dispatcher.prefect_api_url or PREFECT_API_URL.value()
    if not url:
        return "not configured"
    try:
        return "ok" if httpx.get(f"{url.rstrip('/')}/health", timeout=2).status_code == 200 else "unhealthy"
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__}); runs wait in the outbox"


def _incident(incident: Any, alert_count: int) -> dict[str, Any]:
    from tasks.notify import run_link

    def stamp(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": incident.id, "title": incident.title, "runbook": incident.runbook_id, "level": incident.level,
        "status": incident.status, "run_state": incident.run_state, "source": incident.source,
        "drill": incident.drill, "alerts": alert_count,
        "milestones": {"triggered": stamp(incident.triggered_at), "acknowledged": stamp(incident.acknowledged_at),
                       "mitigated": stamp(incident.mitigated_at), "resolved": stamp(incident.resolved_at),
                       "closed": stamp(incident.closed_at)},
        "flow_run_id": incident.flow_run_id, "run_url": run_link(incident.flow_run_id),
        # Open with no run driving it (records.models.Incident.attention_reason): a person must take over.
        "needs_attention": incident.needs_attention, "attention_reason": incident.attention_reason,
    }


def _include_ack_links(app: FastAPI) -> None:
    """The signed acknowledgement links (notifications issue) are served by this same service."""
    app.include_router(ack_router)


def _document_payload_schemas(app: FastAPI) -> None:
    """Bodies are read raw (for size limits and signatures), so FastAPI does not see their
    models; add them to the OpenAPI components so /docs shows each format."""
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base_openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in payloads.MODELS.values():
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
