"""The audit trail: each incident's timeline events form a SHA-256 hash chain, and
every head of that chain is signed with a key kept outside the records database.

Every event stores `hash = sha256(prev_hash + canonical JSON of the event)`, where
`prev_hash` is the hash of the incident's previous event (GENESIS for the first).
Changing, deleting, inserting or reordering an event breaks the chain from that
point on, so `verify` finds it even when the database's append-only triggers
have been dropped.

A chain alone cannot show that events were cut off its end, or that the whole
chain was rewritten with recomputed hashes. So, with every event:

- a new head row (seq, hash) is inserted into `audit_heads` (append-only: a head
  moves by inserting, never by updating) with an HMAC-SHA256 signature under the
  audit key (records.audit_key), bound to the incident's uid. Someone with the
  database but not the key cannot sign a rewritten chain, nor an event added
  behind the service's back;
- an incident's first event also gives it a global seal (`audit_incident_seals`):
  a signed, monotonically increasing number across all incidents, so a deleted
  incident leaves a gap, like the per-year incident numbers it also checks;
- published heads are anchored in Prefect's own database (records.audit_anchor:
  one Prefect Variable per incident, named from its uid), so a tail cut back to an
  earlier, genuinely signed head still shows.

`check` weighs all of it and names the kind of tampering (see KINDS); a head that
was legitimately extended after it was published (a review, a late
acknowledgement: every later event carries its own signed head) verifies as
"extended since #seq", not as broken.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from firebreak.errors import StoreUnavailable
from records.audit_key import AuditKey, AuditKeyMissing, load_key
from records.db import session_scope
from records.models import Base, Incident, Sequence, TimelineEvent, utcnow

LOGGER = logging.getLogger("firebreak.audit")

GENESIS = "0" * 64

#: The event fields that are hashed, in a fixed order. Changing this list changes
#: every hash: it is the chain's format, version 1.
HASHED_FIELDS = ("incident_id", "seq", "step_id", "action", "attempt", "phase", "status", "actor", "summary",
                 "error", "idempotency_key", "data", "flow_run_id", "task_run_id", "at")

#: The named counter (records.models.Sequence) of global seal numbers.
SEAL_COUNTER = "audit-seal"


class AuditInstallation(Base):
    """This records database's identity, made by migration 0006. Every global seal is signed
    together with it, and the Prefect anchors are tagged with it."""

    __tablename__ = "audit_installation"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditHead(Base):
    """One position the head of an incident's chain has held: one row per event, signed.
    Append-only (migration 0006): the head moves by inserting a new row. Rows from before
    migration 0006 carry no signature (their incident's seal says up to which seq)."""

    __tablename__ = "audit_heads"
    __table_args__ = (Index("ix_audit_heads_incident_seq", "incident_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str | None] = mapped_column(String(64))  # HMAC-SHA256 of head_payload
    key_id: Mapped[str | None] = mapped_column(String(16))
    sealed_at: Mapped[datetime | None]


class IncidentSeal(Base):
    """An incident's global seal: a number from one counter across all incidents, signed with
    the installation, the incident's id and uid. Append-only (migration 0006)."""

    __tablename__ = "audit_incident_seals"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    incident_id: Mapped[str] = mapped_column(String(32), unique=True)
    uid: Mapped[str] = mapped_column(String(32))
    #: Events up to this seq were recorded before signed heads (migration 0006) and are proven
    #: by the chain and the head signed at this seq; 0 for every incident opened since.
    legacy_seq: Mapped[int] = mapped_column(Integer, default=0)
    signature: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(16))
    sealed_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditAnchoring(Base):
    """Each attempt to anchor a head in Prefect (records.audit_anchor), whether it worked or
    not: what `verify` says when Prefect holds no anchor. Append-only (migration 0006)."""

    __tablename__ = "audit_anchors"
    __table_args__ = (Index("ix_audit_anchors_incident", "incident_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    variable: Mapped[str] = mapped_column(String(255))
    ok: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


def canonical_at(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("naive datetime in the audit chain")
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def normalise_data(data: Any) -> Any:
    """The value as it reads back from the database's JSON column (tuples become lists...)."""
    return json.loads(json.dumps(data if data is not None else {}))


def canonical_json(fields: dict[str, Any], seq: int | None = None, *, data_read_back: bool = False) -> str:
    """Canonical JSON of an event: fixed keys, sorted, no whitespace, UTF-8, UTC microsecond times.
    data_read_back: `data` was just read from the JSON column, so it is already what normalise_data
    makes of it (verifying skips that JSON round trip; the result is the same)."""
    document = {name: fields.get(name) for name in HASHED_FIELDS}
    if seq is not None:
        document["seq"] = seq
    document["at"] = canonical_at(fields["at"])
    data = fields.get("data")
    document["data"] = (data if data is not None else {}) if data_read_back else normalise_data(data)
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_fields(event: Any) -> dict[str, Any]:
    return {name: getattr(event, name) for name in HASHED_FIELDS}


def chain_hash(prev_hash: str, fields: dict[str, Any], seq: int | None = None, *,
               data_read_back: bool = False) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields, seq, data_read_back=data_read_back))
                          .encode("utf-8")).hexdigest()


def head_payload(uid: str, incident_id: str, seq: int, digest: str) -> str:
    """What a head's signature covers: the head, bound to its incident's uid."""
    return f"firebreak-audit-head/1\n{uid}\n{incident_id}\n{seq}\n{digest}"


def seal_payload(installation: str, number: int, incident_id: str, uid: str, legacy_seq: int) -> str:
    """What an incident's global seal's signature covers."""
    return f"firebreak-audit-seal/1\n{installation}\n{number}\n{incident_id}\n{uid}\n{legacy_seq}"


def installation_id(session: Session) -> str:
    """This records database's installation id (made by migration 0006). Missing (someone deleted
    it), a new one is made so recording goes on; every existing seal then fails to verify."""
    found = session.scalars(select(AuditInstallation.id).order_by(AuditInstallation.created_at).limit(1)).first()
    if found is None:
        import uuid

        LOGGER.warning("audit_installation is empty: a new installation id is recorded; seals made under "
                       "the old one will not verify")
        found = uuid.uuid4().hex
        session.add(AuditInstallation(id=found, created_at=utcnow()))
        session.flush()
    return found


def _signed_head(key: AuditKey, incident: Incident, seq: int, digest: str) -> AuditHead:
    return AuditHead(incident_id=incident.id, seq=seq, hash=digest, key_id=key.key_id, sealed_at=utcnow(),
                     signature=key.sign(head_payload(incident.uid, incident.id, seq, digest)))


def _seal_incident(session: Session, key: AuditKey, incident: Incident, legacy_seq: int) -> IncidentSeal:
    from records.incidents import _next_number  # records.incidents imports this module

    installation = installation_id(session)
    number = _next_number(session, SEAL_COUNTER)
    row = IncidentSeal(number=number, incident_id=incident.id, uid=incident.uid, legacy_seq=legacy_seq,
                       key_id=key.key_id, sealed_at=utcnow(),
                       signature=key.sign(seal_payload(installation, number, incident.id, incident.uid, legacy_seq)))
    session.add(row)
    return row


def seal(session: Session, event: TimelineEvent, prev_hash: str) -> None:
    """Give a new (not yet flushed) event its place in the chain and move the head: a new
    signed head row; the incident's first event also takes its global seal.
    The caller holds the incident's append lock (records.incidents._append)."""
    event.prev_hash = prev_hash
    event.hash = chain_hash(prev_hash, event_fields(event))
    key = load_key()
    incident = session.get(Incident, event.incident_id)
    if incident is None:
        raise LookupError(f"no incident {event.incident_id!r} to seal an event of")
    if incident.uid is None:
        session.flush()  # the uid's default is given at flush
    if event.seq == 1 and _seal_number_of(session, incident.id) is None:
        _seal_incident(session, key, incident, legacy_seq=0)
    session.add(_signed_head(key, incident, event.seq, event.hash))


def _seal_number_of(session: Session, incident_id: str) -> int | None:
    return session.scalars(select(IncidentSeal.number).where(IncidentSeal.incident_id == incident_id)).first()


def adopt_legacy(connection: Connection) -> int:
    """Seal the incidents recorded before migration 0006, in the order they were opened: each
    gets its global seal and a signed head at the head its chain had (records.db.migrate calls
    this in the transaction that applies 0006, and only then). Returns how many."""
    with Session(bind=connection) as session:
        key = load_key()
        unsealed = session.scalars(select(Incident).where(Incident.id.not_in(select(IncidentSeal.incident_id)))
                                   .order_by(Incident.created_at, Incident.id)).all()
        for incident in unsealed:
            last = session.scalars(select(AuditHead).where(AuditHead.incident_id == incident.id)
                                   .order_by(AuditHead.seq.desc(), AuditHead.id.desc()).limit(1)).first()
            _seal_incident(session, key, incident, legacy_seq=last.seq if last else 0)
            if last is not None:
                session.add(_signed_head(key, incident, last.seq, last.hash))
        session.flush()
        return len(unsealed)


Problem = Literal["edited", "inserted", "deleted", "reordered", "truncated", "rewritten", "incident-deleted",
                  "signature-invalid", "anchor-mismatch"]

#: What each kind of tampering is called when it is reported.
KINDS: dict[str, str] = {
    "edited": "edited event",
    "inserted": "inserted event",
    "deleted": "deleted event",
    "reordered": "reordered",
    "truncated": "tail truncated",
    "rewritten": "whole chain rewritten",
    "incident-deleted": "incident deleted",
    "signature-invalid": "head signature invalid",
    "anchor-mismatch": "anchor mismatch",
}

#: Verification.status values. `intact` and `extended` are proven by the anchor (or an expected
#: head given by hand); `not-anchored` and `anchor-unchecked` found no tampering in the database
#: but have no copy outside it to compare with; `broken` found tampering.
INTACT, EXTENDED, NOT_ANCHORED, UNCHECKED, BROKEN = "intact", "extended", "not-anchored", "anchor-unchecked", "broken"


@dataclass(frozen=True)
class Break:
    problem: Problem
    seq: int  # the first broken event, by its current position (0: not about one event)
    detail: str

    @property
    def kind(self) -> str:
        if self.problem == "rewritten" and self.seq > 1:
            return "chain rewritten"  # from a later event on: the detail names where
        return KINDS[self.problem]


@dataclass(frozen=True)
class Verification:
    incident_id: str
    events: int
    head_seq: int
    head_hash: str
    broken: Break | None
    status: str = UNCHECKED
    #: With status `extended`: the seq of the anchored (or expected) head the chain has grown from.
    since: int | None = None
    #: How the head was proven, or why it could not be (not anchored, Prefect unreachable…).
    note: str = ""

    @property
    def intact(self) -> bool:
        """No tampering found (whether or not an outside anchor was compared: see `status`)."""
        return self.broken is None


@dataclass(frozen=True)
class ChainRow:
    seq: int
    prev_hash: str | None
    hash: str | None
    fields: dict[str, Any]

    def digest(self, seq: int | None = None) -> str | None:
        if self.prev_hash is None:
            return None
        try:
            return chain_hash(self.prev_hash, self.fields, seq, data_read_back=True)  # rows come from the database
        except (TypeError, ValueError):
            return None  # a field no longer serialises: certainly not what was hashed

    def verifies_at(self, seq: int) -> bool:
        return self.hash is not None and self.digest(seq) == self.hash


@dataclass(frozen=True)
class HeadRow:
    seq: int
    hash: str
    signature: str | None
    key_id: str | None


@dataclass(frozen=True)
class SealRow:
    number: int
    incident_id: str
    uid: str
    legacy_seq: int
    signature: str | None
    key_id: str | None


@dataclass(frozen=True)
class AnchoringRow:
    seq: int
    hash: str
    variable: str
    ok: bool
    error: str | None
    at: datetime


@dataclass
class Evidence:
    """Everything the records database holds about one incident's chain."""

    incident_id: str
    uid: str | None
    rows: list[ChainRow]
    heads: list[HeadRow] = field(default_factory=list)
    seal: SealRow | None = None
    installation: str | None = None
    anchorings: list[AnchoringRow] = field(default_factory=list)


def anchor_payload(document: dict[str, Any]) -> str:
    body = {k: v for k, v in document.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Anchor:
    """A head anchored outside the records database (a Prefect Variable, records.audit_anchor)."""

    name: str
    document: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.document.get("seq") or 0)

    @property
    def hash(self) -> str:
        return str(self.document.get("hash") or "")

    @property
    def uid(self) -> str:
        return str(self.document.get("uid") or "")

    @property
    def incident_id(self) -> str:
        return str(self.document.get("incident_id") or "?")

    def problem(self, evidence: Evidence, key: AuditKey) -> str | None:
        """Why this anchor cannot be the one made for `evidence`'s incident, or None."""
        doc = self.document
        if not key.verifies(anchor_payload(doc), doc.get("signature"), doc.get("key_id")):
            return f"the anchor {self.name} in Prefect does not verify under this installation's key"
        if doc.get("installation") != evidence.installation:
            return (f"the anchor {self.name} was made by installation {doc.get('installation')}; the records say "
                    f"{evidence.installation}")
        if (doc.get("incident_id"), doc.get("uid")) != (evidence.incident_id, evidence.uid):
            return f"the anchor {self.name} is of {doc.get('incident_id')} (uid {doc.get('uid')}), not this incident"
        if evidence.seal is not None and doc.get("seal_number") != evidence.seal.number:
            return (f"the anchor {self.name} records global seal #{doc.get('seal_number')}; the records now say "
                    f"#{evidence.seal.number} (the incident was sealed again)")
        if not key.verifies(head_payload(self.uid, self.incident_id, self.seq, self.hash), doc.get("head_signature")):
            return f"the head #{self.seq} in the anchor {self.name} does not carry a valid signature"
        return None


class _Unchecked:
    def __repr__(self) -> str:
        return "UNCHECKED_ANCHOR"


#: `check(anchor=…)` when Prefect was not asked (None: asked, and it holds no anchor).
UNCHECKED_ANCHOR = _Unchecked()


def _walk(rows: list[ChainRow]) -> tuple[Break | None, str, int]:
    """Walk the chain in seq order; on the first break, say what kind of tampering explains it.
    Returns (break, hash of the last good event, the seq expected next)."""
    previous, expected_seq = GENESIS, 1
    for index, row in enumerate(rows):
        if row.seq == expected_seq and row.prev_hash == previous and row.verifies_at(row.seq):
            previous, expected_seq = row.hash or "", expected_seq + 1
            continue
        return _classify(rows, index, previous, expected_seq), previous, expected_seq
    return None, previous, expected_seq


#: When two findings point at the same event, the one that explains the other wins.
_PRIORITY = ("rewritten", "truncated", "inserted", "signature-invalid", "anchor-mismatch")


def check(evidence: Evidence, key: AuditKey | None, *, anchor: Anchor | None | _Unchecked = UNCHECKED_ANCHOR,
          anchor_note: str = "", expect_head: str | None = None) -> Verification:
    """Verify one incident: its chain, its global seal, every signed head, the anchor (when
    Prefect was asked) and an expected head kept elsewhere (e.g. printed in a report)."""
    rows = evidence.rows
    walked, previous, expected = _walk(rows)
    if walked is not None:
        return Verification(evidence.incident_id, len(rows), expected - 1, previous, walked, BROKEN)
    last = rows[-1].seq if rows else 0
    chain = {row.seq: row.hash or "" for row in rows}

    def broken(problem: Break) -> Verification:
        return Verification(evidence.incident_id, len(rows), last, previous, problem, BROKEN)

    if key is None:
        return broken(Break("signature-invalid", last, "no audit key to check the signatures with "
                                                       "(FIREBREAK_AUDIT_KEY unset and FIREBREAK_HOME/audit-key "
                                                       "missing)"))
    seal_row = evidence.seal
    if seal_row is None:
        return broken(Break("signature-invalid", 1 if rows else 0,
                            "the incident has no global seal: its audit_incident_seals row is missing"))
    if evidence.installation is None or not key.verifies(
            seal_payload(evidence.installation, seal_row.number, evidence.incident_id, evidence.uid or "",
                         seal_row.legacy_seq), seal_row.signature, seal_row.key_id):
        if seal_row.key_id and seal_row.key_id != key.key_id:
            why = f"it was signed with another key (key id {seal_row.key_id}; this installation's is {key.key_id})"
        else:
            why = "its number, the incident's uid, its legacy mark or the installation id was changed"
        return broken(Break("signature-invalid", 1 if rows else 0,
                            f"the global seal #{seal_row.number} of {evidence.incident_id} does not verify: {why}"))

    legacy = seal_row.legacy_seq
    findings: list[Break] = []
    signed: dict[int, set[str]] = {}
    trusted: list[tuple[int, str, str]] = []  # (seq, hash, where it is recorded)
    for head_row in evidence.heads:
        if head_row.signature is None and head_row.seq <= legacy:
            continue  # recorded before signed heads; the head signed at legacy_seq covers it
        if key.verifies(head_payload(evidence.uid or "", evidence.incident_id, head_row.seq, head_row.hash),
                        head_row.signature, head_row.key_id):
            signed.setdefault(head_row.seq, set()).add(head_row.hash)
            trusted.append((head_row.seq, head_row.hash, "a signed head in audit_heads"))
        elif head_row.signature and head_row.key_id and head_row.key_id != key.key_id:
            findings.append(Break("signature-invalid", head_row.seq,
                                  f"the head of event #{head_row.seq} was signed with another key (key id "
                                  f"{head_row.key_id}; this installation's is {key.key_id})"))
        elif chain.get(head_row.seq) == head_row.hash:
            findings.append(Break("rewritten", head_row.seq,
                                  f"event #{head_row.seq} was re-hashed and its head in audit_heads changed to match, "
                                  f"without the key: the signature is of the original"))
        else:
            findings.append(Break("signature-invalid", head_row.seq,
                                  f"the head recorded for event #{head_row.seq} does not verify: it was changed in "
                                  f"audit_heads"))
    if isinstance(anchor, Anchor):
        problem = anchor.problem(evidence, key)
        if problem is not None:
            findings.append(Break("anchor-mismatch", min(anchor.seq, last) if last else 0, problem))
        else:
            trusted.append((anchor.seq, anchor.hash, f"the Prefect anchor {anchor.name}"))
    top_seq, top_where = max(((seq, where) for seq, _, where in trusted), default=(0, ""))
    for seq, digest, where in sorted(trusted):
        if seq <= last and chain.get(seq) != digest:
            rewritten_from = ("the whole chain was rewritten with recomputed hashes: " if seq <= max(legacy, 1)
                              else f"events from #{seq} on were rewritten with recomputed hashes: ")
            findings.append(Break("rewritten", seq, rewritten_from + f"event #{seq} is not the one {where} records"))
            break
    if top_seq > last:
        findings.append(Break("truncated", last + 1, f"events #{last + 1}–#{top_seq} are missing: {top_where} "
                                                     f"records the head #{top_seq}" if top_seq > last + 1 else
                              f"event #{last + 1} is missing: {top_where} records the head #{top_seq}"))
    for row in rows:
        if row.seq < max(legacy, 1) or (row.hash or "") in signed.get(row.seq, ()):
            continue
        if row.seq > top_seq:
            findings.append(Break("inserted", row.seq, f"event #{row.seq} has no signed head: it was added behind "
                                                       f"the service's back"))
        else:
            findings.append(Break("signature-invalid", row.seq, f"the signed head of event #{row.seq} is missing "
                                                                f"from audit_heads"))
        break
    if findings:
        return broken(min(findings, key=lambda b: (b.seq, _PRIORITY.index(b.problem)
                                                   if b.problem in _PRIORITY else len(_PRIORITY))))

    status, since, note = _anchor_status(evidence, anchor, anchor_note, last)
    if status == BROKEN:
        return broken(Break("anchor-mismatch", last, note))
    if expect_head:
        wanted = expect_head.strip().lower()
        found = next((seq for seq, digest in chain.items() if digest == wanted), None)
        if found is None and not (wanted == GENESIS and not rows):
            return broken(Break("anchor-mismatch", last,
                                f"the expected head {wanted[:16]}… is nowhere in the chain: the chain was "
                                f"rewritten or cut short before it"))
        found = found or 0
        where = f"the expected head is #{found}"
        if found < last:
            status, since = EXTENDED, found
        elif status in (NOT_ANCHORED, UNCHECKED):
            status = INTACT
        note = f"{where}; {note}" if note else where
    return Verification(evidence.incident_id, len(rows), last, previous, None, status, since, note)


def _anchor_status(evidence: Evidence, anchor: Anchor | None | _Unchecked, anchor_note: str,
                   last: int) -> tuple[str, int | None, str]:
    if isinstance(anchor, _Unchecked):
        return UNCHECKED, None, anchor_note or "the Prefect anchor was not checked"
    failures = [a for a in evidence.anchorings if not a.ok]
    if anchor is None:
        done = [a for a in evidence.anchorings if a.ok]
        if done:
            latest = done[-1]
            return BROKEN, None, (f"head #{latest.seq} was recorded as anchored in Prefect ({latest.variable}, "
                                  f"{latest.at:%Y-%m-%d %H:%M:%S}Z) but Prefect holds no such anchor")
        if failures:
            failed = failures[-1]
            return NOT_ANCHORED, None, (f"anchoring head #{failed.seq} in Prefect failed at "
                                        f"{failed.at:%Y-%m-%d %H:%M:%S}Z: {failed.error}")
        return NOT_ANCHORED, None, "never anchored in Prefect (no report of it published yet)"
    if anchor.seq >= last:
        return INTACT, None, f"anchored in Prefect ({anchor.name}) at head #{anchor.seq}"
    later_failure = next((a for a in reversed(failures) if a.seq > anchor.seq), None)
    if later_failure is not None:
        return NOT_ANCHORED, anchor.seq, (f"head #{last} is not anchored: anchoring head #{later_failure.seq} failed "
                                          f"at {later_failure.at:%Y-%m-%d %H:%M:%S}Z: {later_failure.error}; "
                                          f"anchored in Prefect ({anchor.name}) at #{anchor.seq}")
    return EXTENDED, anchor.seq, (f"anchored in Prefect ({anchor.name}) at #{anchor.seq}; events "
                                  f"#{anchor.seq + 1}–#{last} each carry a signed head")


def _recorded_seq(row: ChainRow, rows: list[ChainRow], by_hash: dict[str, int]) -> int | None:
    """The seq this event had when it was sealed (hashes include the seq)."""
    if row.verifies_at(row.seq):
        return row.seq
    if row.prev_hash is None or row.hash is None:
        return None
    if row.prev_hash == GENESIS and row.verifies_at(1):
        return 1
    if row.prev_hash in by_hash:
        candidate = rows[by_hash[row.prev_hash]].seq + 1
        if row.verifies_at(candidate):
            return candidate
    # Its predecessor is gone too: try every position the incident could have had.
    limit = max((r.seq for r in rows), default=0) + len(rows) + 1
    return next((s for s in range(1, limit + 1) if row.verifies_at(s)), None)


def _classify(rows: list[ChainRow], index: int, previous: str, expected_seq: int) -> Break:
    row = rows[index]
    by_hash = {r.hash: i for i, r in enumerate(rows) if r.hash}
    recorded = _recorded_seq(row, rows, by_hash)
    # Where is the event that really came next?
    successor = next((j for j in range(index, len(rows))
                      if rows[j].prev_hash == previous and rows[j].verifies_at(expected_seq)), None)

    if recorded is None:
        if successor is not None and successor > index:
            return Break("inserted", row.seq, f"event #{row.seq} is not part of the recorded chain "
                                              f"(the event recorded as #{expected_seq} follows it)")
        return Break("edited", row.seq, f"event #{row.seq} does not match its hash: a field was changed")
    if successor is not None and successor > index:
        if row.prev_hash in by_hash or row.prev_hash == GENESIS:
            return Break("reordered", row.seq, f"event #{row.seq} was recorded as #{recorded}; "
                                               f"the event recorded as #{expected_seq} is now #{rows[successor].seq}")
        return Break("inserted", row.seq, f"event #{row.seq} is not part of the recorded chain")
    if recorded > expected_seq:
        return Break("deleted", expected_seq,
                     f"events #{expected_seq}–#{recorded - 1} are missing before the event recorded as #{recorded}"
                     if recorded - 1 > expected_seq else
                     f"event #{expected_seq} is missing before the event recorded as #{recorded}")
    if recorded < expected_seq:
        predecessor = by_hash.get(row.prev_hash or "")
        if predecessor is not None and predecessor < index - 1:
            first = rows[predecessor + 1].seq
            return Break("inserted", first, f"event #{first} is not part of the recorded chain "
                                            f"(it sits between #{rows[predecessor].seq} and the event recorded as "
                                            f"#{recorded})")
        return Break("reordered", row.seq, f"event #{row.seq} was recorded as #{recorded}")
    # Right position, but it links to a predecessor that is no longer there as sealed:
    # the previous event was rewritten and given a fresh hash.
    if index > 0:
        return Break("edited", rows[index - 1].seq,
                     f"event #{rows[index - 1].seq} was changed and re-hashed: event #{row.seq} links to its "
                     f"original hash")
    return Break("edited", row.seq, f"event #{row.seq} does not link to the start of the chain")


class AnchorsUnavailable(StoreUnavailable, RuntimeError):
    """The anchors could not be read (Prefect unreachable or not configured); the message says why."""


class AnchorSource(Protocol):
    """Where anchors are read from (records.audit_anchor.PrefectAnchors)."""

    def lookup(self, uid: str) -> Anchor | None: ...

    def installation_anchors(self, installation: str) -> list[Anchor]: ...


def load_evidence(session: Session, incident_id: str) -> Evidence:
    """The chain, heads, seal and anchoring attempts of one incident, as the database holds them."""
    uid = session.scalars(select(Incident.uid).where(Incident.id == incident_id)).first()
    events = session.scalars(select(TimelineEvent).where(TimelineEvent.incident_id == incident_id)
                             .order_by(TimelineEvent.seq)).all()
    rows = [ChainRow(e.seq, e.prev_hash, e.hash, event_fields(e)) for e in events]
    heads = [HeadRow(*row) for row in session.execute(
        select(AuditHead.seq, AuditHead.hash, AuditHead.signature, AuditHead.key_id)
        .where(AuditHead.incident_id == incident_id).order_by(AuditHead.seq, AuditHead.id))]
    found = session.scalars(select(IncidentSeal).where(IncidentSeal.incident_id == incident_id)).first()
    seal_row = None if found is None else SealRow(found.number, found.incident_id, found.uid, found.legacy_seq,
                                                  found.signature, found.key_id)
    anchorings = [AnchoringRow(a.seq, a.hash, a.variable, a.ok, a.error, a.at) for a in session.scalars(
        select(AuditAnchoring).where(AuditAnchoring.incident_id == incident_id).order_by(AuditAnchoring.id))]
    return Evidence(incident_id, uid, rows, heads, seal_row, _installation_or_none(session), anchorings)


def _installation_or_none(session: Session) -> str | None:
    return session.scalars(select(AuditInstallation.id).order_by(AuditInstallation.created_at).limit(1)).first()


def current_key() -> AuditKey | None:
    """The key to verify with; None if there is none (it is never generated to verify)."""
    try:
        return load_key(create=False)
    except AuditKeyMissing:
        return None


def verify(incident_id: str, *, anchors: AnchorSource | None = None, expect_head: str | None = None) -> Verification:
    """Verify one incident from the records; with `anchors`, also against its anchor outside them."""
    with session_scope() as session:
        evidence = load_evidence(session, incident_id)
    anchor: Anchor | None | _Unchecked = UNCHECKED_ANCHOR
    note = ""
    if anchors is not None and evidence.uid:
        try:
            anchor = anchors.lookup(evidence.uid)
        except AnchorsUnavailable as exc:
            note = f"the Prefect anchor was not checked: {exc}"
    return check(evidence, current_key(), anchor=anchor, anchor_note=note, expect_head=expect_head)


def head(incident_id: str) -> tuple[int, str] | None:
    """The recorded head (seq, hash) of an incident's chain: its newest head row."""
    with session_scope() as session:
        found = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.incident_id == incident_id)
                                .order_by(AuditHead.seq.desc(), AuditHead.id.desc()).limit(1)).first()
        return (found.seq, found.hash) if found else None


def verify_all(*, anchors: AnchorSource | None = None) -> list[Verification]:
    """Every incident, then the incidents that are gone: gaps in the global seal numbers and in
    each year's incident numbers, seals and anchors whose incident is no longer recorded."""
    with session_scope() as session:
        present = [(incident_id, uid) for incident_id, uid in
                   session.execute(select(Incident.id, Incident.uid).order_by(Incident.created_at, Incident.id))]
        seals = [(number, incident_id) for number, incident_id in
                 session.execute(select(IncidentSeal.number, IncidentSeal.incident_id))]
        counters = {name: value for name, value in session.execute(select(Sequence.name, Sequence.value))}
        installation = _installation_or_none(session)
    by_uid: dict[str, Anchor] | None = None
    note = ""
    if anchors is not None:
        try:
            by_uid = {a.uid: a for a in anchors.installation_anchors(installation)} if installation else {}
        except AnchorsUnavailable as exc:
            note = f"the Prefect anchors were not checked: {exc}"
    key = current_key()
    results = []
    for incident_id, uid in present:
        with session_scope() as session:
            evidence = load_evidence(session, incident_id)
        anchor = UNCHECKED_ANCHOR if by_uid is None else by_uid.get(uid)
        results.append(check(evidence, key, anchor=anchor, anchor_note=note))
    results.extend(missing_incidents(present, seals, counters,
                                     None if by_uid is None else list(by_uid.values())))
    return results


_INCIDENT_ID = re.compile(r"^INC-(\d{4})-(\d+)$")


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for number in sorted(numbers):
        if spans and number == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], number)
        else:
            spans.append((number, number))
    return spans


def missing_incidents(present: list[tuple[str, str]], seals: list[tuple[int, str]], counters: dict[str, int],
                      anchors: list[Anchor] | None) -> list[Verification]:
    """Incidents deleted from the records, each as a broken Verification named by what is known of it."""
    ids = {incident_id for incident_id, _ in present}
    uids = {uid for _, uid in present}
    found: dict[str, list[str]] = {}

    def gone(label: str, detail: str) -> None:
        found.setdefault(label, []).append(detail)

    by_number = dict(seals)
    for number, incident_id in sorted(seals):
        if incident_id not in ids:
            gone(incident_id, f"{incident_id} (global seal #{number}) is gone from the records; its seal remains")
    for anchor in anchors or []:
        if anchor.uid not in uids:
            gone(anchor.incident_id, f"{anchor.incident_id} was anchored in Prefect ({anchor.name}) at head "
                                     f"#{anchor.seq} but is gone from the records")
    top = max([counters.get(SEAL_COUNTER, 0), *by_number], default=0)
    anchored_top, anchored_by = max(((int(a.document.get("sealed_through") or 0), a.incident_id)
                                     for a in anchors or []), default=(0, ""))
    missing = [n for n in range(1, max(top, anchored_top) + 1) if n not in by_number]
    for first, end in _ranges(missing):
        label = f"seal #{first}" if first == end else f"seals #{first}–#{end}"
        around = [f"after {by_number[first - 1]}" if first - 1 in by_number else "",
                  f"before {by_number[end + 1]}" if end + 1 in by_number else ""]
        where = " and ".join(part for part in around if part)
        why = (f"the anchor of {anchored_by} in Prefect saw global seals up to #{anchored_top}"
               if end > top else f"the global seal counter is at #{top}")
        gone(label, f"global {label} {'is' if first == end else 'are'} missing{' (' + where + ')' if where else ''}: "
                    f"an incident was deleted ({why})")
    years: dict[str, set[int]] = {}
    for incident_id in ids:
        matched = _INCIDENT_ID.match(incident_id)
        if matched:
            years.setdefault(matched.group(1), set()).add(int(matched.group(2)))
    for name in counters:
        if name.startswith("incident-") and name[9:].isdigit():
            years.setdefault(name[9:], set())
    for year, numbers in sorted(years.items()):
        counted = max([counters.get(f"incident-{year}", 0), *numbers])
        for number in range(1, counted + 1):
            if number not in numbers:
                gone(f"INC-{year}-{number:04d}", f"INC-{year}-{number:04d} is missing: the incident numbers of "
                                                 f"{year} run to {counted}")
    return [Verification(label, 0, 0, "", Break("incident-deleted", 0, "; ".join(details)), BROKEN)
            for label, details in found.items()]
