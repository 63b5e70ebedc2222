"""The intake FastAPI application: the alert routes (intake.alert_routes, answered before FastAPI
sees them), the incidents API, /docs, reports and acknowledgement links.

Readers of the incidents API and its docs authenticate with a read token (`readers:` in
the sources file) before anything is looked up, and are rate limited per token; people acting
on incidents (intake.operator_http) with their own operator token (`operators:`).
"""
from __future__ import annotations

import gc
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text

from firebreak import errors
from intake import alert_routes, payloads, reports_http, strict_json
from intake.edge import ANSWERED, INCIDENT_ID, STORE_DOWN, Refused, as_refused, listed, refusal_body, throttle
from intake.service import Intake, load_intake
from intake.sources import AuthFailed, verify_reader
from notifications.acknowledgement.http import router as ack_router
from records import alert_queries, run_outbox


class IntakeApp(FastAPI):
    """FastAPI, with the alert routes answered first by intake.alert_routes (why: its docstring)."""

    intake: Intake

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and alert_routes.is_alert_route(scope["path"]):
            await alert_routes.serve(self.intake, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# --- the application ---------------------------------------------------------------------------------


def create_app(intake: Intake | None = None) -> IntakeApp:
    intake = intake or load_intake()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        intake.writer.start()
        intake.dispatcher.start()
        # Everything imported and built so far (Prefect, SQLAlchemy, pydantic: about a million objects)
        # lives as long as the process; frozen, full collections no longer walk it. Unfrozen, one took
        # 115 ms with the event loop stopped, which was most of the intake's p99 at 1,000 alerts/s.
        gc.freeze()
        try:
            yield
        finally:
            intake.writer.stop()
            intake.dispatcher.stop()

    app = IntakeApp(title="Firebreak intake", version="1",
                    description="Monitors post alerts here; each opens or joins an incident and starts its "
                                "runbook. Formats: Alertmanager (webhook v4), Grafana alerting webhook, PagerDuty "
                                "Events v2 (`POST /v2/enqueue`) and Firebreak's generic JSON. The incidents API "
                                "and these docs need a read token (`readers:` in the sources file).",
                    lifespan=lifespan,
                    # Served below behind a read token, like the incidents API.
                    docs_url=None, redoc_url=None, openapi_url=None)
    app.intake = app.state.intake = intake

    async def reader(request: Request) -> str:
        """The reader (sources file `readers:`) the request's token belongs to; 401 before anything is looked up."""
        name = verify_reader(intake.readers, request.headers.get("authorization"))
        throttle(intake.limiter, f"reader:{name}")
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
        return JSONResponse(refusal_body(exc), status_code=exc.status, headers=exc.headers)

    for kind in ANSWERED:
        app.add_exception_handler(kind, _refused)

    async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
        """A query or path value FastAPI refused (`?limit=abc`, `?lang=fr`): the same shape as every other
        refusal here, naming the field (`query.limit`) and why, rather than FastAPI's own, which echoes
        the value back."""
        assert isinstance(error, RequestValidationError)
        details = [{"field": strict_json.join_path(tuple(e.get("loc", ()))), "reason": str(e.get("msg", ""))}
                   for e in error.errors()[:strict_json.MAX_PROBLEMS]]
        return await _refused(request, Refused(422, "request does not fit: " + listed(details), details))

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
    """The alert routes are answered outside FastAPI (intake.alert_routes) and read their bodies raw
    (for size limits and signatures), so FastAPI sees neither them nor their models: add both to
    the OpenAPI document so /docs shows each route and format."""
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base_openapi()
        schema.setdefault("paths", {}).update(alert_routes.OPENAPI_PATHS)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in payloads.MODELS.values():
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
