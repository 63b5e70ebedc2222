"""`POST /v1/incidents/{incident_id}/{action}`: the lifecycle actions over HTTP, for tools and chat bots.

    action: acknowledge · resolve · close · note · level · handover · rerun · resume · cancel

A person's write, so it is authenticated with that **operator's own token** (the sources file's
`operators:`, each naming one contact): `Authorization: Bearer <operator token>`. The token decides
who acts; a monitor's credential (bearer, HMAC, routing key) or a read token is refused, because
anyone holding a monitor's secret could otherwise act in any person's name. The request is rate
limited per operator.

Body (JSON): `by` is optional and, when given, must name the token's own contact (else 403); then the
action's own fields: acknowledge `comment`?; resolve, close, cancel `reason`; note `text`; level
`level` (I, II, III) and `reason`; handover `to` and `note`?; rerun `reason`?, `runbook`?; resume `reason`?. An
`Idempotency-Key` header makes a resent request act once (the first answer comes back, `repeated: true`).

Answers: 200 with what was done (flows.operator_actions.ActionResult); 401 no operator token; 403
`by` names someone else; 404 unknown incident or action; 409 the incident's state does not allow it
(already closed, a run still drives it, …); 422 a field missing or wrong, or the token's contact is not
in the contacts directory; 429 over the operator's rate.
"""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from firebreak import errors
from intake.edge import INCIDENT_ID, Refused, parse_json, read_body, require_json, throttle, validate
from intake.service import Intake
from intake.sources import verify_operator


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    by: str | None = Field(default=None, min_length=1, max_length=200,
                           description="who: optional, and when given the token's own contact (id or name)")


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


class OptionalReasonBody(_Body):
    reason: str | None = Field(default=None, max_length=2000)


class RerunBody(_Body):
    reason: str | None = Field(default=None, max_length=2000)
    runbook: str | None = Field(default=None, max_length=100)


BODIES: dict[str, type[_Body]] = {"acknowledge": AcknowledgeBody, "resolve": ReasonBody, "close": ReasonBody,
                                  "note": NoteBody, "level": LevelBody, "handover": HandoverBody,
                                  "rerun": RerunBody, "resume": OptionalReasonBody, "cancel": ReasonBody}


def _call(action: str, incident_id: str, body: _Body, contact: str, request_key: str | None) -> dict[str, Any]:
    from flows import operator_actions
    from notifications.command import find_operator

    if body.by is not None and find_operator(body.by).id != find_operator(contact).id:
        raise Refused(403, f"`by` names {body.by[:80]!r}, but this token acts for {contact!r}")
    fields = {**body.model_dump(), "by": contact}
    result = operator_actions.ACTIONS[action](incident_id, via="api", request_key=request_key, **fields)
    return result.model_dump(mode="json")


def router(intake: Intake) -> APIRouter:
    routes = APIRouter(tags=["incidents"])

    @routes.post("/v1/incidents/{incident_id}/{action}",
                 summary="Act on an incident: acknowledge, resolve, close, note, level, handover, rerun, cancel "
                         "(an operator's own token)")
    async def act(incident_id: str, action: str, request: Request) -> JSONResponse:
        name = verify_operator(intake.operators, request.headers.get("authorization"))  # 401 before any lookup
        throttle(intake.limiter, f"operator:{name}")
        require_json(request.headers.get("content-type"))
        raw = await read_body(request.receive, request.headers.get("content-length"), intake.settings.max_body_bytes)
        model = BODIES.get(action)
        if model is None:
            raise Refused(404, f"no action {action[:40]!r}; actions: {', '.join(BODIES)}")
        if not INCIDENT_ID.match(incident_id):
            # Not an id at all (a NUL, 300 characters …): unknown, without asking the store, which
            # on PostgreSQL fails on a NUL (a 500) rather than finding nothing.
            raise errors.NotFound(f"no incident {incident_id[:40]!r}")
        body = validate(model, parse_json(raw))
        key = request.headers.get("idempotency-key")
        request_key = f"api:{name}:{key[:150]}" if key else None
        try:
            answer = await run_in_threadpool(_call, action, incident_id, body, intake.operators[name].contact,
                                             request_key)
        except errors.InputInvalid as exc:
            raise Refused(422, str(exc)) from None
        except errors.Conflict as exc:
            raise Refused(409, str(exc)) from None
        return JSONResponse(answer)

    return routes
