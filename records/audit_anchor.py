"""Anchor audit-chain heads in Prefect's own database, outside the records.

An anchor is a Prefect Variable per incident, `firebreak-audit-<incident uid>`,
tagged with the records' installation id, whose value is the incident's signed
head: {installation, incident id and uid, global seal number, seq, hash, the
head's signature, the highest global seal number at that moment}, signed as a
whole under the audit key (records.audit_key). It is written when a head is
published (reports.publish: at the run's end, on a review, on regeneration) and
when an already published head moves (a late acknowledgement), so someone who
rewrites the records database — even back to a genuinely signed earlier head —
still disagrees with Prefect's copy.

Best effort: Prefect unreachable (or not configured) never stops the caller.
Each attempt, successful or not, is recorded in `audit_anchors`, and
`firebreak audit verify` then says "not anchored" (with the reason) rather
than "intact". An anchor never moves back to a lower head.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from records.audit import (
    SEAL_COUNTER,
    Anchor,
    AnchorsUnavailable,
    AuditAnchoring,
    AuditHead,
    IncidentSeal,
    anchor_payload,
    head_payload,
    installation_id,
)
from records.audit_key import load_key
from records.db import read_scope, session_scope
from records.models import Incident, Sequence, utcnow

LOGGER = logging.getLogger("firebreak.audit")
FORMAT = "firebreak-audit-anchor/1"
PAGE = 200
_USERINFO = re.compile(r"(://)[^/@\s]+@")
#: One anchoring at a time per incident in this process (striped by incident id). A run's live view and
#: its report anchor the same new head at about the same moment; in a burst, 20 of 56 runs did both at
#: once, and the loser paid a refused creation and a read. In turn, the second finds the first's record.
_TURNS = tuple(threading.Lock() for _ in range(64))


def variable_name(uid: str) -> str:
    return f"firebreak-audit-{uid}"


def installation_tag(installation: str) -> str:
    return f"firebreak-audit-installation-{installation}"


@dataclass(frozen=True)
class Anchored:
    """What one anchoring attempt did."""

    incident_id: str
    seq: int
    variable: str
    ok: bool
    error: str | None = None


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _scrub(text: str) -> str:
    """An error for the records: no credentials that a URL might carry, and not too long."""
    text = _USERINFO.sub(r"\1***@", text)
    return text if len(text) <= 500 else text[:499] + "…"


def _document(incident_id: str) -> tuple[dict[str, Any], str] | None:
    """The anchor document of the incident's newest head whose signature verifies, and the tag."""
    key = load_key()
    with session_scope() as session:
        incident = session.get(Incident, incident_id)
        seal = session.scalars(select(IncidentSeal).where(IncidentSeal.incident_id == incident_id)).first()
        if incident is None or seal is None:
            return None
        installation = installation_id(session)
        heads = session.execute(select(AuditHead.seq, AuditHead.hash, AuditHead.signature, AuditHead.key_id)
                                .where(AuditHead.incident_id == incident_id)
                                .order_by(AuditHead.seq.desc(), AuditHead.id.desc())).all()
        sealed_through = max(session.scalar(select(func.max(IncidentSeal.number))) or 0,
                             session.scalar(select(Sequence.value).where(Sequence.name == SEAL_COUNTER)) or 0)
    head = next((h for h in heads if key.verifies(head_payload(incident.uid, incident_id, h.seq, h.hash),
                                                  h.signature, h.key_id)), None)
    if head is None:
        return None
    document: dict[str, Any] = {
        "format": FORMAT, "installation": installation, "incident_id": incident_id, "uid": incident.uid,
        "seal_number": seal.number, "seq": head.seq, "hash": head.hash, "head_signature": head.signature,
        "key_id": key.key_id, "sealed_through": sealed_through, "anchored_at": utcnow().isoformat(),
    }
    document["signature"] = key.sign(anchor_payload(document))
    return document, installation_tag(installation)


def _record(incident_id: str, seq: int, digest: str, variable: str, ok: bool, error: str | None) -> None:
    try:
        with session_scope() as session:
            session.add(AuditAnchoring(incident_id=incident_id, seq=seq, hash=digest, variable=variable, ok=ok,
                                       error=error, at=utcnow()))
    except Exception:
        LOGGER.exception("could not record the anchoring of %s", incident_id)


def _last_anchored(incident_id: str) -> tuple[int, str] | None:
    """The head of this incident last anchored in Prefect, as the records say: (seq, hash), or None."""
    with read_scope() as session:
        row = session.execute(select(AuditAnchoring.seq, AuditAnchoring.hash)
                              .where(AuditAnchoring.incident_id == incident_id, AuditAnchoring.ok.is_(True))
                              .order_by(AuditAnchoring.id.desc()).limit(1)).first()
    return (row.seq, row.hash) if row is not None else None


def _created(client: Any, variable: Any) -> bool:
    """Create the variable; False if it exists already."""
    from prefect.exceptions import ObjectAlreadyExists

    try:
        client.create_variable(variable)
    except ObjectAlreadyExists:
        return False
    return True


def anchor(incident_id: str) -> Anchored | None:
    """Anchor the incident's current signed head in Prefect. Never raises; None if there is no
    signed head to anchor (an incident recorded before signed heads, or an unknown one)."""
    with _TURNS[hash(incident_id) % len(_TURNS)]:
        return _anchor(incident_id)


def _anchor(incident_id: str) -> Anchored | None:
    try:
        made = _document(incident_id)
    except Exception as exc:  # noqa: BLE001  anchor() never raises (documented): the caller's run or report goes on
        LOGGER.warning("audit head of %s not anchored: %s: %s", incident_id, type(exc).__name__, _scrub(str(exc)))
        return None
    if made is None:
        return None
    document, tag = made
    name = variable_name(document["uid"])
    seq, digest = document["seq"], document["hash"]
    try:
        if not _api_url():
            raise AnchorsUnavailable("no Prefect API is configured (PREFECT_API_URL is unset)")
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import VariableCreate, VariableUpdate
        from prefect.exceptions import ObjectAlreadyExists

        last = _last_anchored(incident_id)
        if last == (seq, digest):
            return Anchored(incident_id, seq, name, True)  # this very head is anchored there (a republish)
        with get_client(sync_client=True) as client:
            # An incident never anchored before (its first run, at its first report) has no variable yet:
            # create it without reading first, one API call fewer for every new incident. If it is there
            # after all (anchored by a process whose record was lost), the read and checks below decide.
            if last is None and _created(client, VariableCreate(name=name, value=document, tags=[tag])):
                _record(incident_id, seq, digest, name, True, None)
                return Anchored(incident_id, seq, name, True)
            existing = client.read_variable_by_name(name)
            held = existing.value if existing is not None and isinstance(existing.value, dict) else None
            if held is not None and held.get("uid") == document["uid"] and int(held.get("seq") or 0) >= seq:
                if (held.get("seq"), held.get("hash")) == (seq, digest):
                    return Anchored(incident_id, seq, name, True)  # already anchored there
                if int(held.get("seq") or 0) > seq:  # never move an anchor back
                    error = f"Prefect holds head #{held.get('seq')} already; not moved back to #{seq}"
                    _record(incident_id, seq, digest, name, False, error)
                    return Anchored(incident_id, seq, name, False, error)
            if existing is None:
                try:
                    client.create_variable(VariableCreate(name=name, value=document, tags=[tag]))
                except ObjectAlreadyExists:
                    client.update_variable(VariableUpdate(name=name, value=document, tags=[tag]))
            else:
                client.update_variable(VariableUpdate(name=name, value=document, tags=[tag]))
    except Exception as exc:  # noqa: BLE001  Prefect unreachable or refusing: anchor() never raises, verify will say so
        error = _scrub(f"{type(exc).__name__}: {exc}")
        LOGGER.warning("audit head #%s of %s not anchored in Prefect: %s", seq, incident_id, error)
        _record(incident_id, seq, digest, name, False, error)
        return Anchored(incident_id, seq, name, False, error)
    _record(incident_id, seq, digest, name, True, None)
    return Anchored(incident_id, seq, name, True)


def anchor_if_published(incident_id: str) -> Anchored | None:
    """Anchor again if a head of this incident was anchored (published) before: its head moved
    after publication (a late acknowledgement…). Never raises."""
    try:
        with session_scope() as session:
            published = session.scalars(select(AuditAnchoring.id).where(AuditAnchoring.incident_id == incident_id)
                                        .limit(1)).first()
    except Exception:
        LOGGER.exception("could not read the anchoring record of %s", incident_id)
        return None
    return anchor(incident_id) if published is not None else None


class PrefectAnchors:
    """Reads anchors from the Prefect API (records.audit.AnchorSource)."""

    def _client(self) -> Any:
        if not _api_url():
            raise AnchorsUnavailable("no Prefect API is configured (PREFECT_API_URL is unset)")
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def lookup(self, uid: str) -> Anchor | None:
        name = variable_name(uid)
        try:
            with self._client() as client:
                found = client.read_variable_by_name(name)
        except AnchorsUnavailable:
            raise
        except Exception as exc:
            raise AnchorsUnavailable(_scrub(f"{type(exc).__name__}: {exc}")) from exc
        if found is None:
            return None
        return Anchor(name, found.value if isinstance(found.value, dict) else {"value": found.value})

    def installation_anchors(self, installation: str) -> list[Anchor]:
        anchors: list[Anchor] = []
        try:
            with self._client() as client:
                offset = 0
                while True:
                    response = client.request("POST", "/variables/filter", json={
                        "variables": {"tags": {"all_": [installation_tag(installation)]}},
                        "limit": PAGE, "offset": offset})
                    response.raise_for_status()
                    page = response.json()
                    anchors += [Anchor(v["name"], v["value"]) for v in page if isinstance(v.get("value"), dict)]
                    if len(page) < PAGE:
                        return anchors
                    offset += PAGE
        except AnchorsUnavailable:
            raise
        except Exception as exc:
            raise AnchorsUnavailable(_scrub(f"{type(exc).__name__}: {exc}")) from exc

