"""Run lifecycle: incident uids, fenced run locks, run workers (issue 9).

- incidents.uid: unique across installations; keys sent to other systems carry it.
- incident_run_locks.generation: the fencing token of the run lock; released_at: a released
  lock keeps its row, so the next run's generation is higher.
- escalation_tiers.step_key: the notify step's idempotency key (incident, runbook, step, run
  generation), so a new run's escalation is its own and not the record of an earlier run's.
- run_requests.finished_at and the run_workers table: the outbox knows when a run ended
  and which executor processes are alive, so a dead one's claims are taken over.
- intake_signatures.sent_at and expires_at (issue 10): a seen signature is forgotten only after
  its timestamp alone refuses it (signed timestamp + replay window), never while it could verify.

Revision ID: 0005
Revises: 0004
"""
import uuid
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("uid", sa.String(32), nullable=True))
    incidents = sa.table("incidents", sa.column("id", sa.String), sa.column("uid", sa.String))
    connection = op.get_bind()
    for (incident_id,) in connection.execute(sa.select(incidents.c.id)).all():
        connection.execute(incidents.update().where(incidents.c.id == incident_id).values(uid=uuid.uuid4().hex))
    with op.batch_alter_table("incidents") as batch:
        batch.alter_column("uid", existing_type=sa.String(32), nullable=False)
        batch.create_unique_constraint("uq_incidents_uid", ["uid"])

    with op.batch_alter_table("incident_run_locks") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("released_at", TS))

    with op.batch_alter_table("escalation_tiers") as batch:
        batch.add_column(sa.Column("step_key", sa.String(300), nullable=True))
    tiers = sa.table("escalation_tiers", sa.column("incident_id", sa.String), sa.column("step_id", sa.String),
                     sa.column("step_key", sa.String))
    # Rows written before: keyed as their pages were then, `<incident>:<step>`.
    connection.execute(tiers.update().values(step_key=tiers.c.incident_id + ":" + tiers.c.step_id))
    with op.batch_alter_table("escalation_tiers") as batch:
        batch.alter_column("step_key", existing_type=sa.String(300), nullable=False)
        batch.drop_constraint("uq_escalation_tiers_position", type_="unique")
        batch.create_unique_constraint("uq_escalation_tiers_position", ["incident_id", "step_key", "cycle", "tier"])

    with op.batch_alter_table("run_requests") as batch:
        batch.add_column(sa.Column("finished_at", TS))
    op.create_table(
        "run_workers",
        sa.Column("id", sa.String(120), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.Column("stopped_at", TS),
    )

    with op.batch_alter_table("intake_signatures") as batch:
        batch.add_column(sa.Column("sent_at", TS, nullable=True))
        batch.add_column(sa.Column("expires_at", TS, nullable=True))
    signatures = sa.table("intake_signatures", sa.column("seen_at", TS), sa.column("sent_at", TS),
                          sa.column("expires_at", TS))
    # Rows from before: their timestamps are unknown, so each is kept as long as the longest window
    # (1 day) plus the largest future skew (5 min) from now allows any of them to verify.
    keep_until = datetime.now(timezone.utc) + timedelta(days=1, minutes=5)
    connection.execute(signatures.update().values(sent_at=signatures.c.seen_at, expires_at=keep_until))
    with op.batch_alter_table("intake_signatures") as batch:
        batch.alter_column("sent_at", existing_type=TS, nullable=False)
        batch.alter_column("expires_at", existing_type=TS, nullable=False)
        batch.create_index("ix_intake_signatures_expires_at", ["expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("intake_signatures") as batch:
        batch.drop_index("ix_intake_signatures_expires_at")
        batch.drop_column("expires_at")
        batch.drop_column("sent_at")
    op.drop_table("run_workers")
    with op.batch_alter_table("run_requests") as batch:
        batch.drop_column("finished_at")
    # Later runs' tiers of the same step cannot stay under the old (incident, step) position: keep the first.
    op.execute("DELETE FROM escalation_tiers WHERE id NOT IN "
               "(SELECT MIN(id) FROM escalation_tiers GROUP BY incident_id, step_id, cycle, tier)")
    with op.batch_alter_table("escalation_tiers") as batch:
        batch.drop_constraint("uq_escalation_tiers_position", type_="unique")
        batch.create_unique_constraint("uq_escalation_tiers_position", ["incident_id", "step_id", "cycle", "tier"])
        batch.drop_column("step_key")
    with op.batch_alter_table("incident_run_locks") as batch:
        batch.drop_column("released_at")
        batch.drop_column("generation")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_constraint("uq_incidents_uid", type_="unique")
        batch.drop_column("uid")
