"""Signatures of accepted HMAC-signed intake requests, so a replayed request is refused.

A signature is recorded in the same transaction as the request's alerts
(records.alert_ingest), with the time after which the timestamp check alone refuses it
(`expires_at`: the signed timestamp plus the source's replay window). It is forgotten only
after that, so a request can never verify again once its signature is gone.

Two replicas recording the same signature at once: the insert skips a signature another
transaction holds (ON CONFLICT DO NOTHING on SQLite and PostgreSQL; a savepoint and the
unique violation elsewhere), waiting for that transaction on PostgreSQL; whichever inserted
it first accepts the request, the other refuses it as replayed (401), never a 500.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Index, String, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from firebreak.errors import Refused
from records.db import session_scope
from records.models import Base, utcnow


class SeenSignature(Base):
    """HMAC signatures already accepted, so a replayed request is refused."""

    __tablename__ = "intake_signatures"
    __table_args__ = (Index("ix_intake_signatures_expires_at", "expires_at"),)

    signature: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(60))
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The signed timestamp (the sender's clock).
    sent_at: Mapped[datetime]
    #: sent_at + the source's replay window: from then on the timestamp check refuses the request by
    #: itself, so the row may be forgotten.
    expires_at: Mapped[datetime]


class SignatureReplayed(Refused):
    """This signature was already accepted once."""


class Signed(Protocol):
    """A request as far as replay detection cares: its signature (None: unsigned), source, and the
    signed timestamp and its expiry (Unix seconds; None: unknown, remembered for MAX_WINDOW)."""

    @property
    def signature(self) -> str | None: ...

    @property
    def source(self) -> str: ...

    @property
    def sent_at(self) -> float | None: ...

    @property
    def expires_at(self) -> float | None: ...


#: How long a signature whose expiry is not given is remembered: the longest replay window a
#: source may have (intake.sources.HmacAuth) plus its largest future skew.
MAX_WINDOW = timedelta(days=1, minutes=5)


def _instant(seconds: float | None, fallback: datetime) -> datetime:
    return fallback if seconds is None else datetime.fromtimestamp(seconds, fallback.tzinfo)


def replayed_signatures(session: Session, requests: Sequence[Signed]) -> set[int]:
    """Record the batch's new signatures; return the ids of the requests whose signature is not new
    (seen before, earlier in the batch, or recorded at this moment by another replica)."""
    signed = [r for r in requests if r.signature is not None]
    if not signed:
        return set()
    known = set(session.scalars(select(SeenSignature.signature)
                                .where(SeenSignature.signature.in_({r.signature for r in signed}))))
    replayed: set[int] = set()
    fresh: dict[str, tuple[Signed, dict[str, Any]]] = {}
    now = utcnow()
    for request in signed:
        assert request.signature is not None
        if request.signature in known:
            replayed.add(id(request))
        else:
            known.add(request.signature)
            fresh[request.signature] = (request, {
                "signature": request.signature, "source": request.source, "seen_at": now,
                "sent_at": _instant(request.sent_at, now),
                "expires_at": _instant(request.expires_at, now + MAX_WINDOW)})
    if fresh:
        inserted = _insert_new(session, [row for _request, row in fresh.values()])
        # Not inserted: another transaction (a replica) recorded it since we looked; it accepts that request.
        replayed.update(id(request) for signature, (request, _row) in fresh.items() if signature not in inserted)
    return replayed


def _insert_new(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the rows whose signature is not recorded yet; the signatures inserted."""
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        # On PostgreSQL a conflicting row another transaction has not committed yet makes this wait
        # for it: committed, the row is skipped (replayed); rolled back, ours is inserted.
        upsert = postgresql.insert(SeenSignature) if dialect == "postgresql" else sqlite.insert(SeenSignature)
        statement = upsert.on_conflict_do_nothing(index_elements=["signature"]).returning(SeenSignature.signature)
        return set(session.scalars(statement, rows))
    inserted = set()
    for row in rows:  # other databases: the unique violation, caught in a savepoint
        try:
            with session.begin_nested():
                session.execute(insert(SeenSignature), [row])
            inserted.add(row["signature"])
        except IntegrityError:
            pass
    return inserted


def forget_signatures_before(cutoff: datetime, *, url: str | None = None) -> int:
    """Forget signatures that expired before `cutoff` (any cutoff up to now is safe: an expired
    signature's request is refused by its timestamp alone). Returns how many were forgotten."""
    with session_scope(url) as session:
        result = session.execute(delete(SeenSignature).where(SeenSignature.expires_at < cutoff))
        return cast(CursorResult[Any], result).rowcount


def forget_expired_signatures(*, margin: timedelta = timedelta(minutes=5), url: str | None = None) -> int:
    """Forget signatures expired for longer than `margin` (clocks of replicas may differ by that much)."""
    return forget_signatures_before(utcnow() - margin, url=url)
