"""What live queries read (as the SELECT-only role): a scope's changes after a watermark,
its current documents, a list's current top N.

Each statement also reads the topic's head (and retention floor) in the same MVCC snapshot,
so what it returns is exactly the state at that head: the caller applies live rows above it
and ignores those at or below it. The indexes of migration 0007 keep each one proportional
to what the scope matches, not to the topic's activity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from oa.khala.store.reader import NO_DELTA, ROW_COLUMNS, JournalRow

_J = ", ".join(f"j.{c.strip()}" for c in ROW_COLUMNS.split(","))
_D = (
    "d.topic, d.watermark, 0, d.doc_key, d.doc_version, d.payload, d.payload_hash, d.owner_user, d.org_id,"
    f" d.projection_version, {NO_DELTA}"
)
# A document's stream: the run or worker id, the key's second `:`-separated part.
STREAM_SQL = "split_part({t}.doc_key, ':', 2)"
_HEAD = (
    "(SELECT coalesce(max(watermark), 0) AS head, coalesce(max(retention_floor), 0) AS floor"
    " FROM khala.topic_heads WHERE topic = $1) h"
)
_VISIBLE = "(d.owner_user = $3 OR (d.org_id IS NOT NULL AND d.org_id = $4))"


@dataclass(frozen=True)
class Loaded:
    head: int
    floor: int
    rows: list[JournalRow]


def _loaded(recs: list[asyncpg.Record]) -> Loaded:
    head = int(recs[0]["head"]) if recs else 0
    floor = int(recs[0]["floor"]) if recs else 0
    return Loaded(head, floor, [JournalRow(*r[2:]) for r in recs if r["doc_key"] is not None])


def _scope_condition(table: str, doc_key: str | None) -> str:
    """By key or by stream: two fixed conditions, so each uses its own index."""
    return f"{table}.doc_key = $2" if doc_key is not None else f"{STREAM_SQL.format(t=table)} = $2"


async def scope_changes_after(
    conn: asyncpg.Connection | asyncpg.Pool,
    topic: str,
    *,
    doc_key: str | None,
    stream: str | None,
    after: int,
    limit: int,
) -> Loaded:
    """Journal rows of one document or one stream with a watermark above `after` (up to
    `limit`, in watermark order), and the topic's head and floor in the same snapshot."""
    cond = _scope_condition("j", doc_key)
    recs = await conn.fetch(
        f"SELECT h.head, h.floor, j.* FROM {_HEAD} LEFT JOIN LATERAL (SELECT {_J}"
        f" FROM khala.stream_journal j WHERE j.topic = $1 AND {cond} AND j.watermark > $3"
        " ORDER BY j.watermark LIMIT $4) j ON true",
        topic,
        doc_key if doc_key is not None else stream,
        after,
        limit,
    )
    return _loaded(list(recs))


async def scope_documents(
    conn: asyncpg.Connection | asyncpg.Pool,
    topic: str,
    *,
    doc_key: str | None,
    stream: str | None,
    user_id: str,
    org_id: str | None,
    limit: int,
) -> Loaded:
    """The current documents of one document or one stream that the user may see."""
    cond = _scope_condition("d", doc_key)
    recs = await conn.fetch(
        f"SELECT h.head, h.floor, d.* FROM {_HEAD} LEFT JOIN LATERAL (SELECT {_D}"
        " FROM khala.documents d JOIN khala.state s ON s.live_generation = d.generation"
        f" WHERE d.topic = $1 AND {cond} AND {_VISIBLE} ORDER BY d.doc_key LIMIT $5) d ON true",
        topic,
        doc_key if doc_key is not None else stream,
        user_id,
        org_id,
        limit,
    )
    return _loaded(list(recs))


async def list_documents(
    conn: asyncpg.Connection | asyncpg.Pool,
    topic: str,
    *,
    doc_prefix: str,
    where: Mapping[str, str],
    order_by: str,
    ascending: bool,
    limit: int,
    user_id: str,
    org_id: str | None,
) -> Loaded:
    """A list's current top `limit`: documents of the topic's kind (`doc_prefix`) visible to
    the user whose `where` fields equal the given text, ordered by `order_by` (byte order,
    missing values last, ties by doc_key in the same direction) - the order
    `oa.khala.sync.live.order_key` applies in memory."""
    direction = "ASC" if ascending else "DESC"
    recs = await conn.fetch(
        f"SELECT h.head, h.floor, d.* FROM {_HEAD} LEFT JOIN LATERAL (SELECT {_D}"
        " FROM khala.documents d JOIN khala.state s ON s.live_generation = d.generation"
        f" WHERE d.topic = $1 AND d.doc_key LIKE $2 AND {_VISIBLE}"
        " AND NOT EXISTS (SELECT 1 FROM unnest($5::text[], $6::text[]) f(k, v)"
        "   WHERE (d.payload::jsonb ->> f.k) IS DISTINCT FROM f.v)"
        f' ORDER BY (d.payload::jsonb ->> $7) COLLATE "C" {direction} NULLS LAST,'
        f' d.doc_key COLLATE "C" {direction} LIMIT $8) d ON true',
        topic,
        _like_prefix(doc_prefix),
        user_id,
        org_id,
        list(where),
        list(where.values()),
        order_by,
        limit,
    )
    return _loaded(list(recs))


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def documents_by_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    topic: str,
    doc_keys: list[str],
    *,
    user_id: str,
    org_id: str | None,
) -> list[JournalRow]:
    """The current whole documents of `doc_keys` in `topic` that the user may see (a
    client's `fetch` after a patch it could not apply); absent keys are simply missing."""
    recs = await conn.fetch(
        f"SELECT {_D} FROM khala.documents d JOIN khala.state s ON s.live_generation = d.generation"
        f" WHERE d.topic = $1 AND d.doc_key = ANY($2::text[]) AND {_VISIBLE}",
        topic,
        doc_keys,
        user_id,
        org_id,
    )
    return [JournalRow(*r) for r in recs]
