"""The post-incident report as PDF, for archiving (reports/pdf.py).

A real incident (steps, a page, an acknowledgement, a watched metric, a long unbroken token) is rendered in
English and Chinese and read back with pypdf: A4 pages, the incident id and the Chinese wording in the text, the
charts' own labels, and the CJK font the availability probe found, embedded. The CLI writes both files in a
subprocess, and the intake serves them behind its read token.

Where this machine cannot make a PDF (no WeasyPrint, no Pango, no CJK font), those tests skip with
`reports.pdf.availability()`'s reason. What a machine without them does is tested everywhere: a WeasyPrint
whose system libraries do not load (a stand-in module in a subprocess), fonts without Chinese (fontconfig told
to reject them), and the intake's 501.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from records import incidents
from records.models import IncidentStatus, RunState
from reports import i18n, pdf
from reports.incident_record import load_record
from reports.render import report_path
from tasks.catalog import load_runbook
from tests.intake_harness import READ_AUTH, RunningIntake, write_config
from tests.report_support import Outage, acknowledge_at

#: One records backend is enough here: the PDF is made from the same view either way.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

LONG_TOKEN = "https://status.example.com/incidents/" + "a1b2c3d4e5" * 24


def need_pdf() -> pdf.Availability:
    found = pdf.availability()
    if not found:
        pytest.skip(found.reason)
    return found


def build_incident() -> str:
    """A closed system-outage drill: assessed, paged, acknowledged, failed over, a service level watched until it
    held, resolved and closed; an assessment output with a long unbroken token."""
    o = Outage()
    o.step("assess", "http", timedelta(seconds=1), timedelta(seconds=2),
           output={"status": 503, "json": {"status": "down", "detail": LONG_TOKEN}})
    o.page("li-wei", "technical_support", o.at(seconds=4))
    acknowledge_at(o.id, "li-wei", "Li Wei", "link", o.at(minutes=3))
    o.step("fail_over", "http", timedelta(minutes=4), timedelta(minutes=4, seconds=2))
    levels = [0.42, 0.55, 0.71, 0.83, 0.9]
    samples = [{"t": 60.0 * i, "at": o.at(minutes=5 + i).isoformat(), "status": 200, "holds": level >= 0.8,
                "values": {"json.service_level": level}} for i, level in enumerate(levels)]
    o.step("verify_recovery", "wait_until", timedelta(minutes=5), timedelta(minutes=9, seconds=1), data={"output": {
        "satisfied": True, "checks": len(samples), "consecutive": 2, "elapsed_seconds": 241.0, "last_status": 200,
        "last_json": {"service_level": 0.9}, "condition": "json.service_level >= 0.8",
        "bounds": [{"field": "json.service_level", "op": ">=", "value": 0.8}], "samples": samples}})
    o.status(IncidentStatus.mitigated, minutes=9, seconds=2)
    o.status(IncidentStatus.resolved, minutes=9, seconds=3)
    o.status(IncidentStatus.closed, actor="li-wei", reason="confirmed with customers", minutes=20)
    incidents.set_run_state(o.id, RunState.completed)
    return o.id


def chinese_words() -> list[str]:
    """Wording only the Chinese report has: its title, the runbook's and a step's Chinese titles."""
    runbook = load_runbook("system-outage").runbook
    fail_over = next(s for s in runbook.steps if s.id == "fail_over")
    return [i18n.labels("zh")["report_title"], runbook.title_in("zh"), fail_over.title_in("zh")]


def read_pdf(data: bytes) -> tuple[str, list, set[str]]:
    """(all text, pages, the embedded fonts' names without the subset tag, e.g. "Noto Sans CJK SC Bold")."""
    from pypdf import PdfReader

    assert data.startswith(b"%PDF-"), data[:20]
    reader = PdfReader(io.BytesIO(data))
    names: set[str] = set()

    def walk(resources, seen: set[int]) -> None:
        if resources is None:
            return
        resources = resources.get_object()
        for font in (resources.get("/Font") or {}).values():
            base = str(font.get_object().get("/BaseFont", "")).lstrip("/")
            names.add(base.split("+", 1)[-1].replace("-", " "))
        for xobject in (resources.get("/XObject") or {}).values():
            form = xobject.get_object()
            if id(form) not in seen:
                seen.add(id(form))
                walk(form.get("/Resources"), seen)

    for page in reader.pages:
        walk(page.get("/Resources"), set())
    text = "\n".join(page.extract_text() for page in reader.pages)
    return text, list(reader.pages), names


def check_report(data: bytes, incident_id: str, lang: str, found: pdf.Availability) -> None:
    text, pages, fonts = read_pdf(data)
    assert len(pages) >= 1
    for page in pages:  # A4 portrait, in points
        assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (595, 842)
    assert incident_id in text
    labels = i18n.labels(lang)
    assert labels["report_title"] in text
    # The charts' axis label, drawn only inside the SVG charts: the Gantt's and the watched metric's. (pypdf
    # reads the charts' small text without some spaces between words, so spaces are not compared.)
    squeezed = "".join(text.split())
    assert squeezed.count("".join(labels["chart_seconds"].split())) == 2, labels["chart_seconds"]
    if lang == "zh":
        for words in chinese_words():
            assert words in text, words
        # The Chinese came out in the CJK font the probe found (fontconfig's family name), embedded.
        assert found.cjk_fonts and any(name.startswith(family) for name in fonts for family in found.cjk_fonts), \
            (fonts, found.cjk_fonts)
    else:
        assert "Post-incident report" in text and chinese_words()[1] not in text


def test_both_languages_render_to_pdf_with_cjk_fonts_and_charts(backend: str, caplog) -> None:
    found = need_pdf()
    incident_id = build_incident()
    record = load_record(incident_id)
    for lang in i18n.LANGUAGES:
        with caplog.at_level("WARNING", logger="reports.pdf"):
            data = pdf.render_pdf(record, lang)
        check_report(data, incident_id, lang, found)
    # Every character had a glyph: nothing printed as an empty box.
    assert not [r for r in caplog.records if r.name == "reports.pdf"], caplog.text


def firebreak(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firebreak", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


def test_cli_writes_a_pdf_per_language_beside_the_html(backend: str) -> None:
    found = need_pdf()
    incident_id = build_incident()
    result = firebreak("report", incident_id, "--format", "pdf", "--lang", "all")
    assert result.returncode == 0, result.stderr
    written = [line.removeprefix("report: ") for line in result.stdout.splitlines()]
    assert written == [str(report_path(incident_id, lang, "pdf")) for lang in i18n.LANGUAGES]
    for lang in i18n.LANGUAGES:
        check_report(report_path(incident_id, lang, "pdf").read_bytes(), incident_id, lang, found)
    unknown = firebreak("report", "INC-1999-0001", "--format", "pdf")
    assert unknown.returncode == 2 and "INC-1999-0001" in unknown.stderr and "Traceback" not in unknown.stderr


#: A WeasyPrint whose system libraries do not load: it prints its banner to stdout, then cffi's OSError.
BROKEN_WEASYPRINT = '''
print("-----\\nWeasyPrint could not import some external libraries.\\n-----")
raise OSError("cannot load library 'libpango-1.0-0': libpango-1.0-0: cannot open shared object file: "
              "No such file or directory")
'''


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: PDF is unavailable: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""  # nothing written, and WeasyPrint's banner kept off stdout


def test_without_pango_the_cli_says_why_in_one_line(backend: str, tmp_path: Path) -> None:
    incident_id = build_incident()
    (tmp_path / "weasyprint").mkdir()
    (tmp_path / "weasyprint" / "__init__.py").write_text(BROKEN_WEASYPRINT)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    home = tmp_path / "home"  # its own, so "nothing written" is this run's
    result = firebreak("report", incident_id, "--format", "pdf", "--lang", "zh",
                       env={"PYTHONPATH": path, "FIREBREAK_HOME": str(home)})
    assert_one_line_refusal(result, "cannot load its system libraries", "libpango-1.0-0",
                            "apt-get install libpango-1.0-0 libpangoft2-1.0-0")
    assert not (home / "reports").exists()


def test_without_a_cjk_font_no_pdf_is_made(backend: str, tmp_path: Path) -> None:
    need_pdf()  # WeasyPrint and Pango load here; fontconfig is then told to reject every font that has Chinese
    incident_id = build_incident()
    config = tmp_path / "fonts.conf"
    config.write_text(f"""<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>
  <cachedir>{tmp_path / "fontconfig-cache"}</cachedir>
  <selectfont><rejectfont><pattern><patelt name="lang"><string>zh-cn</string></patelt></pattern></rejectfont></selectfont>
</fontconfig>
""")
    home = tmp_path / "home"
    result = firebreak("report", incident_id, "--format", "pdf",
                       env={"FONTCONFIG_FILE": str(config), "FIREBREAK_HOME": str(home)})
    assert_one_line_refusal(result, "no CJK font", "fonts-noto-cjk")
    assert not (home / "reports").exists()


def test_the_intake_serves_the_pdf_behind_the_read_token(backend: str, tmp_path: Path, monkeypatch) -> None:
    incident_id = build_incident()
    found = pdf.availability()
    sources, routes = write_config(tmp_path, {"runbook": None})
    with RunningIntake(sources, routes, executor="none") as intake:
        url = f"{intake.url}/reports/{incident_id}/pdf"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{intake.url}/reports/INC-1999-0001/pdf", headers=READ_AUTH).status_code in (404, 501)
        assert httpx.get(url, params={"lang": "fr"}, headers=READ_AUTH).status_code == 422
        # The Chinese one (both languages are rendered above and by the CLI: one is enough to show the route).
        answer = httpx.get(url, params={"lang": "zh"}, headers=READ_AUTH, timeout=120)
        if found:
            assert httpx.get(f"{intake.url}/reports/INC-1999-0001/pdf", headers=READ_AUTH).status_code == 404
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "application/pdf"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["cache-control"] == "no-store"
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            assert f'filename="{incident_id}.report.zh.pdf"' in answer.headers["content-disposition"]
            check_report(answer.content, incident_id, "zh", found)
        else:
            assert answer.status_code == 501 and answer.json()["error"] == found.reason
        # A machine without PDF answers 501 with the reason, whatever this one has.
        reason = "PDF is unavailable: no CJK font is installed (test)"
        monkeypatch.setattr(pdf, "availability", lambda: pdf.Availability(False, reason))
        refused = httpx.get(url, params={"lang": "zh"}, headers=READ_AUTH)
        assert refused.status_code == 501 and refused.json()["error"] == reason
        assert httpx.get(url).status_code == 401  # the token is still checked first
