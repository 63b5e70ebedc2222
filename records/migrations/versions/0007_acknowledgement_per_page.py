"""Acknowledgement per page, one row per acknowledger (issue 9 #9, issue 10 #5).

- acknowledgements.ack_key: who acknowledged, one key per incident (`contact:<id>` for a link's
  contact, else `<via>:<by>`), unique per incident: a repeat renews its row instead of adding one.
  Rows written before keep NULL (they were one row per acknowledgement; NULLs never collide).
- acknowledgements.last_at: when that acknowledger last acknowledged; an escalating page stops on an
  acknowledgement given or renewed after the page was first sent.
- acknowledgements.notes: a repeat's comment, kept as a bounded note list (JSON).

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("acknowledgements") as batch:
        batch.add_column(sa.Column("ack_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("last_at", TS, nullable=True))
        batch.add_column(sa.Column("notes", sa.JSON(), nullable=True))
        batch.create_unique_constraint("uq_acknowledgements_ack_key", ["incident_id", "ack_key"])


def downgrade() -> None:
    with op.batch_alter_table("acknowledgements") as batch:
        batch.drop_constraint("uq_acknowledgements_ack_key", type_="unique")
        batch.drop_column("notes")
        batch.drop_column("last_at")
        batch.drop_column("ack_key")
