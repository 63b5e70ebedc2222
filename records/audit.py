"""The audit chain: each incident's timeline events form a SHA-256 hash chain.

Every event stores `hash = sha256(prev_hash + canonical JSON of the event)`, where
`prev_hash` is the hash of the incident's previous event (GENESIS for the first).
Changing, deleting, inserting or reordering an event breaks the chain from that
point on, so `verify` finds it even when the database's append-only triggers
have been dropped.

A chain alone cannot show that events were cut off its end, or appended with
correctly recomputed hashes: the head (last seq and hash) is therefore also
kept in `audit_heads`, printed in every report, published as a Prefect artifact
and written by `firebreak export`. Compare a copy kept outside the database
(`firebreak audit verify --expect-head`) to rule out a rewrite of the whole chain.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from sqlalchemy import String, Integer, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from records.db import session_scope
from records.models import Base, TimelineEvent

GENESIS = "0" * 64

#: The event fields that are hashed, in a fixed order. Changing this list changes
#: every hash: it is the chain's format, version 1.
HASHED_FIELDS = ("incident_id", "seq", "step_id", "action", "attempt", "phase", "status", "actor", "summary",
                 "error", "idempotency_key", "data", "flow_run_id", "task_run_id", "at")


class AuditHead(Base):
    """The last event of each incident's chain, kept beside the chain to catch a cut-off tail."""

    __tablename__ = "audit_heads"

    incident_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


def canonical_at(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("naive datetime in the audit chain")
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def normalise_data(data: Any) -> Any:
    """The value as it reads back from the database's JSON column (tuples become lists...)."""
    return json.loads(json.dumps(data if data is not None else {}))


def canonical_json(fields: dict[str, Any], seq: int | None = None) -> str:
    """Canonical JSON of an event: fixed keys, sorted, no whitespace, UTF-8, UTC microsecond times."""
    document = {name: fields.get(name) for name in HASHED_FIELDS}
    if seq is not None:
        document["seq"] = seq
    document["at"] = canonical_at(fields["at"])
    document["data"] = normalise_data(fields.get("data"))
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_fields(event: Any) -> dict[str, Any]:
    return {name: getattr(event, name) for name in HASHED_FIELDS}


def chain_hash(prev_hash: str, fields: dict[str, Any], seq: int | None = None) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields, seq)).encode("utf-8")).hexdigest()


def seal(session: Session, event: TimelineEvent, prev_hash: str) -> None:
    """Give a new (not yet flushed) event its place in the chain and move the head.
    The caller holds the incident's append lock (records.incidents._append)."""
    event.prev_hash = prev_hash
    event.hash = chain_hash(prev_hash, event_fields(event))
    head = session.get(AuditHead, event.incident_id)
    if head is None:
        session.add(AuditHead(incident_id=event.incident_id, seq=event.seq, hash=event.hash))
    else:
        head.seq, head.hash = event.seq, event.hash


Problem = Literal["modified", "deleted", "inserted", "reordered"]


@dataclass(frozen=True)
class Break:
    problem: Problem
    seq: int  # the first broken event, by its current position
    detail: str


@dataclass(frozen=True)
class Verification:
    incident_id: str
    events: int
    head_seq: int
    head_hash: str
    broken: Break | None

    @property
    def intact(self) -> bool:
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
            return chain_hash(self.prev_hash, self.fields, seq)
        except (TypeError, ValueError):
            return None  # a field no longer serialises: certainly not what was hashed

    def verifies_at(self, seq: int) -> bool:
        return self.hash is not None and self.digest(seq) == self.hash


def verify_rows(incident_id: str, rows: list[ChainRow], anchor: tuple[int, str] | None) -> Verification:
    """Walk the chain in seq order; on the first break, say what kind of tampering explains it."""
    previous, expected_seq = GENESIS, 1
    for index, row in enumerate(rows):
        if row.seq == expected_seq and row.prev_hash == previous and row.verifies_at(row.seq):
            previous, expected_seq = row.hash or "", expected_seq + 1
            continue
        broken = _classify(rows, index, previous, expected_seq)
        return Verification(incident_id, len(rows), expected_seq - 1, previous, broken)
    head_seq = rows[-1].seq if rows else 0
    broken = None
    if anchor is not None and (anchor[0], anchor[1]) != (head_seq, previous):
        recorded_seq, recorded_hash = anchor
        if recorded_seq > head_seq:
            broken = Break("deleted", head_seq + 1,
                           f"events #{head_seq + 1}–#{recorded_seq} are missing: the recorded head is #{recorded_seq}")
        elif recorded_seq < head_seq:
            broken = Break("inserted", recorded_seq + 1,
                           f"event #{recorded_seq + 1} was added after the recorded head #{recorded_seq}")
        else:
            broken = Break("modified", head_seq, f"event #{head_seq} does not match the recorded head hash "
                                                 f"{recorded_hash[:16]}…")
    elif anchor is None and rows:
        broken = Break("deleted", head_seq, "the chain has no recorded head (audit_heads row missing)")
    return Verification(incident_id, len(rows), head_seq, previous, broken)


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
        return Break("modified", row.seq, f"event #{row.seq} does not match its hash: a field was changed")
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
        return Break("modified", rows[index - 1].seq,
                     f"event #{rows[index - 1].seq} was changed and re-hashed: event #{row.seq} links to its "
                     f"original hash")
    return Break("modified", row.seq, f"event #{row.seq} does not link to the start of the chain")


def _load(session: Session, incident_id: str) -> tuple[list[ChainRow], tuple[int, str] | None]:
    events = session.scalars(select(TimelineEvent).where(TimelineEvent.incident_id == incident_id)
                             .order_by(TimelineEvent.seq)).all()
    rows = [ChainRow(e.seq, e.prev_hash, e.hash, event_fields(e)) for e in events]
    head = session.get(AuditHead, incident_id)
    return rows, ((head.seq, head.hash) if head else None)


def verify(incident_id: str) -> Verification:
    with session_scope() as session:
        rows, anchor = _load(session, incident_id)
    return verify_rows(incident_id, rows, anchor)


def head(incident_id: str) -> tuple[int, str] | None:
    """The recorded head (seq, hash) of an incident's chain."""
    with session_scope() as session:
        found = session.get(AuditHead, incident_id)
        return (found.seq, found.hash) if found else None


def verify_all() -> list[Verification]:
    from records.models import Incident

    with session_scope() as session:
        ids = list(session.scalars(select(Incident.id).order_by(Incident.created_at)))
    return [verify(incident_id) for incident_id in ids]
