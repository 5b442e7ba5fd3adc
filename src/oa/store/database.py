"""Where the database is, and the asyncpg pool over it.

asyncpg, not psycopg 3: on the append path (a batch of prepared statements per commit)
it did more commits per second in `bench/driver.py`; see the README's figures.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from oa.store.embedded import start_embedded


def resolve_database_url(home: Path, env: dict[str, str] | None = None) -> str:
    """`OA_DATABASE_URL` if set, else the embedded server under `home/pgdata`."""
    env = dict(os.environ) if env is None else env
    url = env.get("OA_DATABASE_URL", "").strip()
    if url:
        return url
    return start_embedded(home / "pgdata")


def sqlalchemy_url(url: str) -> str:
    """The same database as a SQLAlchemy URL for the psycopg driver (used by migrations)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Timestamps travel as UTC; statements never hang forever on a lost lock.
    await conn.execute("SET TIME ZONE 'UTC'")


@dataclass
class Database:
    """One asyncpg pool. Open with `await Database.connect(url)`, close with `close()`."""

    url: str
    pool: asyncpg.Pool = field(repr=False)

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 10) -> Database:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            command_timeout=60,
        )
        return cls(url=url, pool=pool)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.pool.fetchrow(query, *args)
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self.pool.fetchval(query, *args)


def with_user(url: str, user: str) -> str:
    """The same database, connecting as another role (e.g. Khala's read-only one)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))
