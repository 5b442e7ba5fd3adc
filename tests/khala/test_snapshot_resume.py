"""Hydrate over HTTP, then resume from the snapshot's watermark, under concurrent writes:
every row a client receives is past its cursor, and each client ends equal to the store."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from websockets.asyncio.client import connect

from oa.khala.sync.session import SessionLimits
from tests.khala.sync_fixtures import Khala, mint, running_khala

RUNS = "runtime.run_summaries"


@dataclass
class Resumer:
    cursor: int = 0
    docs: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # key -> (version, hash)
    at_or_below: list[int] = field(default_factory=list)
    head_seen: int = 0


async def resume_from_snapshot(
    khala: Khala, final: dict[str, int], done: asyncio.Event, out: Resumer
) -> None:
    token = mint("alice")
    # The snapshot is the whole topic of a database every earlier test wrote to, taken by 60
    # clients at once: httpx's 5 s default timed out on a loaded machine (load 10).
    async with httpx.AsyncClient(base_url=khala.url, timeout=60) as h:
        r = await h.get(f"/sync/v1/topics/{RUNS}/snapshot", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    snap = r.json()
    out.cursor = snap["watermark"]
    out.docs = {d["doc_key"]: (d["doc_version"], d["payload_hash"]) for d in snap["documents"]}
    async with connect(khala.url.replace("http", "ws") + "/sync/v1/ws", max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        await ws.send(json.dumps({"type": "subscribe", "topics": [RUNS], "resume_after": {RUNS: out.cursor}}))
        while not (done.is_set() and out.head_seen >= final[RUNS]):
            try:
                frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                continue
            assert frame["type"] != "error", frame
            if frame["type"] != "update_batch":
                continue
            out.head_seen = max(out.head_seen, frame["head_watermarks"].get(RUNS, 0))
            for u in frame["updates"]:
                if u["watermark"] <= out.cursor:
                    out.at_or_below.append(u["watermark"])
                if u["deleted"]:
                    out.docs.pop(u["doc_key"], None)
                else:  # exactly once, in order: a plain replace must end at the store's state
                    out.docs[u["doc_key"]] = (u["doc_version"], u["payload_hash"])


async def projected(conn: asyncpg.Connection, appended: dict[str, int], timeout: float = 30) -> None:
    """Until every run's summary reflects all its appends (doc_version = its last seq)."""
    keys = [f"runtime/run_summary:{run}" for run in appended]
    async with asyncio.timeout(timeout):
        while True:
            rows = await conn.fetch(
                "SELECT d.doc_key, d.doc_version FROM khala.documents d JOIN khala.state s"
                " ON s.live_generation = d.generation WHERE d.doc_key = ANY($1::text[])",
                keys,
            )
            if {r["doc_key"]: r["doc_version"] for r in rows} == dict(
                zip(keys, appended.values(), strict=True)
            ):
                return
            await asyncio.sleep(0.1)


async def test_snapshot_then_resume_is_exactly_once_under_writes(
    database_url: str, client: httpx.AsyncClient, reader_conn: asyncpg.Connection
) -> None:
    prefix = f"snapres-{uuid.uuid4().hex[:8]}"
    rnd = random.Random(5)
    async with running_khala(database_url, SessionLimits(max_sockets_per_user=100)) as khala:
        done = asyncio.Event()
        final: dict[str, int] = {}

        appended: dict[str, int] = {}

        async def write(w: int) -> None:
            for i in range(60):
                run = f"{prefix}-{rnd.randrange(12)}"
                appended[run] = appended.get(run, 0) + 5
                events = [{"event_type": "text.delta", "payload": {"text": f"{w}.{i}.{j}"}} for j in range(5)]
                r = await client.post(f"/internal/v1/runs/{run}/events/batch", json={"events": events})
                assert r.status_code == 201, r.text

        async def clients() -> list[Resumer]:
            results, tasks = [], []
            for _ in range(60):
                results.append(Resumer())
                tasks.append(asyncio.create_task(resume_from_snapshot(khala, final, done, results[-1])))
                await asyncio.sleep(rnd.uniform(0.0, 0.05))
            await writer
            await projected(reader_conn, appended)
            final[RUNS] = await reader_conn.fetchval(
                "SELECT watermark FROM khala.topic_heads WHERE topic = $1", RUNS
            )
            done.set()  # the clients stop once they have seen the head
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            return results

        writer = asyncio.gather(*(write(w) for w in range(4)))
        results = await clients()
    rows = await reader_conn.fetch(
        "SELECT d.doc_key, d.doc_version, d.payload_hash FROM khala.documents d JOIN khala.state s"
        " ON s.live_generation = d.generation WHERE d.topic = $1 AND d.doc_key LIKE $2",
        RUNS,
        f"%:{prefix}-%",
    )
    store = {r["doc_key"]: (r["doc_version"], r["payload_hash"]) for r in rows}
    assert len(store) >= 12
    bad = [(r.cursor, r.at_or_below[:3]) for r in results if r.at_or_below]
    assert not bad, f"{len(bad)} of {len(results)} clients got rows at or below their cursor: {bad[:5]}"
    for r in results:
        mine = {k: v for k, v in r.docs.items() if f":{prefix}-" in k}
        assert mine == store
