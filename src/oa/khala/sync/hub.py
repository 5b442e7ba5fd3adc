"""The fan-out hub: one per server process. Wakes on the projector's NOTIFY, reads the new
journal rows once, and offers each projector batch to every session subscribed to it.

Reading once per process and encoding once per (topics, user) per batch is what keeps the
cost per subscriber low; the notification carries no data, so a lost one only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from oa.khala.store import reader
from oa.khala.store.reader import JournalRow
from oa.khala.store.writer import NOTIFY_CHANNEL
from oa.khala.sync.live import QueryIndex
from oa.khala.topics import TOPIC_NAMES

if TYPE_CHECKING:
    from oa.khala.sync.session import Session

log = logging.getLogger(__name__)


class Hub:
    """`max_queued_bytes` caps the outbound bytes of all sessions together (each session has
    its own cap too): a crowd of slow consumers cannot grow the process past it. A frame
    shared by many sockets counts once per socket, so the count errs on the safe side."""

    def __init__(
        self,
        url: str,
        pool: asyncpg.Pool,
        poll_s: float = 1.0,
        max_queued_bytes: int = 128 << 20,
        application_name: str | None = None,
    ) -> None:
        self._url = url
        # The LISTEN connection names the node too (`oa khala status` reads it).
        self._server_settings = {"application_name": application_name} if application_name else None
        self.pool = pool
        self._poll = poll_s
        self.heads: dict[str, int] = dict.fromkeys(TOPIC_NAMES, 0)
        self.sessions: set[Session] = set()
        # Sessions with whole-topic subscriptions: only they are offered every batch.
        self.topic_sessions: set[Session] = set()
        # Live queries: a batch reaches only the ones it concerns.
        self.queries = QueryIndex()
        self.sockets_per_user: Counter[str] = Counter()
        self.max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0  # frames waiting in every session's outbound queue
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.batches_dispatched = 0
        # For the metrics (`oa.khala.sync.metrics`): what this process read and sent.
        self.batches_read = 0
        self.rows_read = 0
        self.frames_sent = 0
        self.bytes_sent = 0

    async def start(self) -> None:
        stored = await reader.heads(self.pool)
        for topic, (head, _) in stored.items():
            self.heads[topic] = head
        self._tasks = [
            asyncio.create_task(self._listen(), name="khala-hub-listen"),
            asyncio.create_task(self._pump(), name="khala-hub-pump"),
            asyncio.create_task(self._tick(), name="khala-hub-tick"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def register(self, session: Session, user_id: str) -> None:
        if session not in self.sessions:
            self.sessions.add(session)
            self.sockets_per_user[user_id] += 1

    def unregister(self, session: Session, user_id: str) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.topic_sessions.discard(session)
            self.sockets_per_user[user_id] -= 1
            if self.sockets_per_user[user_id] <= 0:
                del self.sockets_per_user[user_id]

    def queued_frames(self) -> int:
        return sum(s.queued_frames for s in self.sessions)

    def subscribers(self, topic: str) -> int:
        return sum(1 for s in self.sessions if topic in s.topics)

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            conn: asyncpg.Connection | None = None
            try:
                lost = asyncio.Event()
                conn = await asyncpg.connect(self._url, server_settings=self._server_settings)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
                delay = 0.1
                self._wake.set()  # catch up on anything missed while disconnected
                await lost.wait()
            except asyncio.CancelledError:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                raise
            except Exception as exc:
                log.warning("khala hub lost its LISTEN connection: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now, wall = time.monotonic(), time.time()
            for session in list(self.sessions):
                session.tick(now, wall)

    async def _pump(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
            try:
                # One connection for the whole catch-up, not an acquire per read: each
                # release runs the pool's reset query (asyncpg `Connection.execute`, 5% of the
                # sync server's py-spy samples in bench/sync.py's scoped fan-out).
                async with self.pool.acquire() as conn:
                    while True:
                        rows = await reader.rows_after(conn, self.heads)
                        if not rows:
                            break
                        self.batches_read += len({r.batch_id for r in rows})
                        self.rows_read += len(rows)
                        self.dispatch(rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Postgres restarting: keep trying, sessions stay up
                log.warning("khala hub could not read the journal: %s", exc)
                await asyncio.sleep(0.5)

    def dispatch(self, rows: Sequence[JournalRow]) -> None:
        """Offer everything read in one go as one frame per session.

        `rows` are whole projector batches (the reader never splits one), so a frame may
        merge several transactions but never holds part of one; under load this is what
        keeps frames per second from growing with events per second. Runs without
        awaiting, so no session sees the heads move between batches.
        """
        if not rows:
            return
        for r in rows:
            if r.watermark > self.heads.get(r.topic, 0):
                self.heads[r.topic] = r.watermark
        cache: dict[tuple[object, ...], Any] = {}
        batch = list(rows)
        for session in list(self.topic_sessions):
            session.offer(batch, self.heads, cache)
        if self.queries.count:
            for query, matched in self.queries.match(batch).items():
                query.offer(matched)
        self.batches_dispatched += len({r.batch_id for r in rows})
