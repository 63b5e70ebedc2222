"""Signatures of accepted HMAC-signed intake requests, so a replayed request is refused.

A signature is recorded in the same transaction as the request's alerts
(records.alert_ingest), and forgotten once it is older than any replay window.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import String, delete, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from firebreak.errors import Refused
from records.db import session_scope
from records.models import Base, utcnow


class SeenSignature(Base):
    """HMAC signatures already accepted, so a replayed request is refused."""

    __tablename__ = "intake_signatures"

    signature: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(60))
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class SignatureReplayed(Refused):
    """This signature was already accepted once."""


class Signed(Protocol):
    """A request as far as replay detection cares: its signature (None: unsigned) and source."""

    @property
    def signature(self) -> str | None: ...

    @property
    def source(self) -> str: ...


def replayed_signatures(session: Session, requests: Sequence[Signed]) -> set[int]:
    """Record the batch's new signatures; return the ids of the requests whose signature is not new.
    Two replicas inserting the same signature at once: the loser's batch fails on the primary key
    (IntegrityError), and its writer retries request by request, where the replay is then seen."""
    signed = [r for r in requests if r.signature is not None]
    if not signed:
        return set()
    known = set(session.scalars(select(SeenSignature.signature)
                                .where(SeenSignature.signature.in_({r.signature for r in signed}))))
    replayed: set[int] = set()
    fresh: list[dict[str, Any]] = []
    for request in signed:
        if request.signature in known:
            replayed.add(id(request))
        else:
            known.add(request.signature)
            fresh.append({"signature": request.signature, "source": request.source, "seen_at": utcnow()})
    if fresh:
        session.execute(insert(SeenSignature), fresh)
    return replayed


def forget_signatures_before(cutoff: datetime, *, url: str | None = None) -> int:
    with session_scope(url) as session:
        return session.execute(delete(SeenSignature).where(SeenSignature.seen_at < cutoff)).rowcount
