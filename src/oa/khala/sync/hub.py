"""The fan-out hub: one per server process. Wakes on the projector's NOTIFY, reads the new
journal rows once, and offers each projector batch to every session subscribed to it.

Reading once per process and encoding once per (topics, user) per batch is what keeps the
cost per subscriber low; a lost notification only delays (the hub polls as well).

With a streaming replica (`read_pool`), every read goes to the replica and only the LISTEN
stays on the primary (NOTIFY does not reach replicas). The notification names the heads
the primary committed, so the hub keeps reading the replica until it has applied them;
the heads the hub serves are always ones read from the replica, never above what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from oa.khala.store import reader
from oa.khala.store.reader import JournalRow
from oa.khala.store.writer import NOTIFY_CHANNEL
from oa.khala.sync.bus import BusSettings, NatsListener, contiguous
from oa.khala.sync.live import QueryIndex
from oa.khala.sync.protocol import ProtocolError
from oa.khala.topics import TOPIC_NAMES
from oa.store.listen import listen_forever

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
        *,
        read_pool: asyncpg.Pool | None = None,
        replica_wait_s: float = 10.0,
        bus: BusSettings | None = None,
    ) -> None:
        """`url` and `pool` are the primary's; `read_pool`, when given, a streaming
        replica's, which then serves every read (`pool` is only asked, after a client
        waited `replica_wait_s` for the replica, whether its cursor exists at all).
        `bus`, when given, brings the projector's batches over NATS instead of a LISTEN
        and a journal read per batch on the primary (see `bus.py`)."""
        self._url = url
        # The LISTEN connection names the node too (`oa khala status` reads it).
        self._server_settings = {"application_name": application_name} if application_name else None
        self.primary_pool = pool
        self.pool = read_pool or pool  # every read: journal, heads, snapshots, live queries
        self.replica = read_pool is not None
        self.replica_wait_s = replica_wait_s
        # topic -> the head the primary notified: the replica is read until it reaches it.
        self.notified: dict[str, int] = {}
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
        self._bus_settings = bus
        self._bus: NatsListener | None = None
        self.bus_batches = 0  # batches taken from the bus (not read from Postgres)

    async def start(self) -> None:
        stored = await reader.heads(self.pool)
        for topic, (head, _) in stored.items():
            self.heads[topic] = head
        self._tasks = [
            asyncio.create_task(self._pump(), name="khala-hub-pump"),
            asyncio.create_task(self._tick(), name="khala-hub-tick"),
        ]
        if self._bus_settings is None:
            self._tasks.append(asyncio.create_task(self._listen(), name="khala-hub-listen"))
        else:
            b = self._bus_settings
            self._bus = NatsListener(self._from_bus, b.url, b.subject)
            try:
                await self._bus.start()
            except Exception as exc:
                await self.stop()
                raise RuntimeError(
                    f"OA_KHALA_BUS=nats, but NATS JetStream at {b.url} did not answer ({exc});"
                    " start it, set OA_KHALA_NATS_URL, or unset OA_KHALA_BUS to use Postgres alone"
                ) from exc

    async def stop(self) -> None:
        if self._bus is not None:
            await self._bus.stop()
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
        """Sockets following `topic`: whole, or through at least one live query on it (the
        dashboard's pages subscribe by live query, and the health page counts them)."""
        return sum(
            1 for s in self.sessions if topic in s.topics or any(q.topic == topic for q in s.queries.values())
        )

    async def _listen(self) -> None:
        await listen_forever(
            self._url, NOTIFY_CHANNEL, self._notified, self._wake.set,  # connect: catch up
            who="khala hub", server_settings=self._server_settings,
        )  # fmt: skip

    def _notified(self, payload: str) -> None:
        """The projector's NOTIFY payload is `topic=head topic=head ...`."""
        for part in payload.split():
            topic, _, head = part.partition("=")
            if head.isdigit() and int(head) > self.notified.get(topic, 0):
                self.notified[topic] = int(head)
        self._wake.set()

    def _from_bus(self, heads: dict[str, int], rows: list[JournalRow] | None) -> None:
        """A batch from the bus: dispatched if it follows our heads, else read from Postgres."""
        for topic, head in heads.items():
            if head > self.notified.get(topic, 0):
                self.notified[topic] = head
        if self.replica or rows is None or not contiguous(rows, self.heads):
            self._wake.set()  # a gap (or a replica to wait for): the journal decides
            return
        self.bus_batches += 1
        self.dispatch(rows)

    def _behind_notified(self) -> bool:
        return any(h > self.heads.get(t, 0) for t, h in self.notified.items() if t in self.heads)

    async def stored_heads(self, cursors: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """The stored heads (topic -> (head, retention floor)) as the read pool has them.

        On a replica, a cursor ahead of them was most likely served by a node whose replica
        (or primary) is further on: wait for ours to apply it (bounded), rather than call it
        stale or read the primary. If it never does, and the primary has it, the client is
        told to come back (or try another node); if the primary lacks it too, the history
        was rebuilt and the caller's stale_cursor says so.
        """
        stored = await reader.heads(self.pool)
        if not self.replica:
            return stored

        def ahead(heads: Mapping[str, tuple[int, int]]) -> dict[str, int]:
            return {t: c for t, c in cursors.items() if c > heads.get(t, (0, 0))[0]}

        deadline = time.monotonic() + self.replica_wait_s
        while ahead(stored) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            stored = await reader.heads(self.pool)
        waiting = ahead(stored)
        if waiting:
            primary = await reader.heads(self.primary_pool)
            if len(ahead(primary)) < len(waiting):
                raise ProtocolError(
                    "replica_lagging",
                    f"this node's read replica has not applied your watermarks {waiting} within "
                    f"{self.replica_wait_s:g} s; reconnect (another node may have them)",
                    fatal=True,
                    reconnect_after_ms=1000,
                )
        return stored

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
                chase = 0.01
                # One connection for the whole catch-up, not an acquire per read: each
                # release runs the pool's reset query (asyncpg `Connection.execute`, 5% of the
                # sync server's py-spy samples in bench/sync.py's scoped fan-out). It is the
                # read pool's: the replica's when there is one.
                async with self.pool.acquire() as conn:
                    while True:
                        rows = await reader.rows_after(conn, self.heads)
                        if rows:
                            self.batches_read += len({r.batch_id for r in rows})
                            self.rows_read += len(rows)
                            self.dispatch(rows)
                        # Read again only while behind what the projector notified: not once
                        # more to find nothing (that empty read per wake-up was half of what
                        # each node cost the primary: `oa bench nodes`).
                        if not self._behind_notified():
                            break
                        if not rows:
                            if not self.replica or chase > self._poll:
                                break
                            # The primary committed more than the replica has replayed: read again soon.
                            await asyncio.sleep(chase)
                            chase *= 2
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
        # Rows at or below the heads were already dispatched (from the bus, or a read of
        # the journal that crossed one from the bus).
        rows = [r for r in rows if r.watermark > self.heads.get(r.topic, 0)]
        if not rows:
            return
        for r in rows:
            self.heads[r.topic] = max(self.heads.get(r.topic, 0), r.watermark)
        cache: dict[tuple[object, ...], Any] = {}
        batch = list(rows)
        for session in list(self.topic_sessions):
            session.offer(batch, self.heads, cache)
        if self.queries.count:
            for query, matched in self.queries.match(batch).items():
                query.offer(matched)
        self.batches_dispatched += len({r.batch_id for r in rows})
