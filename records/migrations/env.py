"""Alembic environment: runs on the connection that records.db.migrate hands in,
or, from the alembic CLI, on FIREBREAK_DATABASE_URL. The target is every table of the
records (records.tables), so autogenerate and `alembic check` see the whole schema."""
from alembic import context

from records.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    from records.db import get_engine

    with get_engine().begin() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
