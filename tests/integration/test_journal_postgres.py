"""The journal contract against the real thing: GroupAppender over the Postgres adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from oa.runtime.adapters import journal_sql as sql
from oa.runtime.domain.journal import AppendRequest, Event, Plan
from oa.runtime.service.appender import GroupAppender
from oa.runtime.service.runs import run_transition
from oa.store.database import Database
from tests.contract.journal_contract import JournalBackend, JournalContract


class PostgresJournal:
    """The adapter seen through the contract's port; runs are the stream kind."""

    def __init__(self, db: Database, appender: GroupAppender) -> None:
        self.db = db
        self.appender = appender

    async def append(self, stream_id: str, principal: str, requests: Sequence[AppendRequest]) -> Plan:
        return await self.appender.append("run", stream_id, principal, requests, run_transition, "created")

    async def read_stream(self, stream_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        return await sql.read_stream(self.db.pool, "run", stream_id, after_seq, limit)

    async def read_journal(self, after_position: int, limit: int = 1000) -> list[Event]:
        return await sql.read_journal(self.db.pool, after_position, limit)

    async def head_position(self) -> int:
        return int(await self.db.fetchval("SELECT position FROM runtime.journal_head"))


class TestPostgresJournal(JournalContract):
    @pytest.fixture
    async def journal(self, database_url: str) -> AsyncIterator[JournalBackend]:
        db = await Database.connect(database_url, min_size=1, max_size=4)
        appender = GroupAppender(db)
        appender.start()
        try:
            yield PostgresJournal(db, appender)
        finally:
            await appender.stop()
            await db.close()
