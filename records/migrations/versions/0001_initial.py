"""Initial incident record: incidents, timeline events, notifications, sequences.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("runbook_id", sa.String(100), nullable=False),
        sa.Column("runbook_version", sa.String(40), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("level", sa.String(3), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("run_state", sa.String(20), nullable=False),
        sa.Column("run_error", sa.Text()),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("drill", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text()),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("triggered_at", TS, nullable=False),
        sa.Column("acknowledged_at", TS),
        sa.Column("mitigated_at", TS),
        sa.Column("resolved_at", TS),
        sa.Column("closed_at", TS),
        sa.Column("run_ended_at", TS),
        sa.Column("heartbeat_at", TS),
    )
    op.create_table(
        "timeline_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(100)),
        sa.Column("action", sa.String(60)),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("idempotency_key", sa.String(300)),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("task_run_id", sa.String(64)),
        sa.Column("at", TS, nullable=False),
        sa.UniqueConstraint("incident_id", "seq", name="uq_timeline_events_incident_seq"),
    )
    op.create_index("ix_timeline_events_step", "timeline_events", ["incident_id", "step_id"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("contact", sa.String(120), nullable=False),
        sa.Column("role", sa.String(60)),
        sa.Column("channel", sa.String(300), nullable=False),
        sa.Column("idempotency_key", sa.String(300), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("drill", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS),
        sa.Column("acknowledged_at", TS),
        sa.UniqueConstraint("idempotency_key", name="uq_notifications_idempotency_key"),
    )
    op.create_table(
        "sequences",
        sa.Column("name", sa.String(60), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sequences")
    op.drop_table("notifications")
    op.drop_index("ix_timeline_events_step", table_name="timeline_events")
    op.drop_table("timeline_events")
    op.drop_table("incidents")
