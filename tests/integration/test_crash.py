"""kill -9 the runtime mid-stream; what it acknowledged survives, and retries do not duplicate.

Writers append over HTTP with idempotency keys and keep retrying each event until it is
acknowledged (2xx), exactly as a Codex worker host would across a runtime restart. The
server is killed with SIGKILL while requests are in flight (some were committed but never
answered), then restarted on the same database. Afterwards the database must hold every
event exactly once, seq gap-free, with a hash chain that verifies from seq 1.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from oa.canonical import canonical_json, event_hash, sha256_hex
from oa.runtime.signing import HEADER, sign_caller
from oa.store.database import Database
from tests.support.servers import ChildServer

SECRET = "crash-test-secret-0123456789abcdef"
WRITERS, LANES, PER_LANE = 6, 3, 30


class Progress:
    """Set `reached` once `target` events are acknowledged in all."""

    def __init__(self, target: int) -> None:
        self.left = target
        self.reached = asyncio.Event()

    def tick(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.reached.set()


class Writer:
    """One run; `LANES` concurrent request lanes; each event retried until acknowledged."""

    def __init__(self, server: ChildServer, n: int, kill_at: Progress) -> None:
        self.server = server
        self.kill_at = kill_at
        self.run_id = f"run-crash{n}-{uuid.uuid4().hex[:8]}"
        self.acked: dict[str, dict[str, Any]] = {}  # idempotency key -> acknowledged event
        self.failures = 0  # requests that got no 2xx (connection lost, refused, 5xx)
        self.headers = {HEADER: sign_caller(SECRET.encode(), f"user:crash{n}", 900)}

    async def lane(self, client: httpx.AsyncClient, lane: int) -> None:
        for i in range(PER_LANE):
            key = f"{self.run_id}-l{lane}-{i}"
            body = {"event_type": "text.delta", "payload": {"text": key}, "idempotency_key": key}
            while True:
                try:
                    r = await client.post(
                        f"{self.server.url}/internal/v1/runs/{self.run_id}/events",
                        json=body,
                        headers=self.headers,
                    )
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code in (200, 201):
                    self.acked[key] = r.json()["event"]
                    self.kill_at.tick()
                    break
                assert r is None or r.status_code >= 500, r.text  # never a 4xx: the retry is identical
                self.failures += 1
                await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_kill9_mid_stream_loses_nothing_acknowledged_and_duplicates_nothing(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    server = ChildServer(database_url, SECRET, tmp_path)
    server.start()
    total = WRITERS * LANES * PER_LANE
    kill_at = Progress(total // 3)
    writers = [Writer(server, n, kill_at) for n in range(WRITERS)]
    try:
        async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_connections=64)) as client:
            lanes = [asyncio.create_task(w.lane(client, lane)) for w in writers for lane in range(LANES)]
            await asyncio.wait_for(kill_at.reached.wait(), 60)
            server.kill9()
            acked_before = {k: v for w in writers for k, v in w.acked.items()}
            await asyncio.sleep(0.5)  # writers fail against the dead port meanwhile
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(asyncio.gather(*lanes), 60)
    finally:
        server.stop()

    assert 0 < len(acked_before) < total, "the kill did not land mid-stream"
    assert sum(w.failures for w in writers) > 0, "no request was interrupted by the kill"
    for w in writers:
        rows = await db.fetch(
            "SELECT seq, event_type, payload, payload_hash, prev_hash, hash, idempotency_key"
            " FROM runtime.events WHERE stream_kind = 'run' AND stream_id = $1 ORDER BY seq",
            w.run_id,
        )
        keys = [r["idempotency_key"] for r in rows]
        texts = [orjson.loads(r["payload"])["text"] for r in rows]
        assert len(keys) == len(set(keys)) == LANES * PER_LANE, "an event is missing or duplicated"
        assert texts == keys and set(keys) == set(w.acked)
        by_key = {r["idempotency_key"]: r for r in rows}
        for key, ev in w.acked.items():  # what the client was told is what is stored
            assert (by_key[key]["seq"], by_key[key]["hash"]) == (ev["seq"], ev["hash"])
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        prev = None
        for r in rows:
            p_hash = sha256_hex(canonical_json(orjson.loads(r["payload"])))
            assert r["payload_hash"] == p_hash and r["prev_hash"] == prev
            assert r["hash"] == event_hash(w.run_id, r["seq"], r["event_type"], p_hash, prev)
            prev = r["hash"]
        head = await db.fetchrow("SELECT last_seq, last_hash FROM runtime.runs WHERE run_id = $1", w.run_id)
        assert head is not None and (head["last_seq"], head["last_hash"]) == (len(rows), prev)
    for key, ev in acked_before.items():  # acknowledged before the kill: durable
        run_id = key.rsplit("-l", 1)[0]
        stored = await db.fetchval(
            "SELECT hash FROM runtime.events WHERE stream_id = $1 AND idempotency_key = $2", run_id, key
        )
        assert stored == ev["hash"]
