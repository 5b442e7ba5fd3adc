"""Postgres for everyone: the embedded server, the connection pool, the migrations.

This room imports nothing else from `oa`; every other room stands on it.
`migrate` is imported when first used: alembic and SQLAlchemy cost half a second of import
that a Khala process, which never migrates, should not pay at every start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oa.store.database import Database, resolve_database_url

if TYPE_CHECKING:
    from oa.store.migrator import migrate

__all__ = ["Database", "migrate", "resolve_database_url"]


def __getattr__(name: str) -> Any:
    if name == "migrate":
        from oa.store.migrator import migrate

        return migrate
    raise AttributeError(f"module 'oa.store' has no attribute {name!r}")
