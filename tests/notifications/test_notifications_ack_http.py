"""The acknowledgement link's HTTP surface, served by uvicorn on a free localhost port:
a valid link shows a confirmation page and acknowledges on POST; a forged link is
refused with 403, an expired one with 410, each with the reason. Issue 10 #5: the
acknowledger is the link's contact (shown, never typed), a repeat is idempotent with
bounded notes, the form carries a form token, a foreign Origin is refused, and every
answer carries the security headers."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from notifications.acknowledgement.links import make_ack_link, make_form_token
from notifications.drill_responder import AckServer, form_fields
from records import incidents
from records.acknowledgements import MAX_NOTES, list_acknowledgements


@pytest.fixture(scope="module")
def ack_server() -> Iterator[AckServer]:
    with AckServer() as server:
        yield server


def _incident(title: str = "Chat <script>alert(1)</script> down") -> str:
    return incidents.open_incident(runbook_id="test", runbook_version="1", title=title, level="I", source="cli",
                                   parameters={}, drill=True).id


def _link(incident_id: str, contact: str = "li-wei", hours: float = 1) -> str:
    return make_ack_link(incident_id, contact, datetime.now(timezone.utc) + timedelta(hours=hours))


def _submit(link: str, **fields: str) -> httpx.Response:
    """What a person's browser does: open the link, then send its page's form (with `fields`)."""
    page = httpx.get(link)
    assert page.status_code == 200, page.text
    return httpx.post(link, data={**form_fields(page.text), **fields})


def test_link_shows_a_confirmation_page_then_acknowledges_on_post(ack_server: AckServer) -> None:
    incident_id = _incident()
    link = _link(incident_id)
    assert link.startswith(ack_server.url + "/ack/")
    page = httpx.get(link)
    assert page.status_code == 200 and incident_id in page.text and "DRILL" in page.text
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text  # alert text escaped
    assert list_acknowledgements(incident_id) == []  # looking at the page (or a link scanner) acknowledges nothing
    # Who acknowledges is the link's contact, by name; there is nothing to type a name into.
    assert "李伟 Li Wei" in page.text and 'name="by"' not in page.text

    # A `by` field is ignored (issue 10 #5: a link recorded "Commander Zhao Gang"); it is not echoed either.
    answer = httpx.post(link, data={**form_fields(page.text), "by": "Commander <b>Zhao Gang</b>",
                                    "comment": "on my way"})
    assert answer.status_code == 200 and "Escalation has stopped" in answer.text and "<b>" not in answer.text
    assert "Zhao Gang" not in answer.text
    [ack] = list_acknowledgements(incident_id)
    assert (ack.by, ack.via, ack.contact_id, ack.comment, ack.effective) == ("李伟 Li Wei", "link", "li-wei",
                                                                             "on my way", True)
    assert incidents.get_incident(incident_id).status == "acknowledged"

    again = _submit(_link(incident_id, "chen-jing"))
    assert again.status_code == 200 and "Already acknowledged by 李伟 Li Wei via link" in again.text
    assert [(a.by, a.effective) for a in list_acknowledgements(incident_id)] == [("李伟 Li Wei", True),
                                                                                 ("Chen Jing", False)]


def test_a_repeat_is_idempotent_and_its_comments_are_bounded_notes(ack_server: AckServer) -> None:
    """Issue 10 #5: 21 repeat POSTs each added an acknowledgement row and an event with up to 16 KB."""
    incident_id = _incident("Queue overflow")
    link = _link(incident_id)
    assert _submit(link, comment="first").status_code == 200
    before = len(incidents.events(incident_id))
    for n in range(20):
        answer = _submit(link, comment=f"update {n}: " + "x" * 980)
        assert answer.status_code == 200
    [ack] = list_acknowledgements(incident_id)  # one record per contact and incident
    assert ack.comment == "first" and len(ack.notes) == MAX_NOTES
    assert all(len(note["comment"]) <= 1000 for note in ack.notes)
    assert [note["comment"][:9] for note in ack.notes] == [f"update {n}:" for n in range(MAX_NOTES)]
    added = incidents.events(incident_id)[before:]
    assert [e.status for e in added] == ["ack-note"] * MAX_NOTES  # bounded: one per kept note, none after
    assert "not added" in answer.text
    assert _submit(link).status_code == 200 and len(incidents.events(incident_id)) == before + MAX_NOTES

    too_long = _submit(link, comment="y" * 1001)
    assert too_long.status_code == 422 and "1000" in too_long.text
    oversized = httpx.post(link, data={**form_fields(httpx.get(link).text), "comment": "z" * 20000})
    assert oversized.status_code == 413
    assert len(list_acknowledgements(incident_id)[0].notes) == MAX_NOTES


def test_the_form_needs_its_token_and_a_foreign_origin_is_refused(ack_server: AckServer) -> None:
    incident_id = _incident("Forms")
    link = _link(incident_id)
    other = _link(_incident("Another"))
    fields = form_fields(httpx.get(link).text)
    assert set(fields) == {"form_token"}
    refused = [
        httpx.post(link, data={"comment": "no form token"}),                      # a bare POST (another site's form)
        httpx.post(link, data={"form_token": "abc.def"}),                           # a made-up one
        httpx.post(link, data=form_fields(httpx.get(other).text)),                # another link's
        httpx.post(link, data=fields, headers={"Origin": "https://evil.example"}),  # sent from another site
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    assert "another site (https://evil.example)" in refused[-1].text
    assert list_acknowledgements(incident_id) == []
    # The page's own form: its origin, or `null` (browsers send null under Referrer-Policy: no-referrer).
    assert httpx.post(link, data=fields, headers={"Origin": "null"}).status_code == 200
    assert httpx.post(link, data=fields, headers={"Origin": ack_server.url}).status_code == 200
    assert len(list_acknowledgements(incident_id)) == 1


def test_every_ack_answer_carries_the_security_headers(ack_server: AckServer) -> None:
    incident_id = _incident("Headers")
    link = _link(incident_id)
    answers = [httpx.get(link), _submit(link), httpx.post(link), httpx.get(_link(incident_id, hours=-1)),
               httpx.get(f"{ack_server.url}/ack/garbage")]
    assert [a.status_code for a in answers] == [200, 200, 403, 410, 403]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp and "form-action 'self'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "<script" not in answer.text


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
    link = _link("INC-2026-9998")
    assert httpx.get(link).status_code == 404
    token = link.rsplit("/", 1)[1]
    answer = httpx.post(link, data={"form_token": make_form_token(token)})
    assert answer.status_code == 404 and "Unknown incident" in answer.text


def test_control_characters_in_a_comment_are_refused_not_a_500(ack_server: AckServer, backend: str) -> None:
    """A link's comment is stored as text: on PostgreSQL a NUL in it failed the store (500); on SQLite
    it was stored. Refused (422 naming the comment) on both, storing nothing, then a clean one is taken."""
    incident_id = _incident("Control characters")
    link = _link(incident_id)
    events_before = len(incidents.events(incident_id))
    for comment in ("a\x00b", "\x1b[31mred", "bell\x07"):
        answer = _submit(link, comment=comment)
        assert answer.status_code == 422, (backend, repr(comment), answer.text[-300:])
        assert "comment contains a control character" in answer.text
        assert answer.headers["x-frame-options"] == "DENY"
    # The same, as raw form bytes (%00), the way a hand-made request sends it.
    token = form_fields(httpx.get(link).text)["form_token"]
    raw = httpx.post(link, content=f"form_token={token}&comment=x%00y".encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert raw.status_code == 422, raw.text[-300:]
    assert list_acknowledgements(incident_id) == [] and len(incidents.events(incident_id)) == events_before
    # Tabs and line breaks are ordinary text.
    assert _submit(link, comment="line one\n\tline two").status_code == 200
    [ack] = list_acknowledgements(incident_id)
    assert ack.comment == "line one\n\tline two"
