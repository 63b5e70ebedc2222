"""Intake: alerts, dedup and outbox (issue 5).

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("source", sa.String(60), nullable=False),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("fingerprint", sa.String(300), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("disposition", sa.String(30), nullable=False),
        sa.Column("route", sa.String(200)),
        sa.Column("runbook_id", sa.String(100)),
        sa.Column("level", sa.String(3)),
        sa.Column("error", sa.Text()),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id")),
    )
    op.create_index("ix_alerts_fingerprint", "alerts", ["fingerprint"])
    op.create_index("ix_alerts_incident", "alerts", ["incident_id"])
    # The primary key is what makes "one open incident per fingerprint" hold across intake replicas.
    op.create_table(
        "alert_fingerprints",
        sa.Column("fingerprint", sa.String(300), primary_key=True),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id")),
        sa.Column("claimed_at", TS, nullable=False),
    )
    op.create_table(
        "run_requests",
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), primary_key=True),
        sa.Column("flow_name", sa.String(100), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("claimed_by", sa.String(120)),
        sa.Column("claimed_at", TS),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
    )
    op.create_index("ix_run_requests_status", "run_requests", ["status", "next_attempt_at"])
    op.create_table(
        "intake_signatures",
        sa.Column("signature", sa.String(128), primary_key=True),
        sa.Column("source", sa.String(60), nullable=False),
        sa.Column("seen_at", TS, nullable=False),
    )
    op.create_table(
        "incident_run_locks",
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("acquired_at", TS, nullable=False),
        sa.Column("renewed_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("incident_run_locks")
    op.drop_table("intake_signatures")
    op.drop_index("ix_run_requests_status", table_name="run_requests")
    op.drop_table("run_requests")
    op.drop_table("alert_fingerprints")
    op.drop_index("ix_alerts_incident", table_name="alerts")
    op.drop_index("ix_alerts_fingerprint", table_name="alerts")
    op.drop_table("alerts")
