"""One client socket: authenticate, subscribe (replay, then live), refresh, expire.

The socket is reached only through `send`/`receive` callables, so this module does the
protocol's waiting and nothing else knows about Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

from oa.khala.store import live as live_store
from oa.khala.store import reader
from oa.khala.store.reader import JournalRow
from oa.khala.sync import protocol
from oa.khala.sync.hub import Hub
from oa.khala.sync.live import LiveQuery, parse_live_subscribe, remove_update
from oa.khala.sync.principal import SyncPrincipal, TokenRefused, Verify
from oa.khala.sync.protocol import ProtocolError
from oa.khala.topics import TOPICS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionLimits:
    auth_timeout_s: float = 10.0
    heartbeat_s: float = 15.0
    idle_timeout_s: float = 60.0
    outbound_queue: int = 256  # frames; beyond that the client is a slow consumer
    # Bytes waiting to be written to one socket; beyond that the client is a slow consumer.
    # A replay reads its next page only once the queue is below half of this.
    max_queued_bytes: int = 4 << 20
    # The same for every socket of the process together (the hub keeps the count).
    max_server_queued_bytes: int = 256 << 20
    # A socket that takes longer than this to accept one frame is closed hard: its
    # transport is aborted, whatever state it is in (a peer that stopped reading).
    write_timeout_s: float = 10.0
    max_sockets_per_user: int = 50
    reconnect_after_ms: int = 1000
    messages_per_s: float = 20.0
    burst: int = 40
    replay_page: int = 500  # rows at most; fewer when rows are big (half the byte cap a page)
    max_subscriptions: int = 64  # live queries open on one socket
    max_list_limit: int = 500  # the largest `limit` a live-query list may ask for

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SessionLimits:
        """Defaults, overridden by `OA_KHALA_<FIELD>` (e.g. OA_KHALA_MAX_QUEUED_BYTES=1048576)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"OA_KHALA_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(getattr(cls, f.name))
            try:
                value = kind(raw)
            except ValueError:
                raise SystemExit(
                    f"OA_KHALA_{f.name.upper()}={raw!r} is not a {kind.__name__}; set a number"
                ) from None
            if value <= 0:
                raise SystemExit(f"OA_KHALA_{f.name.upper()} must be positive, not {raw!r}")
            values[f.name] = value
        return cls(**values)


class Session:
    def __init__(
        self,
        hub: Hub,
        verify: Verify,
        send: Callable[[bytes], Awaitable[None]],
        receive: Callable[[], Awaitable[str | bytes | None]],
        origin: str | None,
        limits: SessionLimits,
    ) -> None:
        self.hub = hub
        self._verify = verify
        self._send = send
        self._receive = receive
        self._origin = origin
        self.limits = limits
        self.principal: SyncPrincipal | None = None
        self.topics: set[str] = set()
        self.queries: dict[str, LiveQuery] = {}  # live queries by their client-chosen id
        # (live topics, user, org): sessions with equal keys share one encoded frame per batch.
        self._fanout_key: tuple[tuple[str, ...], str, str | None] | None = None
        # Topics still replaying from the journal: live batches for them are skipped, the
        # replay reads them from the journal instead (it chases the hub's heads).
        self._replaying: set[str] = set()
        # topic -> the highest watermark this client has while it replays (its cursor, then
        # what it was sent): nothing at or below it is ever sent again.
        self._after: dict[str, int] = {}
        # topic -> a cursor still ahead of the hub's head when the topic went live.
        self._ahead: dict[str, int] = {}
        # topic -> rows whose patch's base was written above this go as patches: -1 when
        # the client resumed from a cursor (it holds every base), else the head it
        # subscribed at ("live from now": it holds only what it is sent).
        self._base_floor: dict[str, int] = {}
        self._replay_task: asyncio.Task[None] | None = None
        # Outbound frames (None: close). A list and a future the writer waits on, created
        # only while it waits, rather than an asyncio.Queue (three deques and an Event) and
        # two Events per socket: bench/sync.py's idle phase measured 53.8 KB per idle
        # subscription with them, against the 50 KB target.
        self._out: list[bytes | None] = []
        self._wake: asyncio.Future[None] | None = None
        self.queued_bytes = 0
        self._drained: asyncio.Event | None = None  # made by the first replay that waits for room
        self._closing: ProtocolError | None = None
        self.stalled = False  # a write did not complete within write_timeout_s
        self._last_inbound = time.monotonic()
        self._last_heartbeat = time.monotonic()
        self._tokens = float(limits.burst)
        self._refill_at = time.monotonic()
        self._closed: asyncio.Event | None = None
        self._ended = False

    @property
    def closed(self) -> asyncio.Event:
        """Set once the session has ended (made on first use: most sockets never ask)."""
        if self._closed is None:
            self._closed = asyncio.Event()
            if self._ended:
                self._closed.set()
        return self._closed

    @property
    def queued_frames(self) -> int:
        return len(self._out)

    @property
    def closing(self) -> ProtocolError | None:
        """The fatal error this session is closing with, if any."""
        return self._closing

    # -- outbound ---------------------------------------------------------------------

    def offer(
        self, batch: list[JournalRow], heads: Mapping[str, int], cache: dict[tuple[object, ...], Any]
    ) -> None:
        """Called by the hub with whole projector batches (one or more); never awaits."""
        p = self.principal
        if p is None or self._closing is not None:
            return
        live = self.topics - self._replaying if self._replaying else self.topics
        mine = [r for r in batch if r.topic in live]
        if not mine:
            return
        if self._ahead:
            # The client's cursor was ahead of this hub (it resumed from an HTTP snapshot the
            # hub had not caught up with): rows at or below it are never sent.
            ahead = self._ahead
            fresh = [r for r in mine if r.watermark > ahead.get(r.topic, 0)]
            for t in [t for t, wm in ahead.items() if heads.get(t, 0) >= wm]:
                del ahead[t]
            if len(fresh) != len(mine):
                keep = [r for r in fresh if r.visible_to(p.user_id, p.org_id)]
                if keep:
                    heads_now = {t: heads.get(t, 0) for t in sorted(live)}
                    self._enqueue(batch_frame(keep, True, heads_now, self._holds_base))
                return
        key = self._fanout_key
        if key is None:
            key = self._fanout_key = (tuple(sorted(live)), p.user_id, p.org_id)
        # Sessions that see the same rows share one encoded frame, whoever they are (e.g.
        # every member of an org), so encoding is per distinct view, not per user. Which
        # rows go as patches is part of the view: nearly always "every row that has one"
        # (the client was sent, or resumed holding, each base), checked in O(1) per session.
        seen = cache.get(key)
        if seen is None:
            visible = tuple(i for i, r in enumerate(mine) if r.visible_to(p.user_id, p.org_id))
            bases = [mine[i].base_watermark or 0 for i in visible if mine[i].patch is not None]
            seen = cache[key] = (visible, min(bases, default=2**62))
        visible, lowest_base = seen
        if all(self._base_floor.get(t, 2**62) < lowest_base for t in key[0]):
            patched: tuple[int, ...] | None = None  # every row with a patch
        else:
            patched = tuple(i for i in visible if self._holds_base(mine[i]))
        view = ("view", key[0], visible, patched)
        if view not in cache:
            live_heads = {t: heads.get(t, 0) for t in key[0]}
            rows = [mine[i] for i in visible]
            chosen = None if patched is None else {id(mine[i]) for i in patched}
            cache[view] = (
                batch_frame(rows, True, live_heads, None if chosen is None else (lambda r: id(r) in chosen))
                if visible
                else None
            )
        data = cache[view]
        if data is not None:
            self._enqueue(data)

    def _holds_base(self, r: JournalRow) -> bool:
        """Whether this client holds the base of `r`'s patch: it resumed from a cursor (it
        holds the topic's state there, and was sent everything since), or the base was
        written after it subscribed (so it was sent: a patch's base is visible whenever
        the row is, the projector makes sure)."""
        return r.patch is not None and (r.base_watermark or 0) > self._base_floor.get(r.topic, 2**62)

    def _enqueue(self, data: bytes, paced: bool = False) -> None:
        """Queue a frame, or call the client a slow consumer: too many frames, too many bytes
        for this socket, or for the whole server. One frame always fits an empty queue.

        `paced` frames (replay pages) skip the byte check: the replay waited for room and
        sized its page to it, so they can overshoot the cap by at most one page."""
        size = len(data)
        if (
            not paced
            and self.queued_bytes
            and (
                self.queued_bytes + size > self.limits.max_queued_bytes
                or self.hub.queued_bytes + size > self.hub.max_queued_bytes
            )
        ):
            self._slow_consumer()
            return
        if len(self._out) >= self.limits.outbound_queue:
            self._slow_consumer()
            return
        self._put(data)
        self._count(size)

    def _put(self, data: bytes | None) -> None:
        self._out.append(data)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _count(self, size: int) -> None:
        self.queued_bytes += size
        self.hub.queued_bytes += size

    def slow_consumer(self) -> None:
        self._slow_consumer()

    def send_query_batch(
        self, query: LiveQuery, updates: list[dict[str, Any]], replay_complete: bool, paced: bool = False
    ) -> None:
        """One frame of a live query: its updates, its own replay_complete and cursor."""
        if self._closing is not None:
            return
        frame = {
            "type": "update_batch",
            "sub": query.sub,
            "updates": updates,
            "replay_complete": replay_complete,
            "head_watermarks": {query.topic: query.after},
        }
        self._enqueue(orjson.dumps(frame), paced=paced)

    def drop_query(self, sub: str) -> None:
        q = self.queries.pop(sub, None)
        if q is not None:
            q.close()
            self.hub.queries.remove(q)

    def _slow_consumer(self) -> None:
        self.fail(
            ProtocolError(
                "slow_consumer",
                "you fell too far behind the live stream; reconnect and resume from your watermarks",
                fatal=True,
                reconnect_after_ms=self.limits.reconnect_after_ms,
            )
        )

    def fail(self, err: ProtocolError) -> None:
        """Send `err` ahead of anything queued and close (if fatal)."""
        data = err.frame()
        if err.fatal:
            if self._closing is not None:
                return
            self._closing = err
            self._discard_queued()
            self._put(data)
            self._put(None)
            self._count(len(data))
        elif len(self._out) < self.limits.outbound_queue:
            self._put(data)
            self._count(len(data))

    def _discard_queued(self) -> None:
        queued, self._out = self._out, []
        for data in queued:
            self._count(-len(data or b""))

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._out:
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
            data = self._out.pop(0)  # at most `outbound_queue` frames: a short move
            if data is None:
                return
            try:
                # A peer that stops reading fills the kernel's and the server's buffers,
                # then a send waits forever: past the timeout the socket is given up.
                # `asyncio.timeout`, not `wait_for`: on 3.11 wait_for wraps every frame in a
                # task of its own (bench/sync.py scoped fan-out profile: wait_for and
                # _ensure_future were ~8% of the sync server's samples).
                async with asyncio.timeout(self.limits.write_timeout_s):
                    await self._send(data)
                self.hub.frames_sent += 1
                self.hub.bytes_sent += len(data)
            except TimeoutError:
                self.stalled = True
                log.info(
                    "khala socket took over %ss to take a frame; aborting it", self.limits.write_timeout_s
                )
                return
            finally:
                self._count(-len(data))
                if self._drained is not None:
                    self._drained.set()

    async def room(self) -> None:
        """Wait until this socket's queue is under half its byte cap, and the server's too."""
        half, server_half = self.limits.max_queued_bytes // 2, self.hub.max_queued_bytes // 2
        while self.queued_bytes > half or self.hub.queued_bytes > server_half:
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            # Other sessions' writers free server room without telling us: poll as well.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), 0.05)

    # -- the session --------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        reader_task = asyncio.create_task(self._read_loop())
        try:
            await asyncio.wait([writer, reader_task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self.principal is not None:
                self.hub.unregister(self, self.principal.user_id)
            for sub in list(self.queries):
                self.drop_query(sub)
            reader_task.cancel()
            if self._replay_task is not None:
                self._replay_task.cancel()
            if not writer.done():
                # Let a queued fatal error reach the client before the socket closes
                # (each write is bounded by write_timeout_s).
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(writer, 1.0)
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self._discard_queued()  # free what was never sent
            self._ended = True
            if self._closed is not None:
                self._closed.set()

    async def _read_loop(self) -> None:
        try:
            raw = await asyncio.wait_for(self._receive(), self.limits.auth_timeout_s)
        except TimeoutError:
            self.fail(ProtocolError("unauthorized", "send {type: auth, token} first", fatal=True))
            return
        if raw is None:
            return
        try:
            msg = protocol.parse(raw)
            if msg["type"] != "auth":
                raise ProtocolError(
                    "unauthorized", "the first message must be {type: auth, token}", fatal=True
                )
            await self._authenticate(protocol.token_of(msg))
        except ProtocolError as err:
            err.fatal = True
            self.fail(err)
            return
        while True:
            raw = await self._receive()
            if raw is None:
                return
            self._last_inbound = time.monotonic()
            try:
                self._rate_limit()
                await self._handle(protocol.parse(raw))
            except ProtocolError as err:
                self.fail(err)
                if err.fatal:
                    return

    async def _authenticate(self, token: str, refresh: bool = False) -> None:
        try:
            p = await self._verify(token, self._origin)
        except TokenRefused as exc:
            raise ProtocolError(exc.code, exc.message, fatal=not refresh, reason=exc.reason) from None
        if refresh and self.principal is not None and p.user_id != self.principal.user_id:
            raise ProtocolError("unauthorized", "a refreshed token must be for the same user", fatal=True)
        if not refresh:
            cap = self.limits.max_sockets_per_user
            open_now = self.hub.sockets_per_user[p.user_id]
            if open_now >= cap:
                raise ProtocolError(
                    "too_many_connections",
                    f"user {p.user_id} already has {open_now} open sockets, the limit is {cap}; "
                    "close some (one socket can subscribe to every topic)",
                    fatal=True,
                    limit=cap,
                )
        self.principal = p
        self._fanout_key = None
        lost = [t for t in self.topics if t not in p.scopes]
        for t in lost:
            self._drop_topic(t)
            self.fail(
                ProtocolError("forbidden_topic", f"the new token does not grant {t}; unsubscribed", topic=t)
            )
        for q in [q for q in self.queries.values() if q.topic not in p.scopes]:
            self.drop_query(q.sub)
            self.fail(
                ProtocolError(
                    "forbidden_topic",
                    f"the new token does not grant {q.topic}; {q.sub} ended",
                    topic=q.topic,
                    sub=q.sub,
                )
            )
        self.hub.register(self, p.user_id)
        self._enqueue(
            protocol.frame(
                "token_refreshed" if refresh else "ready",
                user_id=p.user_id,
                scopes=sorted(p.scopes),
                expires_at=int(p.expires_at),
            )
        )

    def _rate_limit(self) -> None:
        now = time.monotonic()
        self._tokens = min(
            self.limits.burst, self._tokens + (now - self._refill_at) * self.limits.messages_per_s
        )
        self._refill_at = now
        if self._tokens < 1:
            raise ProtocolError(
                "rate_limited",
                f"more than {self.limits.messages_per_s:g} messages/s; slow down",
                reconnect_after_ms=self.limits.reconnect_after_ms,
            )
        self._tokens -= 1

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "heartbeat":
            self._enqueue(protocol.frame("heartbeat", sent_at_ms=int(time.time() * 1000)))
        elif kind == "refresh_token":
            # A refused refresh, malformed or not, leaves the socket on its current token.
            await self._authenticate(protocol.token_of(msg, fatal=False), refresh=True)
        elif kind == "auth":
            raise ProtocolError("bad_request", "already authenticated; use refresh_token to swap tokens")
        elif kind == "unsubscribe":
            for t in msg.get("topics") or []:
                self._drop_topic(t)
            for sub in msg.get("subs") or []:
                if isinstance(sub, str):
                    self.drop_query(sub)
        elif kind == "fetch":
            assert self.principal is not None
            await self._fetch(protocol.parse_fetch(msg, self.principal.scopes))
        elif kind == "subscribe" and "sub" in msg:
            assert self.principal is not None
            self._subscribe_query(msg)
        elif kind == "subscribe":
            assert self.principal is not None
            await self._subscribe(protocol.parse_subscribe(msg, self.principal.scopes))

    async def _fetch(self, req: protocol.Fetch) -> None:
        """The whole current documents a client asks for (it could not apply a patch):
        `upsert` for each it may see, `remove` for any other key, so a foreign document
        answers exactly as one that does not exist. Not part of the ordered stream."""
        p = self.principal
        assert p is not None
        rows = await live_store.documents_by_key(
            self.hub.pool, req.topic, list(req.doc_keys), user_id=p.user_id, org_id=p.org_id
        )
        found = {r.doc_key: r for r in rows if r.visible_to(p.user_id, p.org_id)}
        documents = [
            {**found[k].wire(), "op": "upsert"}
            if k in found
            else remove_update(req.topic, k, 0, 0, deleted=True)
            for k in req.doc_keys
        ]
        # Up to 100 whole documents: sent in frames of about half this socket's byte cap at
        # most (several frames with the same request_id when they weigh more), each once the
        # queue has room, as replay pages are.
        half = self.limits.max_queued_bytes // 2
        part: list[dict[str, Any]] = []
        weight = 0
        for i, doc in enumerate(documents):
            size = len(found[doc["doc_key"]].payload or "") + 300 if doc["op"] == "upsert" else 200
            part.append(doc)
            weight += size
            if i == len(documents) - 1 or weight >= half:
                await self.room()
                self._enqueue(
                    protocol.frame(
                        "documents", topic=req.topic, sub=req.sub, request_id=req.request_id, documents=part
                    ),
                    paced=True,
                )
                part, weight = [], 0

    def _subscribe_query(self, msg: dict[str, Any]) -> None:
        assert self.principal is not None
        spec = parse_live_subscribe(msg, self.principal.scopes, max_list_limit=self.limits.max_list_limit)
        if spec.sub in self.queries:
            self.drop_query(spec.sub)  # the same id again: the new scope replaces the old
        cap = self.limits.max_subscriptions
        if len(self.queries) >= cap:
            raise ProtocolError(
                "bad_subscription",
                f"{cap} live queries are open on this socket, the limit; unsubscribe some ({{type: unsubscribe, subs}})",
                sub=spec.sub,
                limit=cap,
            )
        query = LiveQuery(self, spec)
        self.queries[spec.sub] = query
        self.hub.queries.add(query)  # from now on live rows are held until the load is sent
        self._enqueue(
            protocol.frame(
                "subscribed",
                topics=[spec.topic],
                sub=spec.sub,
                request_id=spec.request_id,
                head_watermarks={spec.topic: self.hub.heads.get(spec.topic, 0)},
            )
        )
        query.start()

    async def _subscribe(self, sub: protocol.Subscribe) -> None:
        stored = await self.hub.stored_heads(sub.resume_after)
        cursors: dict[str, int] = {}
        for topic in sub.topics:
            head, floor = stored.get(topic, (0, 0))
            cursor = sub.resume_after.get(topic)
            self._base_floor[topic] = -1 if cursor is not None else head
            if cursor is None:
                cursor = head  # no cursor: live from now (hydrate over HTTP for the current state)
            budget = TOPICS[topic].replay_budget
            if cursor < floor or cursor > head or head - cursor > budget:
                why = (
                    f"watermark {cursor} is below the retention floor {floor}"
                    if cursor < floor
                    else f"watermark {cursor} is ahead of the head {head} (history was rebuilt)"
                    if cursor > head
                    else f"{head - cursor} updates behind, over the replay budget of {budget}"
                )
                raise ProtocolError(
                    "stale_cursor",
                    f"{topic}: {why}; hydrate over HTTP (GET /sync/v1/topics/{topic}/snapshot) and resume from its watermark",
                    topic=topic,
                    full_resync_required=True,
                    retention_floor=floor,
                    head_watermark=head,
                )
            cursors[topic] = cursor
        for topic, cursor in cursors.items():
            self.topics.add(topic)
            self.hub.topic_sessions.add(self)
            self._replaying.add(topic)
            self._after[topic] = cursor
        self._fanout_key = None
        self._enqueue(
            protocol.frame(
                "subscribed",
                topics=list(cursors),
                request_id=sub.request_id,
                head_watermarks={t: max(self.hub.heads.get(t, 0), c) for t, c in cursors.items()},
            )
        )
        # In a task of its own, so heartbeats and refreshes are still read while a replay
        # waits for a slow socket; replays of successive subscribes run one after another.
        previous = self._replay_task
        self._replay_task = asyncio.create_task(self._replay(cursors, previous))

    async def _replay(self, cursors: Mapping[str, int], previous: asyncio.Task[None] | None = None) -> None:
        """Send the journal past the cursors page by page, as the socket drains, then go live.

        Live batches for these topics are skipped meanwhile: the replay chases the hub's
        heads instead, and switches to live (without awaiting) once it has read up to them,
        so nothing is missed or repeated and nothing is held in memory but one page.
        """
        if previous is not None:
            await previous
        try:
            await self._replay_pages(cursors)
        except Exception:  # the journal could not be read (Postgres restarting...)
            log.warning("khala replay failed", exc_info=True)
            self.fail(
                ProtocolError(
                    "internal_error",
                    "the server could not replay the journal; reconnect and resume from your watermarks",
                    fatal=True,
                    reconnect_after_ms=self.limits.reconnect_after_ms,
                )
            )

    async def _replay_pages(self, cursors: Mapping[str, int]) -> None:
        p = self.principal
        assert p is not None
        topics = list(cursors)
        after = self._after
        page_bytes = self.limits.max_queued_bytes // 2
        page = min(self.limits.replay_page, 64)  # rows; then sized from what rows weigh
        while True:
            await self.room()
            topics = [t for t in topics if t in self._replaying]  # not unsubscribed meanwhile
            target = {t: self.hub.heads.get(t, 0) for t in topics}
            behind = {t: after[t] for t in topics if after[t] < target[t]}
            if not behind:
                break
            rows = await reader.rows_after(self.hub.pool, behind, target, page)
            if self._closing is not None:
                return
            rows = [r for r in rows if r.topic in self._replaying]
            for r in rows:
                after[r.topic] = max(after[r.topic], r.watermark)
            visible = [r for r in rows if r.visible_to(p.user_id, p.org_id)]
            if visible:
                self._enqueue(batch_frame(visible, False, target, self._holds_base), paced=True)
            if rows:
                weight = sum(r.weight for r in rows) / len(rows)
                page = max(1, min(self.limits.replay_page, int(page_bytes / weight)))
            else:  # nothing stored up to the hub's heads (history rebuilt): nothing to replay
                after.update({t: target[t] for t in behind})
        # No await from the check above to here: the next live batch starts past `after`.
        self._replaying.difference_update(topics)
        for t in topics:
            if after[t] > self.hub.heads.get(t, 0):
                self._ahead[t] = after[t]
        self._fanout_key = None
        self._enqueue(batch_frame([], True, {t: max(self.hub.heads.get(t, 0), after[t]) for t in topics}))

    def _drop_topic(self, topic: str) -> None:
        self.topics.discard(topic)
        if not self.topics:
            self.hub.topic_sessions.discard(self)
        self._replaying.discard(topic)
        self._after.pop(topic, None)
        self._ahead.pop(topic, None)
        self._base_floor.pop(topic, None)
        self._fanout_key = None

    def tick(self, now: float, wall: float) -> None:
        """Expiry, idleness and heartbeats; the hub calls this for every session each second
        (one timer for all sessions instead of a task per socket: memory per subscription)."""
        p = self.principal
        if p is not None and wall >= p.expires_at:
            self.fail(
                ProtocolError(
                    "token_expired", "your sync token expired; reconnect with a fresh one", fatal=True
                )
            )
        elif now - self._last_inbound > self.limits.idle_timeout_s:
            self.fail(ProtocolError("idle_timeout", "no message or heartbeat from you; closing", fatal=True))
        elif p is not None and now - self._last_heartbeat >= self.limits.heartbeat_s:
            self._last_heartbeat = now
            self._enqueue(protocol.frame("heartbeat", sent_at_ms=int(wall * 1000)))

    def revoke(self, reason: str) -> None:
        self.fail(
            ProtocolError(
                "unauthorized", f"your token was revoked ({reason}); sign in again", fatal=True, reason=reason
            )
        )


def batch_frame(
    rows: list[JournalRow],
    replay_complete: bool,
    heads: Mapping[str, int],
    patched: Callable[[JournalRow], bool] | None = None,
) -> bytes:
    """`patched`: which rows go as patches (None: every row that has one)."""
    return orjson.dumps(
        {
            "type": "update_batch",
            "updates": [r.wire(patched(r) if patched is not None else True) for r in rows],
            "replay_complete": replay_complete,
            "head_watermarks": dict(heads),
        }
    )
