"""Audit trail: hash-chained, append-only timeline (issue 4).

Adds each event's place in its incident's hash chain (prev_hash, hash), the
chain heads, the post-incident reviews, and triggers that make timeline events
and reviews append-only on SQLite and PostgreSQL. Events recorded before this
revision are sealed into chains here, in their recorded order.

The chain format (records.audit, version 1) is copied into this file, frozen:
a migration must compute the same thing forever, whatever the application's
code becomes later. It imports nothing from the application.

Revision ID: 0002
Revises: 0001
"""
import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
APPEND_ONLY = ("timeline_events", "incident_reviews")


def upgrade() -> None:
    op.add_column("timeline_events", sa.Column("prev_hash", sa.String(64)))
    op.add_column("timeline_events", sa.Column("hash", sa.String(64)))
    op.create_table(
        "audit_heads",
        sa.Column("incident_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    _seal_existing_events()
    with op.batch_alter_table("timeline_events") as batch:
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(64), nullable=False)
    op.create_table(
        "incident_reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("root_cause", sa.Text(), nullable=False),
        sa.Column("lessons", sa.JSON(), nullable=False),
        sa.Column("action_items", sa.JSON(), nullable=False),
        sa.Column("entered_by", sa.String(120), nullable=False),
        sa.Column("entered_at", TS, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.UniqueConstraint("incident_id", "revision", name="uq_incident_reviews_revision"),
    )
    # Triggers last: the batch operation above rebuilds the table on SQLite.
    for table in APPEND_ONLY:
        create_append_only_triggers(table)


def downgrade() -> None:
    for table in APPEND_ONLY:
        drop_append_only_triggers(table)
    op.drop_table("incident_reviews")
    op.drop_table("audit_heads")
    with op.batch_alter_table("timeline_events") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")


def create_append_only_triggers(table: str) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            f"""CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{table} is append-only: % refused', TG_OP USING ERRCODE = 'integrity_constraint_violation';
            END $$"""
        )
        op.execute(f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()")
    else:
        raise NotImplementedError(f"append-only triggers for {dialect} are not written; "
                                  "Firebreak's records support SQLite and PostgreSQL")


def drop_append_only_triggers(table: str) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
    elif dialect == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")


# --- the audit chain's format, version 1, as records.audit defined it when this revision was written ---

GENESIS = "0" * 64
HASHED_FIELDS = ("incident_id", "seq", "step_id", "action", "attempt", "phase", "status", "actor", "summary",
                 "error", "idempotency_key", "data", "flow_run_id", "task_run_id", "at")


class _UTCDateTime(sa.TypeDecorator):
    """Reads timestamps back as aware UTC datetimes (SQLite returns them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _canonical_json(fields: dict[str, Any]) -> str:
    """Fixed keys, sorted, no whitespace, UTF-8, UTC microsecond times."""
    document = {name: fields.get(name) for name in HASHED_FIELDS}
    at = fields["at"]
    if at.tzinfo is None:
        raise ValueError("naive datetime in the audit chain")
    document["at"] = at.astimezone(timezone.utc).isoformat(timespec="microseconds")
    data = fields.get("data")
    document["data"] = json.loads(json.dumps(data if data is not None else {}))
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + _canonical_json(fields)).encode("utf-8")).hexdigest()


def _seal_existing_events() -> None:
    """Chain the events recorded before this revision (the chain format above, version 1)."""
    events = sa.table(
        "timeline_events",
        sa.column("id", sa.Integer()),
        *[sa.column(name, _UTCDateTime() if name == "at" else sa.JSON() if name == "data" else sa.String())
          for name in HASHED_FIELDS if name not in ("seq", "attempt")],
        sa.column("seq", sa.Integer()),
        sa.column("attempt", sa.Integer()),
        sa.column("prev_hash", sa.String(64)),
        sa.column("hash", sa.String(64)),
    )
    heads = sa.table("audit_heads", sa.column("incident_id", sa.String()), sa.column("seq", sa.Integer()),
                     sa.column("hash", sa.String()))
    bind = op.get_bind()
    rows = bind.execute(sa.select(events).order_by(events.c.incident_id, events.c.seq)).mappings().all()
    last: dict[str, tuple[int, str]] = {}
    for row in rows:
        previous = last.get(row["incident_id"], (0, GENESIS))[1]
        digest = _chain_hash(previous, dict(row))
        bind.execute(events.update().where(events.c.id == row["id"]).values(prev_hash=previous, hash=digest))
        last[row["incident_id"]] = (row["seq"], digest)
    for incident_id, (seq, digest) in last.items():
        bind.execute(heads.insert().values(incident_id=incident_id, seq=seq, hash=digest))
