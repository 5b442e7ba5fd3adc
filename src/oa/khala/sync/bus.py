"""The NATS JetStream fan-out bus between Khala nodes (`OA_KHALA_BUS=nats`).

Why: over Postgres alone, every node reads every committed batch from the journal, so
the primary serves each batch once per node: `oa bench nodes` measured 0.5-1.0 ms of
primary CPU per commit per node (4-5% of a core per node at 100 events/s); 16 nodes took
0.313 of a core over Postgres alone and 0.056 over this bus (README, "Measured").
With the bus, one relay (`oa khala relay`) reads each batch once and publishes it to a
JetStream stream; every node takes it from NATS. The primary's load no longer grows
with the nodes.

Correctness never rests on the bus: watermarks are contiguous per topic, so a node that
sees a batch which does not start right after its heads (a message lost, a relay
restarted, a batch too large for one message) reads the journal from Postgres, as it does
without a bus; and it still polls Postgres as a safety net. Several relays may run for
availability: JetStream drops a batch published twice (`Nats-Msg-Id` = the batch id).
A node reading a streaming replica takes the bus as a wake-up only (the rows may be ahead
of its replica) and reads its replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple
from typing import Any

import asyncpg
import nats
import orjson
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from oa.khala.store import reader
from oa.khala.store.reader import JournalRow
from oa.khala.store.writer import NOTIFY_CHANNEL
from oa.khala.sync.bus_settings import DEFAULT_BUS_SUBJECT, DEFAULT_NATS_URL, BusSettings
from oa.khala.topics import TOPIC_NAMES
from oa.store.listen import listen_forever

log = logging.getLogger(__name__)

# The settings live with Khala's (read at an entry point); named here too for callers.
DEFAULT_URL = DEFAULT_NATS_URL
DEFAULT_SUBJECT = DEFAULT_BUS_SUBJECT
__all__ = ["BusSettings", "NatsListener", "Relay", "contiguous", "decode", "encode", "stream_name"]


def stream_name(subject: str) -> str:
    return subject.replace(".", "_").replace("*", "_").replace(">", "_").upper()


def encode(rows: Sequence[JournalRow], heads: Mapping[str, int], max_bytes: int) -> bytes:
    """One projector batch; without its rows when they would not fit one message."""
    data = orjson.dumps({"heads": dict(heads), "rows": [astuple(r) for r in rows]})
    if len(data) > max_bytes:
        data = orjson.dumps({"heads": dict(heads), "rows": None})
    return data


def decode(data: bytes) -> tuple[dict[str, int], list[JournalRow] | None]:
    msg = orjson.loads(data)
    rows = msg.get("rows")
    return dict(msg["heads"]), None if rows is None else [JournalRow(*r) for r in rows]


def contiguous(rows: Sequence[JournalRow], heads: Mapping[str, int]) -> bool:
    """Whether the rows above `heads` start right after them, topic by topic."""
    first: dict[str, int] = {}
    for r in rows:
        if r.watermark > heads.get(r.topic, 0):
            first[r.topic] = min(first.get(r.topic, r.watermark), r.watermark)
    return all(wm == heads.get(t, 0) + 1 for t, wm in first.items())


async def ensure_stream(js: Any, subject: str) -> None:
    name = stream_name(subject)
    try:
        await js.stream_info(name)
    except NotFoundError:
        # A short history: nodes take new batches only, the journal is the record.
        await js.add_stream(
            name=name,
            subjects=[subject],
            max_age=600.0,
            max_bytes=256 << 20,
            duplicate_window=120.0,
            storage=js_api.StorageType.MEMORY,
        )


class NatsListener:
    """A node's side: batches from the bus, handed to `on_batch(heads, rows or None)`."""

    def __init__(
        self,
        on_batch: Callable[[dict[str, int], list[JournalRow] | None], None],
        url: str = DEFAULT_URL,
        subject: str = DEFAULT_SUBJECT,
    ) -> None:
        self._on_batch = on_batch
        self._url = url
        self._subject = subject
        self._nc: Any = None

    async def start(self) -> None:
        async def disconnected() -> None:
            log.warning("khala lost its NATS connection; Postgres polls meanwhile")

        self._nc = await nats.connect(self._url, disconnected_cb=disconnected, max_reconnect_attempts=-1)
        js = self._nc.jetstream()
        await ensure_stream(js, self._subject)

        async def received(msg: Any) -> None:
            try:
                heads, rows = decode(msg.data)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("khala bus: a message it cannot read on %s", self._subject)
                return
            self._on_batch(heads, rows)

        await js.subscribe(
            self._subject,
            cb=received,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.NEW,
            idle_heartbeat=2.0,
        )

    async def stop(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()


class Relay:
    """Reads each committed batch from the journal once and publishes it to the bus.

    `url` is the primary (LISTEN and reads, as the reader role). It starts at the current
    heads: a batch committed while no relay ran is never published, and nodes read it from
    Postgres when the next one shows the gap.
    """

    def __init__(self, url: str, nats_url: str = DEFAULT_URL, subject: str = DEFAULT_SUBJECT) -> None:
        self._url = url
        self._nats_url = nats_url
        self._subject = subject
        self._wake = asyncio.Event()
        self.heads: dict[str, int] = {}
        self.published = 0

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        nc = await nats.connect(self._nats_url, max_reconnect_attempts=-1)
        js = nc.jetstream()
        await ensure_stream(js, self._subject)
        max_bytes = int(nc.max_payload) - 4096
        pool = await asyncpg.create_pool(self._url, min_size=1, max_size=2)
        try:
            # Every topic, stored head or not: a topic without one yet starts at 0.
            self.heads = dict.fromkeys(TOPIC_NAMES, 0)
            self.heads.update({t: h for t, (h, _) in (await reader.heads(pool)).items()})
            listen = asyncio.create_task(self._listen())
            if ready is not None:
                ready()
            try:
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    self._wake.clear()
                    try:
                        await self._publish_new(pool, js, max_bytes)
                    except (OSError, asyncpg.PostgresError, nats.errors.Error) as exc:
                        log.warning("khala relay: %s; retrying", exc)
                        await asyncio.sleep(0.5)
            finally:
                listen.cancel()
        finally:
            await pool.close()
            await nc.close()

    async def _publish_new(self, pool: asyncpg.Pool, js: Any, max_bytes: int) -> None:
        while True:
            rows = await reader.rows_after(pool, self.heads)
            if not rows:
                return
            batches: dict[int, list[JournalRow]] = {}
            for r in rows:
                batches.setdefault(r.batch_id, []).append(r)
            for batch_id, batch in batches.items():
                for r in batch:
                    self.heads[r.topic] = max(self.heads.get(r.topic, 0), r.watermark)
                heads = {t: self.heads[t] for t in {r.topic for r in batch}}
                await js.publish(
                    self._subject,
                    encode(batch, heads, max_bytes),
                    headers={"Nats-Msg-Id": str(batch_id)},
                )
                self.published += 1

    async def _listen(self) -> None:
        await listen_forever(
            self._url, NOTIFY_CHANNEL, lambda _payload: self._wake.set(), self._wake.set, who="khala relay"
        )
