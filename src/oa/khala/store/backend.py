"""Khala's store as one object: what a backend must provide (`KhalaStore`) and the Postgres
one, which binds the store modules' functions to a connection of the writer role.

The projector and the sync server call the module functions directly; this interface is
what `oa.khala.store.contract` tests, so a second backend can prove it behaves the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import asyncpg

from oa.khala.store import generations, maintenance, reader, writer
from oa.khala.store.generations import StoredDoc
from oa.khala.store.maintenance import PruneResult
from oa.khala.store.reader import JournalRow
from oa.khala.store.writer import Applied, Checkpoint, DocChange


class KhalaStore(Protocol):
    async def live_generation(self) -> int: ...
    async def next_generation(self) -> int: ...
    async def apply(
        self,
        generation: int,
        changes: Sequence[DocChange],
        checkpoints: Mapping[str, int],
        *,
        journal: bool = True,
    ) -> Applied: ...
    async def checkpoints(self, generation: int) -> dict[str, Checkpoint]: ...
    async def documents(self, generation: int, prefix: str | None = None) -> dict[str, StoredDoc]: ...
    async def heads(self) -> dict[str, tuple[int, int]]: ...
    async def rows_after(
        self, after: Mapping[str, int], upto: Mapping[str, int] | None = None, limit: int = 2000
    ) -> list[JournalRow]: ...
    async def snapshot(
        self, topic: str, user_id: str, org_id: str | None, limit: int
    ) -> tuple[int, list[JournalRow]]: ...
    async def switch_generation(self, new: int, old: int) -> None: ...
    async def prune_topic(self, topic: str, keep_s: int, replay_budget: int) -> PruneResult: ...


class PostgresKhalaStore:
    """The Postgres backend on one connection (the writer role: it may read and write)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def live_generation(self) -> int:
        return await writer.live_generation(self.conn)

    async def next_generation(self) -> int:
        return await generations.next_generation(self.conn)

    async def apply(
        self,
        generation: int,
        changes: Sequence[DocChange],
        checkpoints: Mapping[str, int],
        *,
        journal: bool = True,
    ) -> Applied:
        async with self.conn.transaction():
            return await writer.apply(self.conn, generation, changes, checkpoints, journal=journal)

    async def checkpoints(self, generation: int) -> dict[str, Checkpoint]:
        return await writer.load_checkpoints(self.conn, generation)

    async def documents(self, generation: int, prefix: str | None = None) -> dict[str, StoredDoc]:
        return await generations.documents(self.conn, generation, prefix)

    async def heads(self) -> dict[str, tuple[int, int]]:
        return await reader.heads(self.conn)

    async def rows_after(
        self, after: Mapping[str, int], upto: Mapping[str, int] | None = None, limit: int = 2000
    ) -> list[JournalRow]:
        return await reader.rows_after(self.conn, after, upto, limit)

    async def snapshot(
        self, topic: str, user_id: str, org_id: str | None, limit: int
    ) -> tuple[int, list[JournalRow]]:
        async with self.conn.transaction(isolation="repeatable_read", readonly=True):
            return await reader.snapshot(self.conn, topic, user_id, org_id, limit)

    async def switch_generation(self, new: int, old: int) -> None:
        async with self.conn.transaction():
            await writer.lock_live_generation(self.conn)
            await generations.switch_generation(self.conn, new, old)

    async def prune_topic(self, topic: str, keep_s: int, replay_budget: int) -> PruneResult:
        return await maintenance.prune_topic(self.conn, topic, keep_s, replay_budget)
