"""One client socket: authenticate, subscribe (replay, then live), refresh, expire.

The socket is reached only through `send`/`receive` callables, so this module does the
protocol's waiting and nothing else knows about Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from oa.khala.store import reader
from oa.khala.store.reader import JournalRow
from oa.khala.sync import protocol
from oa.khala.sync.hub import Hub
from oa.khala.sync.principal import SyncPrincipal, TokenRefused, Verify
from oa.khala.sync.protocol import ProtocolError
from oa.khala.topics import TOPICS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionLimits:
    auth_timeout_s: float = 10.0
    heartbeat_s: float = 15.0
    idle_timeout_s: float = 60.0
    outbound_queue: int = 256  # batches; beyond that the client is a slow consumer
    reconnect_after_ms: int = 1000
    messages_per_s: float = 20.0
    burst: int = 40
    replay_page: int = 500


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
        # (live topics, user, org): sessions with equal keys share one encoded frame per batch.
        self._fanout_key: tuple[tuple[str, ...], str, str | None] | None = None
        self._replaying: dict[str, list[list[JournalRow]]] = {}
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue(limits.outbound_queue)
        self._closing: ProtocolError | None = None
        self._last_inbound = time.monotonic()
        self._last_heartbeat = time.monotonic()
        self._tokens = float(limits.burst)
        self._refill_at = time.monotonic()
        self.closed = asyncio.Event()

    # -- outbound ---------------------------------------------------------------------

    def offer(
        self, batch: list[JournalRow], heads: Mapping[str, int], cache: dict[tuple[object, ...], bytes | None]
    ) -> None:
        """Called by the hub with whole projector batches (one or more); never awaits."""
        p = self.principal
        if p is None or self._closing is not None:
            return
        mine = [r for r in batch if r.topic in self.topics]
        if not mine:
            return
        replaying = {r.topic for r in mine} & set(self._replaying)
        if replaying:
            for topic in replaying:
                self._replaying[topic].append([r for r in mine if r.topic == topic])
            mine = [r for r in mine if r.topic not in replaying]
            if not mine:
                return
        key = self._fanout_key
        if key is None:
            key = self._fanout_key = (tuple(sorted(self.topics - set(self._replaying))), p.user_id, p.org_id)
        if key not in cache:
            # Sessions that see the same rows share one encoded frame, whoever they are
            # (e.g. every member of an org), so encoding is per distinct view, not per user.
            visible = tuple(i for i, r in enumerate(mine) if r.visible_to(p.user_id, p.org_id))
            view = ("view", key[0], visible)
            if view not in cache:
                live_heads = {t: heads.get(t, 0) for t in key[0]}
                cache[view] = batch_frame([mine[i] for i in visible], True, live_heads) if visible else None
            cache[key] = cache[view]
        data = cache[key]
        if data is not None:
            self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        try:
            self._out.put_nowait(data)
        except asyncio.QueueFull:
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
        if err.fatal:
            if self._closing is not None:
                return
            self._closing = err
            while not self._out.empty():
                self._out.get_nowait()
            self._out.put_nowait(err.frame())
            self._out.put_nowait(None)
        else:
            with contextlib.suppress(asyncio.QueueFull):
                self._out.put_nowait(err.frame())

    async def _writer(self) -> None:
        while True:
            data = await self._out.get()
            if data is None:
                return
            await self._send(data)

    # -- the session --------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        reader_task = asyncio.create_task(self._read_loop())
        try:
            await asyncio.wait([writer, reader_task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.hub.sessions.discard(self)
            reader_task.cancel()
            if not writer.done():
                # Let a queued fatal error reach the client before the socket closes.
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(writer, 1.0)
                writer.cancel()
            self.closed.set()

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
        self.principal = p
        self._fanout_key = None
        lost = [t for t in self.topics if t not in p.scopes]
        for t in lost:
            self.topics.discard(t)
            self._fanout_key = None
            self.fail(
                ProtocolError("forbidden_topic", f"the new token does not grant {t}; unsubscribed", topic=t)
            )
        self.hub.sessions.add(self)
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
            await self._authenticate(protocol.token_of(msg), refresh=True)
        elif kind == "auth":
            raise ProtocolError("bad_request", "already authenticated; use refresh_token to swap tokens")
        elif kind == "unsubscribe":
            for t in msg.get("topics") or []:
                self.topics.discard(t)
                self._replaying.pop(t, None)
            self._fanout_key = None
        elif kind == "subscribe":
            assert self.principal is not None
            await self._subscribe(protocol.parse_subscribe(msg, self.principal.scopes))

    async def _subscribe(self, sub: protocol.Subscribe) -> None:
        stored = await reader.heads(self.hub.pool)
        cursors: dict[str, int] = {}
        for topic in sub.topics:
            head, floor = stored.get(topic, (0, 0))
            cursor = sub.resume_after.get(topic)
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
        # Live batches that arrive while we replay are held back, then merged (no gap, no repeat).
        for topic in cursors:
            self._replaying[topic] = []
            self.topics.add(topic)
        self._fanout_key = None
        target = {t: self.hub.heads.get(t, 0) for t in cursors}
        self._enqueue(
            protocol.frame(
                "subscribed", topics=list(cursors), request_id=sub.request_id, head_watermarks=target
            )
        )
        p = self.principal
        assert p is not None
        after = dict(cursors)
        while True:
            rows = await reader.rows_after(self.hub.pool, after, target, self.limits.replay_page)
            if not rows:
                break
            for r in rows:
                after[r.topic] = max(after[r.topic], r.watermark)
            visible = [r for r in rows if r.visible_to(p.user_id, p.org_id)]
            if visible:
                self._enqueue(batch_frame(visible, False, target))
        held = {t: self._replaying.pop(t, []) for t in cursors}
        self._fanout_key = None
        pending = [
            r for batches in held.values() for b in batches for r in b if r.watermark > target[r.topic]
        ]
        visible = [
            r
            for r in sorted(pending, key=lambda r: (r.batch_id, r.topic, r.watermark))
            if r.visible_to(p.user_id, p.org_id)
        ]
        heads = {t: max(target[t], self.hub.heads.get(t, 0)) for t in cursors}
        self._enqueue(batch_frame(visible, True, heads))

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


def batch_frame(rows: list[JournalRow], replay_complete: bool, heads: Mapping[str, int]) -> bytes:
    return orjson.dumps(
        {
            "type": "update_batch",
            "updates": [r.wire() for r in rows],
            "replay_complete": replay_complete,
            "head_watermarks": dict(heads),
        }
    )
