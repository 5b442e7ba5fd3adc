"""The Postgres Khala store passes the store contract (oa.khala.store.contract)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from oa.khala.store.backend import KhalaStore, PostgresKhalaStore
from oa.khala.store.contract import StoreContract
from oa.store.database import with_user
from oa.store.migrator import migrate
from tests.support.pg import fresh_database


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    """A database of its own: the contract switches the live generation."""
    with fresh_database() as url:
        migrate(url)
        yield url


class TestPostgresKhalaStore(StoreContract):
    @pytest.fixture
    async def store(self, own_database: str) -> AsyncIterator[KhalaStore]:
        conn = await asyncpg.connect(with_user(own_database, "oa_khala_writer"))
        try:
            yield PostgresKhalaStore(conn)
        finally:
            await conn.close()
