"""The acknowledgement link's HTTP surface, as a FastAPI router the intake service includes.

GET /ack/{token} checks the link and shows the incident, who acknowledges and an
"Acknowledge" button; POST /ack/{token} records the acknowledgement. The acknowledgement is
a POST because mail scanners and chat unfurlers fetch every link they see
(Outlook Safe Links, Slack previews): a GET that acknowledged would stop
escalation before any person had read the page.

Who acknowledges is the link's contact: the page shows their name (from the contacts file)
and has no name field, and a POST ignores any `by` it carries. Acknowledging again through the
link is idempotent (one acknowledgement record per contact and incident, records.acknowledgements);
a later comment is kept as a bounded note. A comment is at most COMMENT_CHARS characters (422).

Defences, since the link works for anyone holding it:
- the page's form carries a form token (an HMAC of the link's token and a nonce,
  links.make_form_token): a POST without a valid one is refused (403), so a page of another
  site cannot make a browser that holds the link acknowledge;
- a POST whose `Origin` is another site's (not FIREBREAK_PUBLIC_URL's origin) is refused (403).
  The page's own form is sent with `Origin: null` by browsers (its Referrer-Policy is
  no-referrer, and the Fetch standard then sends null), so null or no Origin rely on the form token;
- every answer carries Content-Security-Policy (default-src 'none', the one stylesheet by hash,
  form-action 'self', frame-ancestors 'none'; no script at all), X-Frame-Options: DENY,
  Referrer-Policy: no-referrer (the token in the URL never leaves by Referer),
  X-Content-Type-Options: nosniff and Cache-Control: no-store;
- a body over MAX_BODY_BYTES is refused (413).

A forged link answers 403 and an expired one 410, each with the reason.
"""
from __future__ import annotations

import base64
import hashlib
from html import escape
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from firebreak.settings import get_settings
from notifications.acknowledgement.links import (
    AckTokenError,
    form_token_valid,
    make_form_token,
    verify_ack_token,
)
from notifications.acknowledgement.service import COMMENT_CHARS, AcknowledgementInvalid, acknowledge_incident
from notifications.contacts import load_directory
from records.incidents import IncidentNotFound, get_incident

router = APIRouter(tags=["acknowledgements"])

MAX_BODY_BYTES = 8192
FORM_TOKEN_FIELD = "form_token"

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}"
          ".bad{color:#a40000} button{font-size:1.1rem;padding:.5rem 1.5rem} textarea{width:100%}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
SECURITY_HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{style}</style>
</head><body>{body}</body></html>"""


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), style=_STYLE, body=body), status_code=status_code,
                        headers=SECURITY_HEADERS)


def _refused(error: AckTokenError) -> HTMLResponse:
    return _page("Link refused", f"<h1 class=bad>Link refused · 链接无效</h1><p>{escape(error.reason)}</p>",
                 error.status_code)


def _bad_request(title: str, reason: str, status_code: int) -> HTMLResponse:
    return _page(title, f"<h1 class=bad>{escape(title)}</h1><p>{escape(reason)}</p>", status_code)


def _incident_line(incident_id: str) -> tuple[str, str | None]:
    try:
        incident = get_incident(incident_id)
    except IncidentNotFound:
        return f"{incident_id} (not found in the records)", None
    drill = " · DRILL 演练" if incident.drill else ""
    return f"{incident.id} · level {incident.level} · {incident.title} · status {incident.status}{drill}", incident.status


def contact_name(contact_id: str) -> str:
    """The link's contact by name, as the contacts file has it (their id if it no longer lists them)."""
    try:
        return load_directory(get_settings().contacts_file).get(contact_id).name
    except Exception:  # noqa: BLE001  (removed since the page was sent, or the file is unreadable now)
        return contact_id


def _public_origin() -> str:
    parts = urlsplit(get_settings().public_url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _foreign_origin(request: Request) -> str | None:
    """The request's Origin if it is another site's; None if it is ours, `null` or absent."""
    origin = (request.headers.get("origin") or "").strip()
    if not origin or origin == "null":
        return None
    return None if origin.rstrip("/").lower() == _public_origin() else origin


@router.get("/ack/{token}", response_class=HTMLResponse)
def confirm_page(token: str) -> HTMLResponse:
    try:
        incident_id, contact_id = verify_ack_token(token)
    except AckTokenError as error:
        return _refused(error)
    line, status = _incident_line(incident_id)
    if status is None:
        return _page("Unknown incident", f"<h1 class=bad>Unknown incident</h1><p>{escape(line)}</p>", 404)
    name = contact_name(contact_id)
    return _page(f"Acknowledge {incident_id}", f"""<h1>Acknowledge · 确认</h1>
<p>{escape(line)}</p>
<p>Acknowledging as · 确认人: <strong>{escape(name)}</strong> ({escape(contact_id)})</p>
<form method="post">
<input type="hidden" name="{FORM_TOKEN_FIELD}" value="{escape(make_form_token(token))}">
<p><label>Comment · 备注 (optional, at most {COMMENT_CHARS} characters)<br>
<textarea name="comment" rows="3" maxlength="{COMMENT_CHARS}"></textarea></label></p>
<p><button type="submit">Acknowledge · 确认接警</button></p>
</form>""")


async def _form(request: Request) -> dict[str, str] | None:
    """The form's fields; None if the body is over MAX_BODY_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return {key: values[0] for key, values in parse_qs(body.decode("utf-8", errors="replace")).items()}


@router.post("/ack/{token}", response_class=HTMLResponse)
async def acknowledge(token: str, request: Request) -> HTMLResponse:
    try:
        incident_id, contact_id = verify_ack_token(token)
    except AckTokenError as error:
        return _refused(error)
    foreign = _foreign_origin(request)
    if foreign is not None:
        return _bad_request("Not acknowledged", f"the request came from another site ({foreign}); open the link "
                                                "itself and acknowledge on its page", 403)
    form = await _form(request)
    if form is None:
        return _bad_request("Not acknowledged", f"the request is larger than {MAX_BODY_BYTES} bytes", 413)
    if not form_token_valid(token, form.get(FORM_TOKEN_FIELD, "")):
        return _bad_request("Not acknowledged", "the form is missing or not this link's; open the link and "
                                                "acknowledge on its page", 403)
    comment = form.get("comment")
    if comment is not None and len(comment.strip()) > COMMENT_CHARS:
        return _bad_request("Not acknowledged", f"the comment is longer than {COMMENT_CHARS} characters", 422)
    who = await run_in_threadpool(contact_name, contact_id)  # the link's contact; a `by` field is ignored
    try:
        result = await run_in_threadpool(acknowledge_incident, incident_id, by=who, via="link", comment=comment,
                                         contact_id=contact_id)
    except IncidentNotFound:
        return _page("Unknown incident", f"<h1 class=bad>Unknown incident</h1><p>{escape(incident_id)}</p>", 404)
    except AcknowledgementInvalid as error:
        return _bad_request("Not acknowledged", str(error), 422)
    if result.first:
        text = f"Acknowledged by {result.by}. Escalation has stopped. · 已确认，升级通知已停止。"
    elif result.repeat:
        text = "You had acknowledged this incident already; nothing new to stop. · 您已确认过。"
    else:
        text = (f"Already acknowledged by {result.first_by} via {result.first_via}; your acknowledgement is "
                f"recorded too. · 已有人确认。")
    if result.noted:
        text += " Your comment is added as a note. · 备注已添加。"
    elif result.note_dropped:
        text += " Your comment was not added: this acknowledgement has as many notes as it keeps. · 备注未添加。"
    line, _ = _incident_line(incident_id)
    return _page(f"Acknowledged {incident_id}", f"<h1>Acknowledged · 已确认</h1><p>{escape(line)}</p>"
                                                 f"<p>{escape(text)}</p>")
