"""The intake FastAPI application.

Every alert request goes through the same checks, in this order, and the first
failure answers:  404 unknown source · 415 not `Content-Type: application/json` ·
413 too large · 401 not authenticated · 429 over the source's rate (Retry-After) ·
400 not JSON · 422 (PagerDuty: 400) not strict JSON (NUL, lone surrogates, NaN,
huge integers, deep nesting, duplicate keys: intake.strict_json), does not fit the
format, or over the source's label and annotation limits, naming each field and why ·
413 an alert over the source's total size · 422 parameters the runbook does not let an
alert set (intake.plans). Then one transaction stores everything (records.alert_ingest);
only after it commits is the answer 202. A refused request stores nothing. If the store
cannot be reached: 503 with Retry-After, so the monitor sends it again.

Readers of the incidents API and its docs authenticate with a read token (`readers:` in
the sources file) before anything is looked up, and are rate limited per token; people acting
on incidents (intake.operator_http) with their own operator token (`operators:`).
"""
from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.requests import ClientDisconnect

from firebreak import errors
from intake import payloads, reports_http, strict_json
from intake.alert_writer import GroupCommitWriter
from intake.plans import ParametersRefused, plan_run
from intake.ratelimit import RateLimiter
from intake.routing import Route, decide, load_routes
from intake.runs import RunDispatcher
from intake.settings import IntakeSettings, WorkerSettings
from intake.sources import (
    AuthFailed,
    BearerAuth,
    HmacAuth,
    Operator,
    Reader,
    Source,
    Verified,
    load_access,
    source_for_routing_key,
    verify_bearer,
    verify_hmac,
    verify_reader,
)
from notifications.acknowledgement.http import router as ack_router
from notifications.acknowledgement.service import acknowledge_incident
from records import alert_queries, run_outbox
from records.alert_ingest import AlertResult, IncomingAlert, IngestRequest, RunPlan
from records.signatures import SignatureReplayed
from runbooks.templating import EVALUATION_ERRORS

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
    # An optional feature this machine lacks (reports.pdf: WeasyPrint, Pango or a CJK font): the message says how.
    errors.NotInstalled: (501, None, {}),
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
    #: Who may read the incidents API and /docs (the sources file's `readers:`).
    readers: dict[str, Reader] = field(default_factory=dict)
    #: Who may act on incidents over HTTP, each as one contact (the sources file's `operators:`).
    operators: dict[str, Operator] = field(default_factory=dict)
    limiter: RateLimiter | None = None

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = RateLimiter({**{f"source:{n}": s.rate_limit for n, s in self.sources.items()},
                                        **{f"reader:{n}": r.rate_limit for n, r in self.readers.items()},
                                        **{f"operator:{n}": o.rate_limit for n, o in self.operators.items()}})


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


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON: `application/json`, optionally `; charset=utf-8`
    (what Alertmanager, Grafana and PagerDuty clients send)."""
    declared = request.headers.get("content-type")
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


def parse_json(body: bytes, status: int = 422) -> Any:
    """The body as strict JSON (intake.strict_json): 400 if it is not JSON, `status` naming each refused field."""
    try:
        return strict_json.loads(body)
    except strict_json.NotJson as exc:
        raise Refused(400, str(exc)) from None
    except strict_json.JsonRefused as exc:
        details = [{"field": p.field, "reason": p.reason} for p in exc.problems]
        raise Refused(status, "body is not acceptable JSON: " + _listed(details), details) from None


def _listed(details: list[dict[str, str]]) -> str:
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
        raise Refused(status, "body does not fit the format: " + _listed(details), details) from None


def check_limits(spec: Source, document: BaseModel, status: int = 422) -> None:
    """The source's label and annotation limits (intake.sources.Limits), naming each field over them."""
    details = payloads.limit_problems(document, spec.limits)
    if details:
        raise Refused(status, "over this source's limits: " + _listed(details), details)


def check_sizes(spec: Source, alerts: list[IncomingAlert], where: list[str]) -> None:
    """413 naming each alert that would store more than the source's `max_total_bytes`."""
    details = payloads.size_problems(alerts, where, spec.limits)
    if details:
        raise Refused(413, "over this source's size limit: " + _listed(details), details)


def throttle(intake: Intake, key: str) -> None:
    """429 with Retry-After once the bucket of `key` (a source or a reader) is empty (intake.ratelimit)."""
    assert intake.limiter is not None
    wait = intake.limiter.retry_after(key)
    if wait is not None:
        raise Refused(429, f"too many requests for {key.replace(':', ' ')}; try again in {wait} s",
                      headers={"Retry-After": str(wait)})


def authenticate(name: str, source: Source, headers: Any, body: bytes) -> Verified:
    lowered = {k.lower(): v for k, v in headers.items()}
    # AuthFailed answers 401 with WWW-Authenticate (HTTP_ANSWERS).
    if isinstance(source.auth, BearerAuth):
        return verify_bearer(name, source.auth, lowered.get("authorization"))
    if isinstance(source.auth, HmacAuth):
        return verify_hmac(name, source.auth, lowered, body)
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
        raise Refused(status, "parameters refused: " + _listed(exc.details), exc.details) from None


async def store(intake: Intake, items: list[tuple[IncomingAlert, RunPlan]], verified: Verified) -> list[AlertResult]:
    try:  # SignatureReplayed answers 401 (HTTP_ANSWERS)
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


# --- the application ---------------------------------------------------------------------------------


def load_intake(settings: IntakeSettings | None = None, *, prefect_api_url: str | None = None) -> Intake:
    settings = settings or IntakeSettings()
    workers = WorkerSettings()
    # The embedded executor: the same class as `firebreak worker`, with the intake's slots and poll.
    dispatcher = RunDispatcher(settings.executor, max_concurrent_runs=settings.max_concurrent_runs,
                               poll_seconds=settings.outbox_poll_seconds, prefect_api_url=prefect_api_url,
                               heartbeat_seconds=workers.heartbeat_seconds, stale_after=workers.stale_seconds)
    access = load_access(settings.sources_file)
    return Intake(settings, access.sources, load_routes(settings.routes_file), dispatcher, GroupCommitWriter(),
                  readers=access.readers, operators=access.operators)


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
                              "(`POST /v2/enqueue`) and Firebreak's generic JSON. The incidents API and these "
                              "docs need a read token (`readers:` in the sources file).",
                  lifespan=lifespan,
                  # Served below behind a read token, like the incidents API.
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.intake = intake

    async def reader(request: Request) -> str:
        """The reader (sources file `readers:`) the request's token belongs to; 401 before anything is looked up."""
        name = verify_reader(intake.readers, request.headers.get("authorization"))
        throttle(intake, f"reader:{name}")
        return name

    async def docs_reader(request: Request) -> str:
        """As `reader`, but a browser is asked for the reader's name and token (HTTP Basic) to open /docs."""
        try:
            return await reader(request)
        except AuthFailed as exc:
            raise Refused(401, exc.reason, headers={"WWW-Authenticate": 'Basic realm="firebreak intake", '
                                                                        'charset="UTF-8"'}) from None

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

    async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
        """A query or path value FastAPI refused (`?limit=abc`, `?lang=fr`): the same shape as every other
        refusal here, naming the field (`query.limit`) and why, rather than FastAPI's own, which echoes
        the value back."""
        assert isinstance(error, RequestValidationError)
        details = [{"field": strict_json.join_path(tuple(e.get("loc", ()))), "reason": str(e.get("msg", ""))}
                   for e in error.errors()[:strict_json.MAX_PROBLEMS]]
        return await _refused(request, Refused(422, "request does not fit: " + _listed(details), details))

    app.add_exception_handler(RequestValidationError, _invalid_request)

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
        except Exception as exc:  # noqa: BLE001  a readiness probe answers 503 with the cause, whatever stops the store
            checks["store"] = f"unavailable: {type(exc).__name__}"
        checks["prefect"] = _prefect_check(intake)
        try:
            checks["outbox_waiting"] = str(run_outbox.pending_run_requests())
        except Exception:  # noqa: BLE001  an informational count in the probe's answer; never fails the probe
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
        require_json(request)
        body = await read_body(request, intake.settings.max_body_bytes)
        verified = authenticate(source, spec, request.headers, body)
        throttle(intake, f"source:{source}")
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
        return JSONResponse(accepted(await store(intake, items, verified)), status_code=202)

    @app.post("/v2/enqueue", status_code=202, tags=["alerts"],
              summary="PagerDuty Events API v2: trigger, acknowledge or resolve",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "$ref": "#/components/schemas/PagerDutyEvent"}}}}})
    async def enqueue(request: Request) -> JSONResponse:
        require_json(request)
        body = await read_body(request, intake.settings.max_body_bytes)
        document = parse_json(body, status=400)
        routing_key = document.get("routing_key") if isinstance(document, dict) else None
        if not isinstance(routing_key, str) or not routing_key:
            raise Refused(400, "routing_key is required", [{"field": "routing_key", "reason": "Field required"}])
        source = source_for_routing_key(intake.sources, routing_key)
        if source is None:
            raise Refused(401, "routing_key is not valid for any source")
        throttle(intake, f"source:{source}")
        spec = intake.sources[source]
        event = validate(payloads.PagerDutyEvent, document, status=400)
        check_limits(spec, event, status=400)
        dedup_key, alert = payloads.from_pagerduty(source, event)
        check_sizes(spec, [alert], ["(body)"])
        await store(intake, [(alert, route(intake, alert, status=400))], Verified(source))
        return JSONResponse({"status": "success", "message": "Event processed", "dedup_key": dedup_key},
                            status_code=202)

    @app.get("/v1/incidents", tags=["incidents"], summary="Recent incidents, newest first (read token)")
    def list_incidents(_reader: str = Depends(reader), limit: int = Query(50, ge=1, le=500)) -> JSONResponse:
        from records.incidents import list_incidents as recent

        try:
            rows = recent(limit)
            counts = alert_queries.alert_counts([i.id for i in rows])
        except STORE_DOWN:
            raise errors.StoreUnavailable("the incident store is unavailable") from None
        return JSONResponse({"incidents": [_incident(i, counts.get(i.id, 0)) for i in rows]})

    @app.get("/v1/incidents/{incident_id}", tags=["incidents"],
             summary="One incident: status, level, milestones, run (read token)")
    def show_incident(incident_id: str, _reader: str = Depends(reader)) -> JSONResponse:
        from records.incidents import IncidentNotFound, get_incident

        try:  # IncidentNotFound ("no incident 'INC-…'") answers 404 (HTTP_ANSWERS)
            if not INCIDENT_ID.match(incident_id):  # not an id at all: as unknown, without asking the store
                raise IncidentNotFound(f"no incident {incident_id[:40]!r}")
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

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document(_reader: str = Depends(docs_reader)) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(_reader: str = Depends(docs_reader)) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    _include_ack_links(app)
    # Post-incident reports for auditors, read-only, behind the same reader authentication (a browser
    # is asked for the reader's name and token, as for /docs).
    app.include_router(reports_http.router(docs_reader))
    # The lifecycle actions (flows.operator_actions), authenticated with a source's credentials.
    from intake import operator_http

    app.include_router(operator_http.router(intake))
    _document_payload_schemas(app)
    return app


#: What an incident id can look like (INC-2026-0001); anything else is answered as unknown
#: (the incidents API here, the operator actions in intake.operator_http).
INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
