"""`POST /v1/incidents/{incident_id}/{action}`: the lifecycle actions over HTTP, for tools and chat bots.

    action: acknowledge · resolve · close · note · level · handover · rerun · cancel

A write, so it is authenticated like an alert, with a **source's credentials** (intake/sources.yaml):
`X-Firebreak-Source: <source name>` (default `generic`), then that source's own check: the HMAC
signature of the body (`generic`: X-Firebreak-Signature and X-Firebreak-Timestamp, each signature
accepted once) or its bearer token (`alertmanager`, `grafana`). PagerDuty sources (routing keys)
cannot act. A read token is not enough. The request is rate limited with its source.

Body (JSON): `by` (a contact: id or name; anyone else is refused, 422) and the action's own fields:
acknowledge `comment`?; resolve, close, cancel `reason`; note `text`; level `level` (I, II, III) and
`reason`; handover `to` and `note`?; rerun `reason`?, `runbook`?. An `Idempotency-Key` header makes a
resent request act once (the first answer comes back, `repeated: true`).

Answers: 200 with what was done (flows.operator_actions.ActionResult); 401 bad credentials; 404
unknown incident or action; 409 the incident's state does not allow it (already closed, a run still
drives it, …); 422 a field missing or wrong, or `by` is not a contact; 429 over the source's rate.
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from firebreak import errors
from intake.app import Intake, Refused, authenticate, parse_json, read_body, require_json, throttle, validate
from records.db import session_scope
from records.signatures import SignatureReplayed, replayed_signatures

DEFAULT_SOURCE = "generic"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    by: str = Field(min_length=1, max_length=200, description="who: a contact id or name")


class AcknowledgeBody(_Body):
    comment: str | None = Field(default=None, max_length=2000)


class ReasonBody(_Body):
    reason: str = Field(min_length=1, max_length=2000)


class NoteBody(_Body):
    text: str = Field(min_length=1, max_length=4000)


class LevelBody(_Body):
    level: Literal["I", "II", "III"]
    reason: str = Field(min_length=1, max_length=2000)


class HandoverBody(_Body):
    to: str = Field(min_length=1, max_length=200, description="who commands from now on: a contact id or name")
    note: str | None = Field(default=None, max_length=2000)


class RerunBody(_Body):
    reason: str | None = Field(default=None, max_length=2000)
    runbook: str | None = Field(default=None, max_length=100)


BODIES: dict[str, type[_Body]] = {"acknowledge": AcknowledgeBody, "resolve": ReasonBody, "close": ReasonBody,
                                  "note": NoteBody, "level": LevelBody, "handover": HandoverBody,
                                  "rerun": RerunBody, "cancel": ReasonBody}


def _call(action: str, incident_id: str, body: _Body, request_key: str | None) -> dict[str, Any]:
    from flows import operator_actions

    fields = body.model_dump()
    result = operator_actions.ACTIONS[action](incident_id, via="api", request_key=request_key, **fields)
    return result.model_dump(mode="json")


def router(intake: Intake) -> APIRouter:
    routes = APIRouter(tags=["incidents"])

    @routes.post("/v1/incidents/{incident_id}/{action}",
                 summary="Act on an incident: acknowledge, resolve, close, note, level, handover, rerun, cancel "
                         "(a source's credentials)")
    async def act(incident_id: str, action: str, request: Request) -> JSONResponse:
        name = request.headers.get("x-firebreak-source") or DEFAULT_SOURCE
        spec = intake.sources.get(name)
        if spec is None or spec.format == "pagerduty":
            raise Refused(401, f"source {name[:60]!r} cannot act on incidents (X-Firebreak-Source names a bearer or "
                               "HMAC source of the sources file)")
        require_json(request)
        raw = await read_body(request, intake.settings.max_body_bytes)
        verified = authenticate(name, spec, request.headers, raw)  # AuthFailed: 401 before anything is looked up
        throttle(intake, f"source:{name}")
        if verified.signature is not None:
            def remember() -> bool:
                with session_scope() as session:
                    return bool(replayed_signatures(session, [verified]))
            if await run_in_threadpool(remember):
                raise SignatureReplayed("this signature was already used (replayed request)")
        model = BODIES.get(action)
        if model is None:
            raise Refused(404, f"no action {action[:40]!r}; actions: {', '.join(BODIES)}")
        body = validate(model, parse_json(raw))
        key = request.headers.get("idempotency-key")
        request_key = f"api:{name}:{key[:150]}" if key else None
        try:
            answer = await run_in_threadpool(_call, action, incident_id, body, request_key)
        except errors.InputInvalid as exc:
            raise Refused(422, str(exc)) from None
        except errors.Conflict as exc:
            raise Refused(409, str(exc)) from None
        return JSONResponse(answer)

    return routes
