"""The acknowledgement link's HTTP surface, served by uvicorn on a free localhost port:
a valid link shows a confirmation page and acknowledges on POST; a forged link is
refused with 403, an expired one with 410, each with the reason."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from notifications.acknowledgement.links import make_ack_link
from notifications.drill_responder import AckServer
from records import incidents
from records.acknowledgements import list_acknowledgements


@pytest.fixture(scope="module")
def ack_server() -> Iterator[AckServer]:
    with AckServer() as server:
        yield server


def _incident(title: str = "Chat <script>alert(1)</script> down") -> str:
    return incidents.open_incident(runbook_id="test", runbook_version="1", title=title, level="I", source="cli",
                                   parameters={}, drill=True).id


def _link(incident_id: str, contact: str = "li-wei", hours: float = 1) -> str:
    return make_ack_link(incident_id, contact, datetime.now(timezone.utc) + timedelta(hours=hours))


def test_link_shows_a_confirmation_page_then_acknowledges_on_post(ack_server: AckServer) -> None:
    incident_id = _incident()
    link = _link(incident_id)
    assert link.startswith(ack_server.url + "/ack/")
    page = httpx.get(link)
    assert page.status_code == 200 and incident_id in page.text and "DRILL" in page.text
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text  # alert text escaped
    assert list_acknowledgements(incident_id) == []  # looking at the page (or a link scanner) acknowledges nothing

    answer = httpx.post(link, data={"by": "Li Wei <b>", "comment": "on my way"})
    assert answer.status_code == 200 and "Escalation has stopped" in answer.text and "<b>" not in answer.text
    [ack] = list_acknowledgements(incident_id)
    assert (ack.by, ack.via, ack.contact_id, ack.comment, ack.effective) == ("Li Wei <b>", "link", "li-wei",
                                                                             "on my way", True)
    assert incidents.get_incident(incident_id).status == "acknowledged"

    again = httpx.post(_link(incident_id, "chen-jing"))  # no name given: the link's contact
    assert again.status_code == 200 and "Already acknowledged by Li Wei <b>" not in again.text
    assert "Already acknowledged by Li Wei &lt;b&gt; via link" in again.text
    assert [(a.by, a.effective) for a in list_acknowledgements(incident_id)] == [("Li Wei <b>", True),
                                                                                 ("chen-jing", False)]


def test_forged_link_is_refused_with_403(ack_server: AckServer) -> None:
    incident_id = _incident()
    token = _link(incident_id).rsplit("/", 1)[1]
    payload, signature = token.split(".")
    forged_payload = _link("INC-2026-9999").rsplit("/", 1)[1].split(".")[0]
    for bad in (f"{forged_payload}.{signature}", f"{payload}.{signature[:-4]}AAAA", "garbage"):
        for method in (httpx.get, httpx.post):
            answer = method(f"{ack_server.url}/ack/{bad}")
            assert answer.status_code == 403, (bad, answer.text)
            assert "Link refused" in answer.text
    assert list_acknowledgements(incident_id) == []


def test_expired_link_is_refused_with_410_and_says_what_to_do(ack_server: AckServer) -> None:
    incident_id = _incident()
    expired = _link(incident_id, hours=-1)
    for method in (httpx.get, httpx.post):
        answer = method(expired)
        assert answer.status_code == 410 and "expired" in answer.text and f"firebreak ack {incident_id}" in answer.text
    assert list_acknowledgements(incident_id) == []


def test_link_to_an_unknown_incident_is_404(ack_server: AckServer) -> None:
    answer = httpx.post(_link("INC-2026-9998"))
    assert answer.status_code == 404 and "Unknown incident" in answer.text
