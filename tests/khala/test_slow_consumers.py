"""Sockets that stop reading are let go within a bounded time; sockets per user are capped."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from websockets.asyncio.client import connect

from oa.khala.sync.session import SessionLimits
from tests.khala.stalled import StalledClient, server_sockets
from tests.khala.sync_fixtures import mint, running_khala

RUNS = "runtime.run_summaries"
TEXT = "x" * 480  # 50 of them make a run's timeline document ~25 KB


async def append_big_events(client: httpx.AsyncClient, run_id: str, appends: int) -> None:
    """`appends` runs of 50 events each: each run's timeline is a new ~25 KB row (and its
    streamed text a new ~8 KB one). New runs, not more events on one run: a document a
    client was already sent travels as a small patch since issue 11.2 (deltas)."""
    events = [{"event_type": "text.delta", "payload": {"text": TEXT}} for _ in range(50)]
    for i in range(appends):
        r = await client.post(f"/internal/v1/runs/{run_id}-{i}/events/batch", json={"events": events})
        assert r.status_code == 201, r.text


async def wait_for(predicate: object, timeout: float) -> float:
    """Seconds until `predicate()` holds; fails after `timeout`."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_sockets_that_never_read_are_closed_and_freed(
    database_url: str, client: httpx.AsyncClient, run_id: str
) -> None:
    """Ten non-readers under writes: the server aborts each one once a write has waited
    write_timeout_s, its session leaves the hub and its TCP connection is gone, while the
    idle timeout (60 s) is nowhere near. Before the fix they stayed until the peer left."""
    limits = SessionLimits(write_timeout_s=1.0)
    async with running_khala(database_url, limits) as khala:
        stalled = [StalledClient(khala.url) for _ in range(10)]
        for s in stalled:
            await asyncio.to_thread(s.open, mint("alice"), {"topics": [RUNS]})
        try:
            await wait_for(lambda: len(khala.hub.sessions) == 10, 5)
            assert server_sockets(khala.port) == 10
            blocked_since: dict[int, float] = {}  # session -> first seen with a frame not yet taken
            release: list[float] = []

            async def watch() -> None:
                while True:
                    now, live = time.monotonic(), {id(x): x for x in khala.hub.sessions}
                    for key, x in live.items():
                        if x.queued_bytes > 0:
                            blocked_since.setdefault(key, now)
                        elif key in blocked_since:  # that frame was taken: the socket still reads
                            del blocked_since[key]
                    release.extend(now - t for key, t in list(blocked_since.items()) if key not in live)
                    for key in [k for k in blocked_since if k not in live]:
                        del blocked_since[key]
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            started = time.monotonic()
            await append_big_events(client, run_id, appends=300)
            await wait_for(lambda: len(khala.hub.sessions) == 0, 30)
            await wait_for(lambda: server_sockets(khala.port) == 0, 10)
            watcher.cancel()
            print(
                f"\n10 non-readers, write_timeout_s=1: released {min(release):.2f}-{max(release):.2f}s after"
                f" their first unsent frame; all TCP connections gone {time.monotonic() - started:.1f}s"
                " after the writes began"
            )
            assert len(release) == 10 and max(release) < 1.0 + 5.0
            assert khala.hub.queued_bytes == 0
            assert khala.hub.sockets_per_user == {}
        finally:
            for s in stalled:
                s.close()


async def test_sockets_per_user_are_capped(database_url: str) -> None:
    async with running_khala(database_url, SessionLimits(max_sockets_per_user=3)) as khala:
        url = khala.url.replace("http", "ws") + "/sync/v1/ws"
        held = [await connect(url) for _ in range(3)]
        for ws in held:
            await ws.send(json.dumps({"type": "auth", "token": mint("carol")}))
            assert json.loads(await ws.recv())["type"] == "ready"
        async with connect(url) as extra:
            await extra.send(json.dumps({"type": "auth", "token": mint("carol")}))
            err = json.loads(await extra.recv())
            assert err["code"] == "too_many_connections" and err["fatal"] is True and err["limit"] == 3
            assert "limit is 3" in err["message"]
        async with connect(url) as other:  # another user is not affected
            await other.send(json.dumps({"type": "auth", "token": mint("dave")}))
            assert json.loads(await other.recv())["type"] == "ready"
        await held.pop().close()
        await wait_for(lambda: khala.hub.sockets_per_user["carol"] == 2, 5)
        async with connect(url) as again:
            await again.send(json.dumps({"type": "auth", "token": mint("carol")}))
            assert json.loads(await again.recv())["type"] == "ready"
        for ws in held:
            await ws.close()
