"""Audit seals: signed, append-only heads, global seals, Prefect anchors, delivery attempts (issue 10).

- audit_heads becomes append-only, one row per head position: the head moves by inserting a
  row (each signed under the audit key by the application), never by updating one. The heads
  recorded before this revision are kept, unsigned; the application signs each incident's
  current head once, in the same transaction (records.db.migrate → records.audit.adopt_legacy).
- audit_installation: this records database's identity, signed into every global seal.
- audit_incident_seals: each incident's global seal number (one counter across incidents).
- audit_anchors: every attempt to anchor a head in Prefect, and whether it worked.
- delivery_attempts: every delivery try of every page, beside the per-channel summary row.

Every new table, and audit_heads, refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL) by
trigger, like the timeline. The trigger code is copied here, frozen, from 0002.

Revision ID: 0006
Revises: 0005
"""
import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
APPEND_ONLY = ("audit_heads", "audit_installation", "audit_incident_seals", "audit_anchors", "delivery_attempts")


def upgrade() -> None:
    connection = op.get_bind()
    old_heads = sa.table("audit_heads", sa.column("incident_id", sa.String()), sa.column("seq", sa.Integer()),
                         sa.column("hash", sa.String()))
    kept = [dict(row) for row in connection.execute(sa.select(old_heads)).mappings()]
    op.drop_table("audit_heads")
    heads = op.create_table(
        "audit_heads",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(64)),
        sa.Column("key_id", sa.String(16)),
        sa.Column("sealed_at", TS),
    )
    op.create_index("ix_audit_heads_incident_seq", "audit_heads", ["incident_id", "seq"])
    if kept:
        op.bulk_insert(heads, sorted(kept, key=lambda row: (row["incident_id"], row["seq"])))

    installation = op.create_table(
        "audit_installation",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.bulk_insert(installation, [{"id": uuid.uuid4().hex, "created_at": datetime.now(timezone.utc)}])
    op.create_table(
        "audit_incident_seals",
        sa.Column("number", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("incident_id", sa.String(32), nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("legacy_seq", sa.Integer(), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("sealed_at", TS, nullable=False),
        sa.UniqueConstraint("incident_id"),
    )
    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("variable", sa.String(255), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_audit_anchors_incident", "audit_anchors", ["incident_id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("notification_id", sa.Integer(), sa.ForeignKey("notifications.id"), nullable=False),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("page_key", sa.String(300)),
        sa.Column("contact", sa.String(120), nullable=False),
        sa.Column("channel", sa.String(300), nullable=False),
        sa.Column("channel_index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
    )
    op.create_index("ix_delivery_attempts_incident", "delivery_attempts", ["incident_id"])
    for table in APPEND_ONLY:
        create_append_only_triggers(table)


def downgrade() -> None:
    for table in APPEND_ONLY:
        drop_append_only_triggers(table)
    op.drop_index("ix_delivery_attempts_incident", table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
    op.drop_index("ix_audit_anchors_incident", table_name="audit_anchors")
    op.drop_table("audit_anchors")
    op.drop_table("audit_incident_seals")
    op.drop_table("audit_installation")
    connection = op.get_bind()
    heads = sa.table("audit_heads", sa.column("id", sa.Integer()), sa.column("incident_id", sa.String()),
                     sa.column("seq", sa.Integer()), sa.column("hash", sa.String()))
    latest: dict[str, dict] = {}
    for row in connection.execute(sa.select(heads).order_by(heads.c.seq, heads.c.id)).mappings():
        latest[row["incident_id"]] = {"incident_id": row["incident_id"], "seq": row["seq"], "hash": row["hash"]}
    op.drop_index("ix_audit_heads_incident_seq", table_name="audit_heads")
    op.drop_table("audit_heads")
    old = op.create_table(
        "audit_heads",
        sa.Column("incident_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    if latest:
        op.bulk_insert(old, list(latest.values()))


# --- append-only triggers, as migration 0002 wrote them ---

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
