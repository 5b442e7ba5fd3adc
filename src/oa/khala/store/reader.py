"""What the sync server reads (as the SELECT-only role): journal rows, heads, snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

ROW_COLUMNS = (
    "topic, watermark, batch_id, doc_key, doc_version, payload, payload_hash, owner_user, org_id,"
    " projection_version, patch, base_version, base_watermark"
)
# Documents read as rows: they carry no delta.
NO_DELTA = "NULL::text, NULL::bigint, NULL::bigint"
_J_COLUMNS = ", ".join(f"j.{c.strip()}" for c in ROW_COLUMNS.split(","))


@dataclass(frozen=True, slots=True)
class JournalRow:
    topic: str
    watermark: int
    batch_id: int
    doc_key: str
    doc_version: int
    payload: str | None
    payload_hash: str | None
    owner_user: str | None
    org_id: str | None
    projection_version: int = 1  # clients order updates by (projection_version, doc_version)
    # A delta against the document's previous version (see migration 0009), if the projector
    # stored one: sent instead of the payload to a client known to hold the base.
    patch: str | None = None
    base_version: int | None = None
    base_watermark: int | None = None

    @property
    def weight(self) -> int:
        """Roughly what the row costs held in memory or sent: its JSON plus framing."""
        return len(self.payload or "") + len(self.patch or "") + 200

    def visible_to(self, user_id: str, org_id: str | None) -> bool:
        """Per-document authorization: own documents, and documents of the user's org."""
        return self.owner_user == user_id or (org_id is not None and self.org_id == org_id)

    def wire(self, patched: bool = False) -> dict[str, Any]:
        """The update as sent; `patched` (the caller knows the client holds the base): the
        patch and base_version instead of the payload, when this row has a patch."""
        if patched and self.patch is not None:
            return {
                "topic": self.topic,
                "watermark": self.watermark,
                "doc_key": self.doc_key,
                "doc_version": self.doc_version,
                "payload": None,
                "patch": orjson.Fragment(self.patch),
                "base_version": self.base_version,
                "payload_hash": self.payload_hash,
                "deleted": False,
                "projection_version": self.projection_version,
            }
        return {
            "topic": self.topic,
            "watermark": self.watermark,
            "doc_key": self.doc_key,
            "doc_version": self.doc_version,
            "payload": orjson.Fragment(self.payload) if self.payload is not None else None,
            "payload_hash": self.payload_hash,
            "deleted": self.payload is None,
            "projection_version": self.projection_version,
        }


def _rows(records: list[asyncpg.Record]) -> list[JournalRow]:
    return [JournalRow(*r) for r in records]


async def heads(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, tuple[int, int]]:
    """topic -> (head watermark, retention floor)."""
    rows = await conn.fetch("SELECT topic, watermark, retention_floor FROM khala.topic_heads")
    return {r["topic"]: (r["watermark"], r["retention_floor"]) for r in rows}


async def rows_after(
    conn: asyncpg.Connection | asyncpg.Pool,
    after: Mapping[str, int],
    upto: Mapping[str, int] | None = None,
    limit: int = 2000,
) -> list[JournalRow]:
    """Journal rows past `after` (and at most `upto`), whole projector batches, in batch order."""
    topics = list(after)
    if not topics:
        return []
    hi = [upto.get(t, 2**62) if upto is not None else 2**62 for t in topics]
    recs = await conn.fetch(
        f"SELECT {_J_COLUMNS} FROM khala.stream_journal j"
        " JOIN unnest($1::text[], $2::bigint[], $3::bigint[]) AS c(topic, lo, hi)"
        " ON j.topic = c.topic AND j.watermark > c.lo AND j.watermark <= c.hi"
        " ORDER BY j.batch_id, j.topic, j.watermark LIMIT $4",
        topics,
        [after[t] for t in topics],
        hi,
        limit,
    )
    rows = _rows(list(recs))
    if len(rows) == limit:
        # Never split a projector batch: drop the last (possibly partial) batch unless it is the only one.
        last = rows[-1].batch_id
        whole = [r for r in rows if r.batch_id != last]
        if whole:
            return whole
        recs = await conn.fetch(
            f"SELECT {ROW_COLUMNS} FROM khala.stream_journal WHERE batch_id = $1 AND topic = ANY($2::text[])"
            " ORDER BY topic, watermark",
            last,
            topics,
        )
        rows = [
            r for r in _rows(list(recs)) if after[r.topic] < r.watermark <= (upto or {}).get(r.topic, 2**62)
        ]
    return rows


async def snapshot(
    conn: asyncpg.Connection | asyncpg.Pool, topic: str, user_id: str, org_id: str | None, limit: int
) -> tuple[int, list[JournalRow]]:
    """A consistent view of a topic for one user: its head watermark and visible documents.

    One statement, so one MVCC snapshot whatever the caller's isolation level: the head
    is exactly the state of the documents returned (a client resuming from it is sent
    nothing it already has and misses nothing). Each document row also carries the head.
    """
    recs = await conn.fetch(
        "SELECT h.head, d.topic, d.watermark, 0, d.doc_key, d.doc_version, d.payload, d.payload_hash,"
        f" d.owner_user, d.org_id, d.projection_version, {NO_DELTA}"
        " FROM (SELECT coalesce(max(watermark), 0) AS head FROM khala.topic_heads WHERE topic = $1) h"
        " LEFT JOIN LATERAL (SELECT d.* FROM khala.documents d JOIN khala.state s"
        "   ON s.live_generation = d.generation"
        "   WHERE d.topic = $1 AND (d.owner_user = $2 OR (d.org_id IS NOT NULL AND d.org_id = $3))"
        "   ORDER BY d.doc_key LIMIT $4) d ON true",
        topic,
        user_id,
        org_id,
        limit,
    )
    head = int(recs[0]["head"]) if recs else 0
    return head, [JournalRow(*r[1:]) for r in recs if r["doc_key"] is not None]


# -- status and history (the dashboard's and operators' read-only views) -------------------


async def live_checkpoints(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    """The live generation's checkpoints: projection, position, failed_at_position, error, idle_s."""
    return list(
        await conn.fetch(
            "SELECT c.projection, c.position, c.failed_at_position, c.error,"
            " extract(epoch FROM now() - c.updated_at) AS idle_s"
            " FROM khala.checkpoints c JOIN khala.state s ON s.live_generation = c.generation"
            " ORDER BY c.projection"
        )
    )


async def recent_errors(conn: asyncpg.Connection | asyncpg.Pool, limit: int = 20) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT id, at, source, projection, position, message FROM khala.errors ORDER BY id DESC LIMIT $1",
            limit,
        )
    )


async def document_history(
    conn: asyncpg.Connection | asyncpg.Pool, topic: str, doc_key: str, limit: int
) -> list[tuple[JournalRow, Any]]:
    """A document's journal rows, newest first, each with its commit time."""
    records = await conn.fetch(
        f"SELECT {ROW_COLUMNS}, committed_at FROM khala.stream_journal"
        " WHERE topic = $1 AND doc_key = $2 ORDER BY watermark DESC LIMIT $3",
        topic,
        doc_key,
        limit,
    )
    return [(JournalRow(*r[:-1]), r["committed_at"]) for r in records]


async def min_live_position(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The lowest checkpoint of the live generation (0 if none): how far every projection got."""
    return int(
        await conn.fetchval(
            "SELECT coalesce(min(position), 0) FROM khala.checkpoints c JOIN khala.state s"
            " ON s.live_generation = c.generation"
        )
    )
