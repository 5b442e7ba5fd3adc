"""Replay use cases: a run's receipt and its REPLAY.jsonl, read straight from the journal.

Both are computed from the stored events (never cached), up to the run's last seq as read
at the start, so a run that is still moving exports a consistent prefix. Events are read
in pages, so a 100,000-event run never sits in memory at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from oa.runtime.adapters import journal_sql as sql
from oa.runtime.domain.journal import Event
from oa.runtime.domain.policy import POLICY_BUNDLE_ID
from oa.runtime.domain.replay import ReceiptBuilder, ReplayEvent, ReplayWriter
from oa.runtime.service.runs import RunService
from oa.store.database import Database

PAGE = 5000


def replay_event(ev: Event) -> ReplayEvent:
    return ReplayEvent(
        ev.seq, ev.event_type, ev.payload_json, ev.payload_hash, ev.prev_hash, ev.hash, ev.recorded_at
    )


class ReplayService:
    def __init__(self, db: Database, runs: RunService) -> None:
        self._db = db
        self._runs = runs

    async def _events(self, run_id: str, last_seq: int) -> AsyncIterator[Event]:
        after = 0
        while after < last_seq:
            page = await sql.read_stream(self._db.pool, "run", run_id, after, min(PAGE, last_seq - after))
            if not page:
                return
            for ev in page:
                yield ev
            after = page[-1].seq

    async def receipt(self, principal: str, run_id: str) -> dict[str, Any]:
        head = await self._runs.head(principal, run_id)
        builder = ReceiptBuilder(run_id)
        async for ev in self._events(run_id, head.last_seq):
            builder.add(replay_event(ev))
        return builder.receipt(head.owner, head.status, POLICY_BUNDLE_ID)

    async def export(self, principal: str, run_id: str) -> AsyncIterator[bytes]:
        """REPLAY.jsonl in chunks; ownership is checked before the first byte."""
        head = await self._runs.head(principal, run_id)

        async def lines() -> AsyncIterator[bytes]:
            writer = ReplayWriter()
            builder = ReceiptBuilder(run_id)
            yield writer.header(run_id, head.owner, head.status, head.last_seq, POLICY_BUNDLE_ID)
            started = False
            chunk: list[bytes] = []
            async for ev in self._events(run_id, head.last_seq):
                if not started:
                    chunk.append(writer.session_start(run_id, ev.recorded_at))
                    started = True
                rev = replay_event(ev)
                builder.add(rev)
                chunk.append(writer.event(rev))
                if len(chunk) >= 1000:
                    yield b"".join(chunk)
                    chunk = []
            if not started:
                chunk.append(writer.session_start(run_id, None))
            chunk.append(writer.session_end(builder.receipt(head.owner, head.status, POLICY_BUNDLE_ID)))
            yield b"".join(chunk)

        return lines()
