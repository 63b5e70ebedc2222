"""The acknowledgement link's HTTP surface, as a FastAPI router the intake service includes.

GET /ack/{token} checks the link and shows the incident with an "Acknowledge"
button; POST /ack/{token} records the acknowledgement. The acknowledgement is
a POST because mail scanners and chat unfurlers fetch every link they see
(Outlook Safe Links, Slack previews): a GET that acknowledged would stop
escalation before any person had read the page.

A forged link answers 403 and an expired one 410, each with the reason.
"""
from __future__ import annotations

from html import escape
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from notifications.acknowledgement.links import AckTokenError, verify_ack_token
from notifications.acknowledgement.service import AcknowledgementInvalid, acknowledge_incident
from records.incidents import IncidentNotFound, get_incident

router = APIRouter(tags=["acknowledgements"])

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}}
.bad{{color:#a40000}} button{{font-size:1.1rem;padding:.5rem 1.5rem}} input,textarea{{width:100%}}</style>
</head><body>{body}</body></html>"""


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status_code)


def _refused(error: AckTokenError) -> HTMLResponse:
    return _page("Link refused", f"<h1 class=bad>Link refused · 链接无效</h1><p>{escape(error.reason)}</p>",
                 error.status_code)


def _incident_line(incident_id: str) -> tuple[str, str | None]:
    try:
        incident = get_incident(incident_id)
    except IncidentNotFound:
        return f"{incident_id} (not found in the records)", None
    drill = " · DRILL 演练" if incident.drill else ""
    return f"{incident.id} · level {incident.level} · {incident.title} · status {incident.status}{drill}", incident.status


@router.get("/ack/{token}", response_class=HTMLResponse)
def confirm_page(token: str) -> HTMLResponse:
    try:
        incident_id, contact_id = verify_ack_token(token)
    except AckTokenError as error:
        return _refused(error)
    line, status = _incident_line(incident_id)
    if status is None:
        return _page("Unknown incident", f"<h1 class=bad>Unknown incident</h1><p>{escape(line)}</p>", 404)
    return _page(f"Acknowledge {incident_id}", f"""<h1>Acknowledge · 确认</h1>
<p>{escape(line)}</p>
<form method="post">
<p><label>Name · 姓名<br><input name="by" value="{escape(contact_id)}"></label></p>
<p><label>Comment · 备注 (optional)<br><textarea name="comment" rows="3"></textarea></label></p>
<p><button type="submit">Acknowledge · 确认接警</button></p>
</form>""")


async def _form(request: Request) -> dict[str, str]:
    # The form has two short text fields; parsed here rather than adding python-multipart.
    body = (await request.body())[:16384].decode("utf-8", errors="replace")
    return {key: values[0] for key, values in parse_qs(body).items()}


@router.post("/ack/{token}", response_class=HTMLResponse)
async def acknowledge(token: str, request: Request) -> HTMLResponse:
    try:
        incident_id, contact_id = verify_ack_token(token)
    except AckTokenError as error:
        return _refused(error)
    form = await _form(request)
    who = form.get("by", "").strip() or contact_id
    comment = form.get("comment")
    try:
        result = await run_in_threadpool(acknowledge_incident, incident_id, by=who, via="link", comment=comment,
                                         contact_id=contact_id)
    except IncidentNotFound:
        return _page("Unknown incident", f"<h1 class=bad>Unknown incident</h1><p>{escape(incident_id)}</p>", 404)
    except AcknowledgementInvalid as error:
        return _page("Not acknowledged", f"<h1 class=bad>Not acknowledged</h1><p>{escape(str(error))}</p>", 422)
    if result.first:
        text = f"Acknowledged by {result.by}. Escalation has stopped. · 已确认，升级通知已停止。"
    else:
        text = (f"Already acknowledged by {result.first_by} via {result.first_via}; your acknowledgement is "
                f"recorded too. · 已有人确认。")
    line, _ = _incident_line(incident_id)
    return _page(f"Acknowledged {incident_id}", f"<h1>Acknowledged · 已确认</h1><p>{escape(line)}</p>"
                                                 f"<p>{escape(text)}</p>")
