"""Faults: kill -9 the projector mid-batch, kill -9 the sync server under live clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from oa.khala.client import KhalaClient
from oa.runtime.projector.projector import Projector
from oa.runtime.projector.rebuild import audit
from oa.store.database import with_user
from tests.khala.sync_fixtures import ISSUER, jwks_document, token_provider
from tests.support.servers import free_port

pytestmark = pytest.mark.slow
RUNS = "runtime.run_summaries"


def child(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "oa.cli.main", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


async def checkpoint_total(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT coalesce(min(position), 0) FROM khala.checkpoints c JOIN khala.state s"
            " ON s.live_generation = c.generation WHERE c.failed_at_position IS NULL"
        )
    )


async def test_kill9_projector_mid_batch_then_documents_equal_a_fresh_fold(
    database_url: str, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    for i in range(30):
        events = [{"event_type": "run.started", "payload": {"model": "m"}}]
        events += [{"event_type": "text.delta", "payload": {"text": "y" * (j % 7)}} for j in range(150)]
        events += [{"event_type": "run.finished", "payload": {"status": "succeeded"}}]
        r = await client.post(f"/internal/v1/runs/crashproj-{i}/events/batch", json={"events": events})
        assert r.status_code == 201
    conn = await asyncpg.connect(with_user(database_url, "oa_khala_writer"))
    head = await conn.fetchval("SELECT position FROM runtime.journal_head")
    env = {"OA_DATABASE_URL": database_url, "OA_HOME": str(tmp_path)}
    try:
        kills = 0
        for delay in (0.8, 1.2, 1.0):
            before = await checkpoint_total(conn)
            proc = child(["khala", "project"], env)
            deadline = time.monotonic() + 20
            while await checkpoint_total(conn) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(delay * 0.05)
            kill9(proc)
            kills += 1
        proc = child(["khala", "project"], env)
        deadline = time.monotonic() + 60
        while await checkpoint_total(conn) < head and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        kill9(proc)
        assert await checkpoint_total(conn) >= head
        report = await audit(conn)
        assert report.drift == [], report.drift[:5]
        # Each document's newest journal row carries exactly the document.
        bad = await conn.fetchval(
            "SELECT count(*) FROM khala.documents d JOIN khala.state s ON s.live_generation = d.generation"
            " JOIN LATERAL (SELECT payload_hash FROM khala.stream_journal j WHERE j.doc_key = d.doc_key"
            "   ORDER BY watermark DESC LIMIT 1) last ON true WHERE last.payload_hash <> d.payload_hash"
        )
        assert bad == 0 and kills == 3
    finally:
        await conn.close()


async def test_kill9_sync_server_clients_resume_with_nothing_lost(
    database_url: str, runtime_url: str, sign: object, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_document()))
    port = free_port()
    env = {
        "OA_DATABASE_URL": database_url,
        "OA_HOME": str(tmp_path),
        "OA_KHALA_JWKS_FILE": str(jwks),
        "OA_SYNC_TOKEN_ISSUER": ISSUER,
    }
    url = f"http://127.0.0.1:{port}"

    async def healthy() -> None:
        async with httpx.AsyncClient() as h:
            for _ in range(200):
                try:
                    if (await h.get(url + "/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("khala did not start")

    def reached(key: str) -> Callable[[KhalaClient], bool]:
        return lambda c: key in c.documents and c.documents[key].doc_version == 40

    projector = Projector(with_user(database_url, "oa_khala_writer"), idle_poll_s=0.2)
    projector.start()
    server = child(["khala", "serve", "--port", str(port)], env)
    users = ["k1", "k2", "k3", "k4"]
    seen: dict[str, list[tuple[str, int]]] = {u: [] for u in users}

    def recorder(u: str) -> Callable[[str, dict[str, Any] | None], None]:
        def record(k: str, p: dict[str, Any] | None) -> None:
            seen[u].append((k, int(p["last_seq"])) if p else (k, -1))

        return record

    clients = {
        u: KhalaClient(url, token_provider(u), [RUNS], max_backoff_s=0.5, on_change=recorder(u))
        for u in users
    }
    try:
        await healthy()
        for c in clients.values():
            await c.start()
            await asyncio.wait_for(c.live.wait(), 10)

        async def write(u: str) -> None:
            async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{u}")) as h:  # type: ignore[operator]
                for i in range(40):
                    await h.post(
                        f"/internal/v1/runs/kill-{u}/events",
                        json={"event_type": "text.delta", "payload": {"text": str(i)}},
                    )
                    await asyncio.sleep(0.05)

        writers = asyncio.gather(*(write(u) for u in users))
        await asyncio.sleep(0.7)
        kill9(server)
        await asyncio.sleep(0.5)
        server = child(["khala", "serve", "--port", str(port)], env)
        await writers
        for u, c in clients.items():
            key = f"runtime/run_summary:kill-{u}"
            await c.wait_until(reached(key), timeout=20)
            assert c.stats.connects >= 2, "the client never reconnected"
        conn = await asyncpg.connect(with_user(database_url, "oa_khala_reader"))
        try:
            for u, c in clients.items():
                rows = await conn.fetch(
                    "SELECT doc_key, doc_version, payload_hash FROM khala.documents d JOIN khala.state s"
                    " ON s.live_generation = d.generation WHERE topic = $1 AND owner_user = $2",
                    RUNS,
                    u,
                )
                store = {r["doc_key"]: (r["doc_version"], r["payload_hash"]) for r in rows}
                mine = {k: (d.doc_version, d.payload_hash) for k, d in c.documents.items() if d.topic == RUNS}
                assert mine == store
                versions = [v for k, v in seen[u] if k == f"runtime/run_summary:kill-{u}"]
                assert versions == sorted(versions), "an update was applied out of order"
        finally:
            await conn.close()
    finally:
        for c in clients.values():
            await c.close()
        kill9(server)
        await projector.stop()
