"""The Python Khala client: a live local cache of documents, kept by the sync protocol.

It hydrates each topic over HTTP, subscribes from that watermark, applies update batches
(dropping any update whose `doc_version` is not newer than the one it holds), refreshes
its token before expiry on the live socket, reconnects with backoff and resumes from its
watermarks, and rehydrates by itself after `stale_cursor`.

Updates may be patches against the version held (`oa.khala.deltas`): applied, checked by
the resulting `payload_hash`, and on a missing base or a mismatch the client sends `fetch`
and takes the whole document from the `documents` answer.

It takes one URL or several (Khala nodes are stateless over one Postgres, so any node can
resume any cursor): when its node dies or refuses, it moves to the next one in the list,
with a jittered backoff that grows only while no node answers, and resumes every topic and
every live query from its own watermark there. When a whole round of nodes fails,
`unavailable` says which answered what, and `wait_until` raises it instead of a bare timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from oa.khala import deltas
from oa.khala.live_view import LiveView
from oa.khala.topics import TOPICS

log = logging.getLogger(__name__)

TokenProvider = Callable[[], Awaitable[str]]
ChangeCallback = Callable[[str, dict[str, Any] | None], None]


@dataclass
class Document:
    topic: str
    doc_key: str
    doc_version: int
    payload: dict[str, Any] | None
    payload_hash: str | None
    projection_version: int = 0


def is_newer(update: dict[str, Any], held: Document) -> bool:
    """Updates are ordered by (projection_version, doc_version): a document re-folded by a
    new projection version keeps its doc_version and still replaces the one held."""
    return (int(update.get("projection_version") or 0), update["doc_version"]) > (
        held.projection_version,
        held.doc_version,
    )


@dataclass
class ClientStats:
    connects: int = 0
    batches: int = 0
    applied: int = 0
    dropped_stale: int = 0
    hydrations: int = 0
    refreshes: int = 0
    patches_applied: int = 0
    missing_base: int = 0
    hash_mismatches: int = 0
    fetches_sent: int = 0  # `fetch` messages (topic-wide documents and live queries)
    fetched: int = 0  # whole documents taken from `documents` answers (topic-wide)
    errors: list[dict[str, Any]] = field(default_factory=list)


class KhalaError(Exception):
    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame


class KhalaUnavailable(ConnectionError):
    """No Khala node answered: every URL was tried at least once since the last good session."""

    def __init__(self, failures: dict[str, str]) -> None:
        tried = "; ".join(f"{url}: {why}" for url, why in failures.items())
        super().__init__(
            f"no Khala node answers ({tried}); check that the nodes run and that these URLs reach them"
        )
        self.failures = dict(failures)


def node_urls(base_url: str | Sequence[str]) -> list[str]:
    """One URL, a comma-separated list, or a sequence of them, as http(s) base URLs."""
    raw = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    urls = [u.strip().rstrip("/") for u in raw if u and u.strip()]
    if not urls:
        raise ValueError("KhalaClient needs at least one Khala URL (e.g. http://127.0.0.1:8789)")
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise ValueError(f"Khala URL {u!r} must start with http:// or https://")
    return urls


class KhalaClient:
    def __init__(
        self,
        base_url: str | Sequence[str],
        token_provider: TokenProvider,
        topics: list[str],
        *,
        on_change: ChangeCallback | None = None,
        refresh_before_s: float | None = 30.0,
        heartbeat_s: float = 15.0,
        max_backoff_s: float = 5.0,
        hydrate: bool = True,
    ) -> None:
        self.urls = node_urls(base_url)
        self._node = 0  # index in `urls` of the node in use (or tried next)
        self.unavailable: KhalaUnavailable | None = None  # set while no node answers
        self._failures: dict[str, str] = {}  # url -> why, since the last good session
        self._token_provider = token_provider
        self.topics = list(topics)
        self.on_change = on_change
        self._refresh_before = refresh_before_s
        self._heartbeat = heartbeat_s
        self._max_backoff = max_backoff_s
        self._hydrate_first = hydrate
        self.documents: dict[str, Document] = {}
        self.watermarks: dict[str, int] = {}
        self.heads: dict[str, int] = {}
        self.views: dict[str, LiveView] = {}  # live queries by their id
        # topic-wide documents whose whole version was asked for -> newest version skipped since
        self.fetching: dict[str, int] = {}
        self.stats = ClientStats()
        self.live = asyncio.Event()  # set while subscribed and caught up
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._expires_at = 0.0
        self._connected = False  # the current session reached `ready`
        self._rehydrate: set[str] = set()  # topics refused with stale_cursor

    @property
    def base_url(self) -> str:
        """The node in use (or the one tried next)."""
        return self.urls[self._node]

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://").replace("https://", "wss://") + "/sync/v1/ws"

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="khala-client")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

    async def __aenter__(self) -> KhalaClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def watch(self, sub: str, topic: str, scope: dict[str, Any]) -> LiveView:
        """A live query: `scope` is {"doc_key"}, {"stream"} or a list {"where", "order_by",
        "limit"}. The view is kept current across reconnects (each resumes on its own)."""
        view = LiveView(sub, topic, scope)
        self.views[sub] = view
        if self._ws is not None:
            asyncio.get_running_loop().create_task(self._send(view.subscribe_frame()))
        return view

    async def unwatch(self, sub: str) -> None:
        if self.views.pop(sub, None) is not None and self._ws is not None:
            await self._send({"type": "unsubscribe", "subs": [sub]})

    async def _send(self, frame: dict[str, Any]) -> None:
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(orjson.dumps(frame).decode())

    async def wait_until(self, predicate: Callable[[KhalaClient], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate(self)` holds (checked after every applied batch). On timeout
        while no node answers, raises `KhalaUnavailable` (which nodes, and what each said)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: predicate(self))
        except TimeoutError:
            if self.unavailable is not None:
                raise self.unavailable from None
            raise

    # -- the loop -------------------------------------------------------------------------

    async def _run_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except KhalaError as exc:
                code = exc.frame.get("code")
                if code == "stale_cursor":
                    # Rehydrate at the start of the next session (whichever node it reaches).
                    topic = exc.frame.get("topic")
                    self._rehydrate.update([topic] if isinstance(topic, str) else self.topics)
                    continue
                self._failed(f"refused: {exc}")
                if code in ("slow_consumer", "rate_limited"):
                    await asyncio.sleep(int(exc.frame.get("reconnect_after_ms", 1000)) / 1000)
                    continue
                if code != "token_expired":
                    log.warning("khala refused: %s", exc)
            except (OSError, ConnectionClosed, httpx.HTTPError, TimeoutError) as exc:
                self._failed(f"{type(exc).__name__}: {exc}".rstrip(": "))
                log.info("khala connection to %s lost (%s); reconnecting", self.base_url, type(exc).__name__)
            except Exception as exc:
                self._failed(f"{type(exc).__name__}: {exc}")
                log.exception("khala client failed; reconnecting")
            self.live.clear()
            if self._connected:
                backoff = 0.1  # the last session was good: fail over promptly
            self._connected = False
            self._node = (self._node + 1) % len(self.urls)  # the next node
            await asyncio.sleep(backoff * (0.5 + random.random()))
            # Grow the wait only while nodes keep failing (a full round of them at most).
            backoff = min(backoff * 2, self._max_backoff)

    def _failed(self, why: str) -> None:
        """Remember why this node failed; after a whole round, say no node answers."""
        self._failures[self.base_url] = why
        if len(self._failures) == len(self.urls) and not self._connected:
            first = self.unavailable is None
            self.unavailable = KhalaUnavailable(self._failures)
            if first:
                log.warning("%s", self.unavailable)

    async def _session(self) -> None:
        stale = [t for t in self.topics if t in self._rehydrate]
        if self._hydrate_first:
            stale += [t for t in self.topics if t not in self.watermarks and t not in stale]
        if stale:
            await self._hydrate(stale)
            self._rehydrate.difference_update(stale)
        token = await self._token_provider()
        async with connect(self.ws_url, max_size=2**24, ping_interval=None, open_timeout=5) as ws:
            self._ws = ws
            self.stats.connects += 1
            self.fetching.clear()  # answers to the previous socket's fetches never come
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            ready = await self._expect(ws, "ready")
            self._connected = True
            self._failures.clear()
            self.unavailable = None
            self._expires_at = float(ready.get("expires_at", 0))
            resume = {t: self.watermarks[t] for t in self.topics if t in self.watermarks}
            if self.topics:
                await ws.send(
                    orjson.dumps(
                        {"type": "subscribe", "topics": self.topics, "resume_after": resume}
                    ).decode()
                )
            for view in list(self.views.values()):
                await ws.send(orjson.dumps(view.subscribe_frame()).decode())
            timers = asyncio.create_task(self._timers(ws))
            try:
                async for raw in ws:
                    self._on_frame(orjson.loads(raw))
            finally:
                timers.cancel()
                self._ws = None
            raise ConnectionClosed(None, None)

    async def _expect(self, ws: ClientConnection, kind: str) -> dict[str, Any]:
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("type") == kind:
                return dict(frame)
            if frame.get("type") == "error":
                self.stats.errors.append(frame)
                raise KhalaError(frame)

    async def _timers(self, ws: ClientConnection) -> None:
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            if (
                self._refresh_before is not None
                and self._expires_at
                and time.time() >= self._expires_at - self._refresh_before
            ):
                token = await self._token_provider()
                await ws.send(orjson.dumps({"type": "refresh_token", "token": token}).decode())
                self._expires_at = time.time() + self._refresh_before + 1  # until token_refreshed says
            if time.monotonic() - last_beat >= self._heartbeat:
                last_beat = time.monotonic()
                await ws.send(
                    orjson.dumps({"type": "heartbeat", "sent_at_ms": int(time.time() * 1000)}).decode()
                )

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        view = self.views.get(frame["sub"]) if isinstance(frame.get("sub"), str) else None
        if view is not None and kind == "update_batch":
            self.stats.batches += 1
            self._fetch(view.topic, view.apply(frame), view.sub)
            asyncio.get_running_loop().create_task(self._notify())
        elif view is not None and kind == "documents":
            self._fetch(view.topic, view.apply_documents(frame), view.sub)
            asyncio.get_running_loop().create_task(self._notify())
        elif kind == "documents":
            self._apply_documents(frame)
        elif view is not None and kind == "error" and not frame.get("fatal"):
            self.stats.errors.append(frame)
            view.errors.append(frame)
            if frame.get("code") == "stale_cursor":  # resume too old: take the current documents
                view.watermark = None
                asyncio.get_running_loop().create_task(self._send(view.subscribe_frame()))
        elif kind == "update_batch":
            self._apply(frame)
        elif kind == "token_refreshed":
            self._expires_at = float(frame.get("expires_at", 0))
            self.stats.refreshes += 1
            asyncio.get_running_loop().create_task(self._notify())
        elif kind == "error":
            self.stats.errors.append(frame)
            if frame.get("code") == "rate_limited":  # a fetch may have been refused: ask again
                delay = int(frame.get("reconnect_after_ms") or 1000) / 1000
                asyncio.get_running_loop().create_task(self._fetch_again(delay))
            if frame.get("fatal") or frame.get("code") == "stale_cursor":
                raise KhalaError(frame)

    def _apply(self, frame: dict[str, Any]) -> None:
        self.stats.batches += 1
        need: dict[str, list[str]] = {}
        for u in frame.get("updates", []):
            topic = u["topic"]
            if self._apply_update(u) == "fetch" and u["doc_key"] not in self.fetching:
                self.fetching[u["doc_key"]] = 0
                need.setdefault(topic, []).append(u["doc_key"])
            self.watermarks[topic] = max(self.watermarks.get(topic, 0), u["watermark"])
        for topic, keys in need.items():
            self._fetch(topic, keys)
        heads = frame.get("head_watermarks", {})
        self.heads.update(heads)
        if frame.get("replay_complete"):
            for t, h in heads.items():
                self.watermarks[t] = max(self.watermarks.get(t, 0), h)
            self.live.set()
        asyncio.get_running_loop().create_task(self._notify())

    def _apply_update(self, u: dict[str, Any]) -> str:
        """ "applied", "stale" or "fetch" (a patch without its base or with a wrong hash)."""
        topic, key = u["topic"], u["doc_key"]
        held = self.documents.get(key)
        if held is not None and not is_newer(u, held):
            self.stats.dropped_stale += 1
            return "stale"
        payload = None if u.get("deleted") else u.get("payload")
        if deltas.is_patch(u):
            if key in self.fetching:  # the whole document is on its way
                self.fetching[key] = max(self.fetching[key], u["doc_version"])
                return "fetch"
            if held is None or not deltas.holds_base(u, held.projection_version, held.doc_version):
                self.stats.missing_base += 1
                return "fetch"
            payload = deltas.patched(held.payload, u)
            if payload is None:
                self.stats.hash_mismatches += 1
                return "fetch"
            self.stats.patches_applied += 1
        if payload is None:
            self.documents.pop(key, None)
        else:
            self.documents[key] = Document(
                topic, key, u["doc_version"], payload, u.get("payload_hash"), u.get("projection_version") or 0
            )
        self.stats.applied += 1
        if self.on_change is not None:
            self.on_change(key, payload)
        return "applied"

    def _apply_documents(self, frame: dict[str, Any]) -> None:
        """A `documents` answer for topic-wide documents: whole, never moving a cursor."""
        again: list[str] = []
        for u in frame.get("documents", []):
            key = u["doc_key"]
            skipped = self.fetching.pop(key, None)
            if u.get("op") == "remove":
                if skipped is not None and self.documents.pop(key, None) is not None and self.on_change:
                    self.on_change(key, None)
                continue
            self.stats.fetched += 1
            self._apply_update(u)
            held = self.documents.get(key)
            if skipped and (held is None or held.doc_version < skipped):
                self.fetching[key] = 0
                again.append(key)
        topic = frame.get("topic")
        if again and isinstance(topic, str):
            self._fetch(topic, again)
        asyncio.get_running_loop().create_task(self._notify())

    async def _fetch_again(self, delay: float) -> None:
        """Ask again, after `delay`, for every document still awaited (a refused `fetch`
        leaves no trace but the rate_limited error)."""
        await asyncio.sleep(delay)
        by_topic: dict[str, list[str]] = {}
        for key in self.fetching:
            held = self.documents.get(key)
            topic = (
                held.topic
                if held is not None
                else next(
                    (t for t in self.topics if any(key.startswith(p) for p in TOPICS[t].doc_prefixes)), None
                )
            )
            if topic is not None:
                by_topic.setdefault(topic, []).append(key)
        for topic, keys in by_topic.items():
            self._fetch(topic, keys)
        for view in self.views.values():
            if view.fetching:
                self._fetch(view.topic, list(view.fetching), view.sub)

    def _fetch(self, topic: str, keys: list[str], sub: str = "") -> None:
        """Ask for whole documents (at most 100 keys a message)."""
        for frame in deltas.fetch_frames(topic, keys, sub):
            self.stats.fetches_sent += 1
            asyncio.get_running_loop().create_task(self._send(frame))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _hydrate(self, topics: list[str]) -> None:
        token = await self._token_provider()
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            for topic in topics:
                resp = await http.get(
                    f"/sync/v1/topics/{topic}/snapshot", headers={"Authorization": f"Bearer {token}"}
                )
                if resp.status_code != 200:
                    raise KhalaError(
                        resp.json().get("error", {"code": "internal_error", "message": resp.text})
                    )
                body = resp.json()
                for key in [k for k, d in self.documents.items() if d.topic == topic]:
                    del self.documents[key]
                for u in body["documents"]:
                    self.documents[u["doc_key"]] = Document(
                        topic,
                        u["doc_key"],
                        u["doc_version"],
                        u["payload"],
                        u["payload_hash"],
                        u.get("projection_version") or 0,
                    )
                self.watermarks[topic] = body["watermark"]
        self.stats.hydrations += 1
        await self._notify()
