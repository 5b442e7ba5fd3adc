"""Revoked token ids (`jti`) and sessions (`sid`), mirrored from control's feed.

`RevocationList.run()` polls `GET /api/sync/revocations?since=<cursor>` every
`poll_interval_s` (1 s by default), so a revocation reaches every verifier well within
the 5 s budget; `refresh()` polls on demand. Entries carry the time after which no token
they match can be alive, and are forgotten then.

The sync server closes affected sockets through `subscribe()` (an async iterator of newly
revoked entries) or `on_revoked(callback)`; `SyncClaims.revoked_by(rev)` says whether a
connection's token is hit. If the feed cannot be reached, the last known list stays in force
and `stale_for_s` grows, which a server can alert on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

log = logging.getLogger(__name__)

Kind = Literal["jti", "sid"]


@dataclass(frozen=True)
class Revocation:
    kind: Kind
    value: str
    expires_at: float  # epoch seconds


class RevocationSource(Protocol):
    async def fetch(self, since: int) -> tuple[list[Revocation], int, bool]:
        """(entries after `since`, the next cursor, whether more are waiting)."""
        ...


class HttpRevocationSource:
    """Control's feed over HTTP, authenticated with the control service token."""

    def __init__(self, url: str, service_token: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {service_token}"}
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def fetch(self, since: int) -> tuple[list[Revocation], int, bool]:
        resp = await self._client.get(self.url, params={"since": since}, headers=self._headers)
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        entries = [
            Revocation(r["kind"], str(r["value"]), float(r["expires_at"]))
            for r in body["revocations"]
            if r.get("kind") in ("jti", "sid")
        ]
        return entries, int(body["cursor"]), bool(body.get("more"))

    async def close(self) -> None:
        await self._client.aclose()


class RevocationList:
    def __init__(self, source: RevocationSource, *, poll_interval_s: float = 1.0) -> None:
        self._source = source
        self.poll_interval_s = poll_interval_s
        self._jti: dict[str, float] = {}
        self._sid: dict[str, float] = {}
        self._cursor = 0
        self._refreshed_at: float | None = None
        self._callbacks: list[Callable[[Revocation], Any]] = []
        self._queues: set[asyncio.Queue[Revocation]] = set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def jti_revoked(self, jti: str) -> bool:
        return jti in self._jti

    def sid_revoked(self, sid: str) -> bool:
        return sid in self._sid

    def __len__(self) -> int:
        return len(self._jti) + len(self._sid)

    @property
    def stale_for_s(self) -> float | None:
        """Seconds since the last successful poll (None before the first one)."""
        return None if self._refreshed_at is None else time.monotonic() - self._refreshed_at

    def on_revoked(self, callback: Callable[[Revocation], Any]) -> None:
        self._callbacks.append(callback)

    async def subscribe(self) -> AsyncIterator[Revocation]:
        """Newly revoked entries, as they arrive, until the consumer stops iterating."""
        queue: asyncio.Queue[Revocation] = asyncio.Queue()
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    def add(self, rev: Revocation) -> bool:
        """Record one revocation (from the feed, or pushed locally); True if new."""
        table = self._jti if rev.kind == "jti" else self._sid
        if rev.value in table:
            return False
        table[rev.value] = rev.expires_at
        for cb in self._callbacks:
            try:
                cb(rev)
            except Exception:
                log.exception("a revocation callback failed")
        for q in self._queues:
            q.put_nowait(rev)
        return True

    async def refresh(self) -> list[Revocation]:
        """Read the feed from our cursor to its end; return what was new."""
        async with self._lock:
            new: list[Revocation] = []
            more = True
            while more:
                entries, cursor, more = await self._source.fetch(self._cursor)
                self._cursor = max(self._cursor, cursor)
                new.extend(r for r in entries if self.add(r))
                if not entries:
                    break
            self._refreshed_at = time.monotonic()
            self._forget_expired(time.time())
            return new

    def _forget_expired(self, now: float) -> None:
        for table in (self._jti, self._sid):
            for value in [v for v, exp in table.items() if exp < now]:
                del table[value]

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.refresh()
                failures = 0
            except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
                failures += 1
                # Control may still be starting beside us (`oa run`): say so only once it
                # has been unreachable for a while, then now and again.
                if failures == 5 or failures % 60 == 0:
                    log.warning(
                        "polling revocations failed %d times (keeping the last list): %s", failures, exc
                    )
            await asyncio.sleep(self.poll_interval_s)

    async def start(self) -> None:
        """First poll now (so a verifier never starts blind), then poll in the background."""
        with contextlib.suppress(httpx.HTTPError):
            await self.refresh()
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
