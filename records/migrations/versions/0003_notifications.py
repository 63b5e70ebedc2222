"""Notifications: roster, escalation and acknowledgements (issue 3).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("page_key", sa.String(300)))
        batch.add_column(sa.Column("cycle", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("tier", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("channel_index", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("event", sa.String(30)))
        batch.add_column(sa.Column("locale", sa.String(5)))
        batch.add_column(sa.Column("acknowledged_by", sa.String(120)))
        batch.create_index("ix_notifications_page_key", ["page_key"])
    op.create_table(
        "acknowledgements",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("by", sa.String(120), nullable=False),
        sa.Column("via", sa.String(20), nullable=False),
        sa.Column("contact_id", sa.String(120)),
        sa.Column("comment", sa.Text()),
        sa.Column("effective", sa.Boolean(), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_acknowledgements_incident", "acknowledgements", ["incident_id"])
    op.create_table(
        "escalation_tiers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("policy", sa.String(100)),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("paged_at", TS, nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.UniqueConstraint("incident_id", "step_id", "cycle", "tier", name="uq_escalation_tiers_position"),
    )


def downgrade() -> None:
    op.drop_table("escalation_tiers")
    op.drop_index("ix_acknowledgements_incident", table_name="acknowledgements")
    op.drop_table("acknowledgements")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_page_key")
        for column in ("acknowledged_by", "locale", "event", "channel_index", "tier", "cycle", "page_key"):
            batch.drop_column(column)
