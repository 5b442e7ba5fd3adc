"""Postgres for everyone: the embedded server, the connection pool, the migrations.

This room imports nothing else from `oa`; every other room stands on it.
"""

from oa.store.database import Database, resolve_database_url
from oa.store.migrator import migrate

__all__ = ["Database", "migrate", "resolve_database_url"]
