"""Khala fixtures: connections as the projector's (writer) and the server's (reader) roles."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from oa.store.database import with_user


@pytest.fixture
async def writer_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(with_user(database_url, "oa_khala_writer"))
    yield conn
    await conn.close()


@pytest.fixture
async def reader_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(with_user(database_url, "oa_khala_reader"))
    yield conn
    await conn.close()
