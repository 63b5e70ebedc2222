"""The post-incident report as PDF, for archiving: the one place PDF is made.

The PDF is the HTML `reports.render.render` produces (its `@media print` rules apply), laid out on A4
pages by WeasyPrint with templates/_pdf.css on top: the report's title and "page N / M" in the footer,
tables that wrap inside the page, Chinese in a CJK font (Noto Sans CJK SC first), the inline SVG charts
drawn as vectors. WeasyPrint writes it as PDF/A-2u (fonts embedded, text extractable).

WeasyPrint is optional (`pip install -e '.[pdf]'`) and needs system libraries (Pango, HarfBuzz,
fontconfig) and, for Chinese, a CJK font, none of which `make setup` can install. It is imported only
inside the functions here, so nothing else in Firebreak needs it; `availability()` says in one line
whether a PDF can be made on this machine and, if not, why and how to enable it. A machine without a
CJK font makes no PDF at all: Chinese printed as empty boxes is worse than none.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from firebreak.errors import NotInstalled
from reports import i18n
from reports.incident_record import IncidentRecord, load_record
from reports.render import TEMPLATES, render, report_path

#: What enables PDF output (README, "PDF for archiving"), said with each reason it is unavailable.
SYSTEM_LIBRARIES = "libpango-1.0-0 libpangoft2-1.0-0"
CJK_FONT = "fonts-noto-cjk"
HOW_TO_ENABLE = f"pip install -e '.[pdf]', and on Debian apt-get install {SYSTEM_LIBRARIES} {CJK_FONT}"
STYLESHEET = TEMPLATES / "_pdf.css"
#: What the availability probe prints: report wording with full-width punctuation.
PROBE_TEXT = "事件复盘报告：已解决（演练）"
#: WeasyPrint's conformance target: PDF/A-2, level U (every glyph maps to Unicode).
PDF_VARIANT = "pdf/a-2u"

LOGGER = logging.getLogger(__name__)
#: WeasyPrint (Pango, fontconfig) lays out one document at a time in a process: the intake renders in threads.
_LOCK = threading.Lock()


class PdfUnavailable(NotInstalled):
    """PDF cannot be made on this machine: WeasyPrint, its system libraries or a CJK font is missing."""


@dataclass(frozen=True)
class Availability:
    """Whether a PDF can be made here. `reason`: one line, why not and how to enable it; where it can,
    what makes it (the WeasyPrint version and the CJK font Chinese was drawn with)."""

    available: bool
    reason: str
    #: The font families the probe's Chinese came out in (fontconfig's names, e.g. "Noto Sans CJK SC").
    cjk_fonts: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.available


class _Log(logging.Handler):
    """WeasyPrint's warnings while it renders: kept off the console, `.notdef` glyphs (empty boxes) noted."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.warnings: list[str] = []
        self.notdef: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        (self.notdef if ".notdef glyph" in message else self.warnings).append(message)


@contextlib.contextmanager
def _weasyprint_log() -> Iterator[_Log]:
    logger = logging.getLogger("weasyprint")
    handler = _Log()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _weasyprint() -> Any:
    """The weasyprint module, or PdfUnavailable naming what is missing."""
    try:
        # WeasyPrint prints a banner to stdout when a system library does not load: not on our stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            import weasyprint
    except ImportError as exc:
        raise PdfUnavailable(f"PDF is unavailable: WeasyPrint is not installed ({exc}); to enable it: "
                             f"{HOW_TO_ENABLE}") from None
    except OSError as exc:  # cffi could not open Pango, GObject, HarfBuzz or fontconfig
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PdfUnavailable(f"PDF is unavailable: WeasyPrint cannot load its system libraries ({detail}); to "
                             f"enable it, on Debian: apt-get install {SYSTEM_LIBRARIES}") from None
    return weasyprint


def _with_pdf_style(html: str) -> str:
    """The report's HTML with templates/_pdf.css after its own stylesheet, as an author stylesheet like it
    (WeasyPrint's `stylesheets=` are user stylesheets, which the report's own rules would override). The
    first `</head>` is the template's: every value from the record is escaped, in the body."""
    style = f"<style>\n{STYLESHEET.read_text(encoding='utf-8')}</style>\n"
    head, found, rest = html.partition("</head>")
    return f"{head}{style}{found}{rest}" if found else f"{style}{html}"


def _pdf(weasyprint: Any, html: str) -> tuple[bytes, Any, _Log]:
    """(PDF bytes, the WeasyPrint document, its warnings) for `html`. Nothing is fetched: the report is
    standalone, and its text comes from alerts and operators, so no URL in it is ever followed."""
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols=("data",), allow_redirects=False, timeout=1)
    with _LOCK, _weasyprint_log() as log:
        document = weasyprint.HTML(string=_with_pdf_style(html), url_fetcher=fetcher).render()
        data = document.write_pdf(pdf_variant=PDF_VARIANT)
    return data, document, log


@lru_cache(maxsize=1)
def availability() -> Availability:
    """Whether this machine can make the report's PDF: WeasyPrint imports, its system libraries load, and a
    Chinese sample comes out in a real font (no empty boxes). Probed once per process."""
    try:
        weasyprint = _weasyprint()
        sample = f'<!DOCTYPE html><html lang="zh-CN"><body><h1>{PROBE_TEXT}</h1></body></html>'
        data, document, log = _pdf(weasyprint, sample)
    except PdfUnavailable as exc:
        return Availability(False, str(exc))
    except Exception as exc:  # noqa: BLE001  a library that loads but cannot lay out a page: said, not raised
        detail = (str(exc).strip().splitlines() or [""])[0]
        return Availability(False, f"PDF is unavailable: WeasyPrint failed on a sample page ({type(exc).__name__}: "
                                   f"{detail}); to enable it: {HOW_TO_ENABLE}")
    if log.notdef or not data.startswith(b"%PDF"):
        return Availability(False, "PDF is unavailable: no CJK font is installed, so Chinese would print as empty "
                                   f"boxes; to enable it, on Debian: apt-get install {CJK_FONT}")
    fonts = tuple(sorted({font.family for font in getattr(document, "fonts", {}).values()}))
    return Availability(True, f"PDF by WeasyPrint {weasyprint.__version__}, Chinese in {', '.join(fonts) or '?'}",
                        fonts)


def require() -> None:
    """Raise PdfUnavailable (one line: why, and how to enable it) where no PDF can be made."""
    found = availability()
    if not found:
        raise PdfUnavailable(found.reason)


def html_to_pdf(html: str) -> bytes:
    """A report's HTML (reports.render) as PDF bytes. Characters no installed font has (an emoji in an alert,
    say) print as boxes: logged as a warning, the PDF still made."""
    require()
    data, _, log = _pdf(_weasyprint(), html)
    if log.notdef:
        LOGGER.warning("PDF: %d character(s) have no glyph in any installed font and print as boxes, e.g. %s",
                       len(log.notdef), log.notdef[0].rsplit(":", 1)[-1].strip())
    return data


def render_pdf(record: IncidentRecord, lang: str = "en") -> bytes:
    """The incident's report in `lang` as PDF, from the same HTML `reports.render.render` produces."""
    require()
    return html_to_pdf(render(record, lang).html)


def report_pdf(incident_id: str, lang: str = "en") -> bytes:
    """The report of `incident_id` in `lang`, rendered from the records now (IncidentNotFound if none)."""
    require()  # before the records are read: a machine without PDF says so whatever the incident
    return render_pdf(load_record(incident_id), lang)


def write_pdfs(incident_id: str, langs: tuple[str, ...] = i18n.LANGUAGES) -> dict[str, Path]:
    """Write `report.<lang>.pdf` beside the incident's HTML report for each language. Returns {lang: path}."""
    require()
    record = load_record(incident_id)
    written: dict[str, Path] = {}
    for lang in langs:
        path = report_path(incident_id, lang, "pdf")
        _write_bytes_atomically(path, render_pdf(record, lang))
        written[lang] = path
    return written


def _write_bytes_atomically(path: Path, data: bytes) -> None:
    """Readers see the old PDF or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
