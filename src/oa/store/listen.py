"""One LISTEN loop for every process that wakes on a Postgres NOTIFY (Khala's hub, the NATS
relay): connect, listen, and on a lost connection reconnect with backoff, calling
`on_connect` each time so the caller catches up on what it missed while deaf (a
notification carries no data that cannot be read again, so a lost one only delays)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import asyncpg

log = logging.getLogger(__name__)


async def listen_forever(
    url: str,
    channel: str,
    on_notify: Callable[[str], None],
    on_connect: Callable[[], None],
    *,
    who: str,
    server_settings: Mapping[str, str] | None = None,
) -> None:
    """Run until cancelled; `on_notify(payload)` for each notification on `channel`."""
    delay = 0.1
    while True:
        conn: asyncpg.Connection | None = None
        try:
            lost = asyncio.Event()
            conn = await asyncpg.connect(url, server_settings=dict(server_settings or {}) or None)
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            await conn.add_listener(channel, lambda *a: on_notify(str(a[-1])))
            delay = 0.1
            on_connect()
            await lost.wait()
        except asyncio.CancelledError:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            raise
        except Exception as exc:
            log.warning("%s lost its LISTEN connection: %s", who, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
