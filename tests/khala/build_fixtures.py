"""Helpers for per-projection builds: a test projection, a bulk journal, a fresh fold."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import orjson

from oa.catalog import ProjectionDecl
from oa.runtime.adapters.journal_sql import read_journal
from oa.runtime.domain.journal import Event
from oa.runtime.projector.fold import fold_batch
from oa.runtime.projector.projections import Doc, Projection, owner_of

DIGEST_PREFIX = "runtime/test_run_digest:"
_DECL = ProjectionDecl(
    "test_run_digests",
    "runtime.run_summaries",
    DIGEST_PREFIX,
    1,
    ("run_id", "owner", "org_id", "events", "v"),
    "",
)


def _ids(ev: Event) -> list[str]:
    return [ev.stream_id] if ev.kind == "run" else []


def digest(version: int) -> Projection:
    """A projection the catalog does not declare: counts a run's events (v2 counts twice)."""

    def fold(doc: Doc | None, ev: Event, payload: dict[str, Any]) -> Doc:  # Doc values are Any
        d: Doc = (
            dict(doc)
            if doc
            else {"run_id": ev.stream_id, "owner": owner_of(ev.principal), "org_id": None, "events": 0}
        )
        d["events"] = d["events"] + version
        d["v"] = version
        return d

    return Projection(replace(_DECL, version=version), _ids, fold)


async def append_runs(client: httpx.AsyncClient, prefix: str, runs: int, per_run: int) -> None:
    """`runs` runs of `per_run` events each, appended in batches (a few at a time)."""

    async def one(i: int) -> None:
        events = [{"event_type": "run.started", "payload": {"model": "m"}}]
        events += [{"event_type": "text.delta", "payload": {"text": "x"}} for _ in range(per_run - 1)]
        resp = await client.post(f"/internal/v1/runs/{prefix}-{i}/events/batch", json={"events": events})
        assert resp.status_code in (200, 201), resp.text

    for start in range(0, runs, 8):
        await asyncio.gather(*(one(i) for i in range(start, min(runs, start + 8))))


async def fresh_fold(conn: asyncpg.Connection, p: Projection) -> dict[str, str]:
    """doc_key -> payload hash of `p` folded from the whole journal, in memory."""
    docs: dict[str, tuple[Doc, int]] = {}
    hashes: dict[str, str] = {}
    cps: dict[str, int] = {}
    after = 0
    while events := await read_journal(conn, after, 5000):
        result = fold_batch([p], events, cps, docs)
        for ch in result.changes:
            if ch.payload is None:
                docs.pop(ch.doc_key, None)
                hashes.pop(ch.doc_key, None)
            else:
                docs[ch.doc_key] = (orjson.loads(ch.payload), ch.doc_version)
                hashes[ch.doc_key] = ch.payload_hash or ""
        cps.update(result.checkpoints)
        after = events[-1].position
    return hashes


async def stored(conn: asyncpg.Connection, prefix: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT d.doc_key, d.payload_hash FROM khala.documents d JOIN khala.state s"
        " ON s.live_generation = d.generation WHERE starts_with(d.doc_key, $1)",
        prefix,
    )
    return {r["doc_key"]: r["payload_hash"] for r in rows}


async def forget(conn: asyncpg.Connection, p: Projection) -> None:
    """Leave Khala as the declared projections would: the test projection's rows go."""
    await conn.execute("DELETE FROM khala.documents WHERE starts_with(doc_key, $1)", p.doc_prefix)
    await conn.execute("DELETE FROM khala.checkpoints WHERE projection = $1", p.name)
