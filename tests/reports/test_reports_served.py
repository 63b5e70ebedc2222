"""A drill's report as an auditor gets it: served read-only by the intake at /reports/ (behind the
incidents API's read token), entirely in Chinese with ?lang=zh, with its charts and every commitment,
and loaded in headless Chromium (screenshots in /tmp/firebreak-shots/)."""
from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from records.incidents import get_incident, notifications
from tasks.catalog import load_runbook
from tests.intake_harness import READ_AUTH, TOKENS, RunningIntake, write_config
from tests.seed_runs import run_seed

pytestmark = pytest.mark.usefixtures("prefect_server")

SHOTS = Path("/tmp/firebreak-shots")


@pytest.fixture(scope="module")
def drill(request: pytest.FixtureRequest) -> str:
    """One staffing-shortage drill against the simulator (it watches the service level and records the
    service figures, so its report has every kind of chart and scored commitment)."""
    import os

    from simulator import start_simulator

    sim = start_simulator(fault="none", recovery_seconds=0.5)
    previous = os.environ.get("FIREBREAK_INBOX")
    os.environ["FIREBREAK_INBOX"] = f"{sim.host}:{sim.port}"
    try:
        state, incident_id = run_seed("staffing-shortage", sim, "short-staffed")
        assert state.is_completed()
    finally:
        sim.stop()
        if previous is None:
            os.environ.pop("FIREBREAK_INBOX", None)
        else:
            os.environ["FIREBREAK_INBOX"] = previous
    return incident_id


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory):
    sources, routes = write_config(tmp_path_factory.mktemp("served"), {"runbook": None})
    with RunningIntake(sources, routes, executor="none") as running:
        yield running


def english_titles(runbook_id: str) -> list[str]:
    runbook = load_runbook(runbook_id).runbook
    return [runbook.title] + [s.title for s in runbook.steps if s.title]


def test_reports_are_served_read_only_behind_the_read_token(drill: str, intake: RunningIntake) -> None:
    assert httpx.get(f"{intake.url}/reports/").status_code == 401
    assert httpx.get(f"{intake.url}/reports/{drill}").status_code == 401
    assert httpx.get(f"{intake.url}/reports/{drill}", headers={"Authorization": "Bearer wrong"}).status_code == 401
    index = httpx.get(f"{intake.url}/reports/", headers=READ_AUTH)
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in index.headers["content-security-policy"]
    assert f'href="{drill}?lang=en"' in index.text
    row = index.text.split(f'href="{drill}?lang=en"', 1)[1].split("</tr>", 1)[0]
    assert 'class="audit pass">verified' in row  # records.audit.verify, as the index lists it
    # The index in Chinese: the audit status, the title and the breaches in the reader's language.
    zh_index = httpx.get(f"{intake.url}/reports/", params={"lang": "zh"}, headers=READ_AUTH).text
    zh_row = zh_index.split(f'href="{drill}?lang=zh"', 1)[1].split("</tr>", 1)[0]
    assert 'class="audit pass">已校验' in zh_row and "，链头 #" in zh_row and "verified" not in zh_row
    assert "人力资源不足" in zh_row and "Staffing shortage" not in zh_row
    report = httpx.get(f"{intake.url}/reports/{drill}", headers=READ_AUTH)
    assert report.status_code == 200 and f"Post-incident report: {drill}" in report.text
    assert "<script" not in report.text.lower()
    assert httpx.get(f"{intake.url}/reports/INC-1999-0001", headers=READ_AUTH).status_code == 404
    assert httpx.get(f"{intake.url}/reports/{drill}", params={"lang": "fr"}, headers=READ_AUTH).status_code == 422
    assert httpx.post(f"{intake.url}/reports/{drill}", headers=READ_AUTH).status_code == 405


def test_drill_report_has_charts_and_scores_the_drill(drill: str, intake: RunningIntake) -> None:
    html = httpx.get(f"{intake.url}/reports/{drill}", headers=READ_AUTH).text
    assert html.count("<svg") >= 2  # the Gantt, and what wait_for_service_level watched
    assert "Timeline of the steps, with milestones, pages and acknowledgements" in html
    assert "What “Wait until the service level recovers” watched: json.service_level &gt;= 0.8" in html
    assert "Scored against the plan:" in html
    # What the drill measured, each from its event: the service figures the runbook recorded.
    for title in ("First-contact resolution at least 85 %", "Customer satisfaction at least 90 %",
                  "Online chat answered within 1 min", "Social media answered within 30 min"):
        row = html.split(title, 1)[1].split("</tr>", 1)[0]
        assert "recorded at #" in row and 'class="nw pass">PASS' in row, row


def test_chinese_report_and_pages_carry_no_english_step_title(drill: str, intake: RunningIntake) -> None:
    """Finding 6: the Chinese report and the pages sent to Chinese-speaking contacts are all in Chinese."""
    zh = httpx.get(f"{intake.url}/reports/{drill}", params={"lang": "zh"}, headers=READ_AUTH).text
    assert f"事件复盘报告: {drill}" in zh and "人力资源不足" in zh and "召回后备人员" in zh
    for title in english_titles("staffing-shortage"):
        assert title not in zh, title
    runbook = load_runbook("staffing-shortage").runbook
    for step in runbook.steps:  # every step has its row, under its Chinese title
        assert step.title_zh and step.title_zh in zh, step.id
    zh_pages = [n for n in notifications(drill) if n.locale == "zh"]
    assert zh_pages, "the drill paged Chinese-speaking contacts"
    for page in zh_pages:
        for title in english_titles("staffing-shortage"):
            assert title not in page.title and title not in page.body, (page.contact, title)
    assert any("人员缺口" in p.title for p in zh_pages)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_headless_chromium_finds_the_charts_and_the_commitments(drill: str, intake: RunningIntake) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    token = TOKENS["FIREBREAK_TEST_READ_TOKEN"]
    base = intake.url.replace("http://", f"http://tests:{token}@")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
    for lang in ("en", "zh"):
        url = f"{base}/reports/{drill}?lang={lang}"
        dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90,
                             check=False).stdout
        assert 'class="chart"' in dom and "<svg" in dom, dom[:500]
        assert '<table class="commitments">' in dom
        assert dom.count("<rect") > 10  # the bars of the steps, drawn
        shot = SHOTS / f"{drill}.{lang}.png"
        subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1280,2600", url],
                       capture_output=True, timeout=90, check=False)
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a rendered page, not a blank one
    assert get_incident(drill).status == "closed"


def test_basic_credentials_are_the_readers(drill: str, intake: RunningIntake) -> None:
    """Browsers open the pages with HTTP Basic (the reader's name and token), as for /docs."""
    token = TOKENS["FIREBREAK_TEST_READ_TOKEN"]
    basic = {"Authorization": "Basic " + base64.b64encode(f"tests:{token}".encode()).decode()}
    assert httpx.get(f"{intake.url}/reports/{drill}", headers=basic).status_code == 200
    refused = httpx.get(f"{intake.url}/reports/")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
