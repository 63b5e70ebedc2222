"""Post-incident reports served to auditors, read-only, behind the incidents API's reader authentication.

    GET /reports/                          every incident: level, status, TTA/TTR, breaches, audit status
    GET /reports/{incident}?lang=en|zh     the report, rendered from the records at the time of the request
    GET /reports/{incident}/pdf?lang=en|zh the same report as PDF, for archiving (reports.pdf); 501 with the
                                           reason where this machine cannot make one (no WeasyPrint, Pango or
                                           CJK font)

Nothing here writes: the report is rendered in memory from the records (reports.render), and the
index verifies each incident's audit chain (records.audit.verify) as it lists it, so it shows
"verified" or what failed. The reader dependency is the intake's (intake.app: a read token, or HTTP
Basic with the reader's name and token so a browser can open the pages).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from firebreak import errors
from records import audit
from records.incidents import list_incidents
from reports import pdf
from reports.i18n import word
from reports.incident_record import load_record
from reports.render import index_row, render, served_index, shown_title

#: What an incident id can look like (INC-2026-0001); anything else is answered as unknown.
_INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: The served pages are standalone: no scripts, nothing loaded from anywhere, never cached by a proxy.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: The PDF's: the same, but its policy only keeps it out of other sites' frames. A browser shows a PDF in a viewer
#: that the document's own `default-src 'none'` (object-src) may block, and the PDF runs nothing of its own.
PDF_HEADERS = {**HEADERS, "Content-Security-Policy": "frame-ancestors 'none'"}
INDEX_LIMIT = 500


def audit_status(incident_id: str, lang: str = "en") -> dict[str, Any]:
    """The incident's audit status as the index shows it, in the reader's language: verified, or what
    failed and where (the failure's detail is verify's own words)."""
    zh = lang == "zh"
    try:
        result = audit.verify(incident_id)
    except Exception as exc:  # noqa: BLE001  one row of the index: whatever stops verify reads "not verified", not a 500
        return {"ok": False, "text": f"{'未能校验' if zh else 'not verified'}: {type(exc).__name__}: {exc}"}
    if result.broken is None:
        status = getattr(result, "status", "")
        note = (f"（{word(status, lang)}）" if zh else f" ({status})") if status and status not in ("intact",) else ""
        return {"ok": True, "text": f"已校验{note}，链头 #{result.head_seq}" if zh
                else f"verified{note}, head #{result.head_seq}"}
    broken = result.broken
    kind = getattr(broken, "kind", None) or broken.problem
    where = (f"（第 {broken.seq} 条事件）" if zh else f" at event #{broken.seq}") if broken.seq else ""
    return {"ok": False, "text": f"{word(kind, lang)}{where}: {broken.detail}"}


def _index(lang: str) -> str:
    rows = []
    for incident in list_incidents(INDEX_LIMIT):
        record = load_record(incident.id)
        rows.append({"row": index_row(record, lang), "title": shown_title(record, lang),
                     "audit": audit_status(incident.id, lang)})
    return served_index(rows, lang)


def _report(incident_id: str, lang: str) -> str:
    return render(load_record(incident_id), lang).html


def router(reader: Callable[..., Any]) -> APIRouter:
    """The /reports routes, each behind `reader` (the intake's reader dependency)."""
    routes = APIRouter(prefix="/reports", tags=["reports"])

    @routes.get("/", response_class=HTMLResponse, summary="Every incident's report, with its audit status (read token)")
    async def index(_reader: str = Depends(reader),
                    lang: Literal["en", "zh"] = Query("en", description="en or zh")) -> HTMLResponse:
        return HTMLResponse(await run_in_threadpool(_index, lang), headers=HEADERS)

    @routes.get("/{incident_id}", response_class=HTMLResponse, summary="One incident's report (read token)")
    async def report(incident_id: str, _reader: str = Depends(reader),
                     lang: Literal["en", "zh"] = Query("en", description="en or zh")) -> HTMLResponse:
        if not _INCIDENT_ID.match(incident_id):
            raise errors.NotFound(f"no incident {incident_id!r}")
        return HTMLResponse(await run_in_threadpool(_report, incident_id, lang), headers=HEADERS)

    @routes.get("/{incident_id}/pdf", response_class=Response,
                summary="One incident's report as PDF, for archiving (read token; 501 where PDF is unavailable)",
                responses={200: {"content": {"application/pdf": {}}, "description": "The report, A4 PDF/A-2u"}})
    async def report_pdf(incident_id: str, _reader: str = Depends(reader),
                         lang: Literal["en", "zh"] = Query("en", description="en or zh")) -> Response:
        if not _INCIDENT_ID.match(incident_id):
            raise errors.NotFound(f"no incident {incident_id!r}")
        # PdfUnavailable is errors.NotInstalled: 501 with its reason (intake.edge HTTP_ANSWERS).
        data = await run_in_threadpool(pdf.report_pdf, incident_id, lang)
        return Response(data, media_type="application/pdf", headers={
            **PDF_HEADERS, "Content-Disposition": f'inline; filename="{incident_id}.report.{lang}.pdf"'})

    return routes
