"""Replays are paced by the socket and capped in bytes: twenty clients that resume on a deep
backlog and never read keep the server's memory bounded, and a healthy client stays live.

The server runs as a child process (`oa khala serve`) so its RSS is its own (/proc).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from oa.khala.client import KhalaClient
from tests.khala.stalled import StalledClient
from tests.khala.sync_fixtures import (
    ISSUER,
    ChildKhala,
    Khala,
    jwks_document,
    mint,
    running_khala,
    token_provider,
)

pytestmark = pytest.mark.slow
RUNS = "runtime.run_summaries"
TEXT = "y" * 480  # a full run timeline is ~25 KB: every append is a new ~25 KB journal row
CAP = 1 << 20  # bytes queued per socket (OA_KHALA_MAX_QUEUED_BYTES)
STALLED = 20
# Per stalled socket: its queue (a replay page waits until it is under CAP/2, and a page is
# sized to CAP/2), the frame uvicorn is writing, and what a page weighs while decoded.
BOUND_MB = 60 + STALLED * 3 * CAP / 1e6


async def deep_backlog(client: httpx.AsyncClient, runs: int, appends: int) -> None:
    async def one(run: str) -> None:
        events = [{"event_type": "text.delta", "payload": {"text": TEXT}} for _ in range(50)]
        assert (
            await client.post(f"/internal/v1/runs/{run}/events/batch", json={"events": events})
        ).status_code == 201
        for _ in range(appends):
            r = await client.post(
                f"/internal/v1/runs/{run}/events",
                json={"event_type": "text.delta", "payload": {"text": TEXT}},
            )
            assert r.status_code == 201

    stamp = int(time.time() * 1000)
    await asyncio.gather(*(one(f"deep-{stamp}-{i}") for i in range(runs)))


async def test_stalled_replays_keep_memory_bounded_and_a_healthy_client_live(
    database_url: str, client: httpx.AsyncClient, run_id: str, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_document()))
    server = ChildKhala(
        {
            "OA_DATABASE_URL": database_url,
            "OA_HOME": str(tmp_path),
            "OA_KHALA_JWKS_FILE": str(jwks),
            "OA_SYNC_TOKEN_ISSUER": ISSUER,
            "OA_KHALA_MAX_QUEUED_BYTES": str(CAP),
            "OA_KHALA_WRITE_TIMEOUT_S": "120",  # keep them stalled, not aborted, while we measure
            "OA_KHALA_IDLE_TIMEOUT_S": "120",
        }
    )
    async with running_khala(database_url) as k:  # the projector (and a hub to watch heads)
        await measure(k, server, client, run_id, tmp_path)


async def measure(
    k: Khala, server: ChildKhala, client: httpx.AsyncClient, run_id: str, tmp_path: Path
) -> None:
    cursor = k.hub.heads[RUNS]
    await deep_backlog(client, runs=8, appends=150)
    deadline = time.monotonic() + 120
    while k.hub.heads[RUNS] < cursor + 8 * 150 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    head = k.hub.heads[RUNS]
    server.start(tmp_path / "khala.log")
    stalled = [StalledClient(server.url) for _ in range(STALLED)]
    try:
        async with KhalaClient(server.url, token_provider("alice"), [RUNS]) as healthy:
            await asyncio.wait_for(healthy.live.wait(), 10)
            await asyncio.sleep(1)
            rss_before = server.rss_mb()
            sub = {"topics": [RUNS], "resume_after": {RUNS: cursor}}
            for s in stalled:
                await asyncio.to_thread(s.open, mint("alice"), sub)
            peak = rss_before
            for _ in range(40):  # 10 s: replays run into full buffers and stop there
                peak = max(peak, server.rss_mb())
                await asyncio.sleep(0.25)
            # Meanwhile a live update still reaches the healthy client promptly.
            await client.post(
                f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {}}
            )
            key = f"runtime/run_summary:{run_id}"
            sent = time.monotonic()
            await healthy.wait_until(lambda c: key in c.documents, timeout=10)
            latency = time.monotonic() - sent
            peak = max(peak, server.rss_mb())
        print(
            f"\n{STALLED} stalled replays of {(head - cursor)} rows: server RSS {rss_before:.0f} MB before,"
            f" peak {peak:.0f} MB (growth {peak - rss_before:.0f} MB, bound {BOUND_MB:.0f} MB);"
            f" healthy client got a live update in {latency:.2f}s"
        )
        assert peak - rss_before < BOUND_MB
    finally:
        for s in stalled:
            s.close()
        server.stop()
