"""Interrupted delivery attempts (issue 10, item 9).

- notifications.attempt_started_at: when the channel's current try was claimed. A try cut off
  between claiming and recording its outcome (the process killed mid-send) leaves its summary row
  `sending`; the next try of that channel records it as a delivery attempt of its own, outcome
  `interrupted`, that began at this time. Rows written before keep NULL (their created_at stands in).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("attempt_started_at", TS, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("attempt_started_at")
