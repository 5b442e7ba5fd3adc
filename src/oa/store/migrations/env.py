"""Alembic environment: online only, under a Postgres advisory lock."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

# An arbitrary constant shared by every process that migrates this database.
MIGRATION_LOCK_KEY = 7_270_431_001

url = context.config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url is not configured"
engine = create_engine(url, poolclass=pool.NullPool)

with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        context.configure(
            connection=connection,
            version_table="oa_schema_version",
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
engine.dispose()
