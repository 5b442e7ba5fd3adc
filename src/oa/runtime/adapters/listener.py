"""Wake-ups from the journal: one LISTEN connection per process, fanned out to waiters.

The notification only says *that* something committed (and on which streams); readers
then read the journal, so a lost notification costs latency, never data: waiters also
wake on a timeout and re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import asyncpg

log = logging.getLogger(__name__)
CHANNEL = "oa_journal"


class JournalListener:
    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._any: set[asyncio.Event] = set()
        self._task: asyncio.Task[None] | None = None
        self.head = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_listening(), name="oa-journal-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def _keep_listening(self) -> None:
        delay = 0.1
        while True:
            try:
                lost = asyncio.Event()
                self._conn = await asyncpg.connect(self._url)
                self._conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await self._conn.add_listener(CHANNEL, self._on_notify)
                delay = 0.1
                self._wake_all()  # we may have missed something while away
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect with backoff; waiters poll meanwhile
                log.warning("journal listener lost its connection: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        head, _, streams = payload.partition(" ")
        with contextlib.suppress(ValueError):
            self.head = max(self.head, int(head))
        if streams == "*":
            self._wake_all()
            return
        for name in streams.split():
            for ev in self._waiters.get(name, ()):
                ev.set()
        for ev in self._any:
            ev.set()

    def _wake_all(self) -> None:
        for group in self._waiters.values():
            for ev in group:
                ev.set()
        for ev in self._any:
            ev.set()

    @contextlib.contextmanager
    def watching(self, stream: str | None) -> Iterator[asyncio.Event]:
        """An event set on every commit to `stream` (any stream if None).

        Clear it *before* reading the journal, then wait on it: a commit that lands between
        the read and the wait still sets it, so no wake-up is lost.
        """
        ev = asyncio.Event()
        group = self._any if stream is None else self._waiters.setdefault(stream, set())
        group.add(ev)
        try:
            yield ev
        finally:
            group.discard(ev)
            if stream is not None and not group:
                self._waiters.pop(stream, None)


async def wait_for_wakeup(ev: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(ev.wait(), timeout)
        return True
    except TimeoutError:
        return False
