"""Operator actions (issue 12): incident commander, and one row per lifecycle action taken by hand.

- incidents.commander: the contact id of the incident commander once command was handed over
  (null: the commander role the level engages, whoever is on duty).
- operator_actions: acknowledge, resolve, close, note, level, handover, rerun, cancel; who (a
  contact id), how (cli, ui, api), when, why, what it did, and the request key that makes a
  repeated request act once.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("commander", sa.String(120), nullable=True))
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(32), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("by", sa.String(120), nullable=False),
        sa.Column("via", sa.String(20), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("request_key", sa.String(200)),
        sa.UniqueConstraint("request_key", name="uq_operator_actions_request_key"),
    )
    op.create_index("ix_operator_actions_incident", "operator_actions", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_operator_actions_incident", table_name="operator_actions")
    op.drop_table("operator_actions")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("commander")
