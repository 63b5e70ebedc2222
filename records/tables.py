"""Every table of the records database, assembled in one place.

The ORM models live beside the code that owns them (records.models for the incident
record itself, records.alert_ingest for alerts, records.run_outbox for the outbox…);
each registers its tables on the shared `Base.metadata` when its module is imported.
This module imports every one of them, so `metadata` below is the complete schema.
Alembic's env.py takes it as the target (so `alembic revision --autogenerate` and
`alembic check` compare the migrations with all tables), and records.db.migrate sets
the schema up through env.py. A new model module is added to the import below.
"""
from __future__ import annotations

from records import (  # noqa: F401  (imported for the tables they register)
    acknowledgements,
    alert_ingest,
    audit,
    audit_anchor,
    deliveries,
    models,
    operator_actions,
    reviews,
    run_locks,
    run_outbox,
    signatures,
)
from records.models import Base

metadata = Base.metadata
