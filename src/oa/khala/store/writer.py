"""The Khala writer API: the one door through which read models change.

Only the runtime's projector calls it, on a connection of the `oa_khala_writer` role.
`apply` writes document rows, their journal rows (with fresh per-topic watermarks) and the
projector's checkpoints inside the caller's transaction, so all three commit together or
not at all; the NOTIFY it queues is delivered only at that commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

NOTIFY_CHANNEL = "khala_journal"


@dataclass(frozen=True)
class DocChange:
    """A document's new state (payload None means deleted)."""

    topic: str
    doc_key: str
    doc_version: int
    projection_version: int
    payload: str | None
    payload_hash: str | None
    owner_user: str | None
    org_id: str | None
    # A delta for clients holding the previous version (journaled only; see migration 0009):
    # RFC 6902 operations as JSON text, the base's doc_version and the watermark that wrote it.
    patch: str | None = None
    base_version: int | None = None
    base_watermark: int | None = None


@dataclass(frozen=True)
class StoredDoc:
    payload: str
    doc_version: int
    projection_version: int
    watermark: int  # the journal row that wrote it (0: written by a rebuild, unjournaled)


@dataclass(frozen=True)
class Applied:
    batch_id: int
    heads: dict[str, int]


@dataclass
class Checkpoint:
    position: int
    failed_at: int | None
    error: str | None
    version: int | None = None  # the projection version its documents were folded with
    builds_into: int | None = None  # a per-projection build: the live generation it joins


async def live_generation(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT live_generation FROM khala.state WHERE id = 1"))


async def lock_live_generation(conn: asyncpg.Connection) -> int:
    """The live generation, with the state row locked until the caller's transaction ends.

    Every projector batch takes this lock, so batches, switches and resets serialize."""
    return int(await conn.fetchval("SELECT live_generation FROM khala.state WHERE id = 1 FOR UPDATE"))


async def load_checkpoints(conn: asyncpg.Connection, generation: int) -> dict[str, Checkpoint]:
    rows = await conn.fetch(
        "SELECT projection, position, failed_at_position, error, version, builds_into"
        " FROM khala.checkpoints WHERE generation = $1",
        generation,
    )
    return {
        r["projection"]: Checkpoint(
            r["position"], r["failed_at_position"], r["error"], r["version"], r["builds_into"]
        )
        for r in rows
    }


async def load_documents(conn: asyncpg.Connection, generation: int, keys: set[str]) -> dict[str, StoredDoc]:
    """The stored state of those `keys` that exist in `generation`."""
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT doc_key, payload, doc_version, projection_version, watermark FROM khala.documents"
        " WHERE generation = $1 AND doc_key = ANY($2::text[])",
        generation,
        list(keys),
    )
    return {
        r["doc_key"]: StoredDoc(r["payload"], r["doc_version"], r["projection_version"], r["watermark"])
        for r in rows
    }


async def apply(
    conn: asyncpg.Connection,
    generation: int,
    changes: Sequence[DocChange],
    checkpoints: Mapping[str, int],
    *,
    journal: bool = True,
    versions: Mapping[str, int] | None = None,
) -> Applied:
    """Write `changes` to `generation` and move `checkpoints`; journal them if `journal`.

    A rebuild fills a non-live generation with `journal=False`: clients only hear about
    documents of the live one.
    """
    heads: dict[str, int] = {}
    batch_id = 0
    if changes and journal:
        batch_id = int(await conn.fetchval("SELECT nextval('khala.batch_ids')"))
        counts: dict[str, int] = {}
        for ch in changes:
            counts[ch.topic] = counts.get(ch.topic, 0) + 1
        rows = await conn.fetch(
            "INSERT INTO khala.topic_heads AS h (topic, watermark)"
            " SELECT * FROM unnest($1::text[], $2::bigint[])"
            " ON CONFLICT (topic) DO UPDATE SET watermark = h.watermark + EXCLUDED.watermark"
            " RETURNING topic, watermark",
            list(counts),
            list(counts.values()),
        )
        heads = {r["topic"]: r["watermark"] for r in rows}
    next_wm = {t: heads[t] - counts[t] + 1 for t in heads} if heads else {}
    marks: list[int] = []
    for ch in changes:
        if journal:
            marks.append(next_wm[ch.topic])
            next_wm[ch.topic] += 1
        else:
            marks.append(0)
    if changes:
        live = [(ch, wm) for ch, wm in zip(changes, marks, strict=True)]
        upserts = [(ch, wm) for ch, wm in live if ch.payload is not None]
        deletes = [ch.doc_key for ch, _ in live if ch.payload is None]
        if upserts:
            await conn.execute(
                "INSERT INTO khala.documents AS d (generation, doc_key, topic, doc_version,"
                " projection_version, payload, payload_hash, owner_user, org_id, watermark)"
                " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::int[],"
                " $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[])"
                " ON CONFLICT (generation, doc_key) DO UPDATE SET doc_version = EXCLUDED.doc_version,"
                " projection_version = EXCLUDED.projection_version, payload = EXCLUDED.payload,"
                " payload_hash = EXCLUDED.payload_hash, owner_user = EXCLUDED.owner_user,"
                " org_id = EXCLUDED.org_id, watermark = EXCLUDED.watermark",
                generation,
                [c.doc_key for c, _ in upserts],
                [c.topic for c, _ in upserts],
                [c.doc_version for c, _ in upserts],
                [c.projection_version for c, _ in upserts],
                [c.payload for c, _ in upserts],
                [c.payload_hash for c, _ in upserts],
                [c.owner_user for c, _ in upserts],
                [c.org_id for c, _ in upserts],
                [wm for _, wm in upserts],
            )
        if deletes:
            await conn.execute(
                "DELETE FROM khala.documents WHERE generation = $1 AND doc_key = ANY($2::text[])",
                generation,
                deletes,
            )
        if journal:
            await conn.execute(
                "INSERT INTO khala.stream_journal (topic, watermark, batch_id, doc_key, doc_version,"
                " payload, payload_hash, owner_user, org_id, projection_version, patch, base_version,"
                " base_watermark)"
                " SELECT u.topic, u.wm, $1, u.k, u.v, u.p, u.h, u.o, u.g, u.pv, u.d, u.bv, u.bw"
                " FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[],"
                " $8::text[], $9::text[], $10::int[], $11::text[], $12::bigint[], $13::bigint[])"
                " AS u(topic, wm, k, v, p, h, o, g, pv, d, bv, bw)",
                batch_id,
                [c.topic for c in changes],
                marks,
                [c.doc_key for c in changes],
                [c.doc_version for c in changes],
                [c.payload for c in changes],
                [c.payload_hash for c in changes],
                [c.owner_user for c in changes],
                [c.org_id for c in changes],
                [c.projection_version for c in changes],
                [c.patch for c in changes],
                [c.base_version for c in changes],
                [c.base_watermark for c in changes],
            )
            await conn.execute(
                "SELECT pg_notify($1, $2)",
                NOTIFY_CHANNEL,
                " ".join(f"{t}={w}" for t, w in sorted(heads.items())),
            )
    if checkpoints:
        # `versions` (projection -> declared version) records what the documents were folded
        # with; a projection absent from it keeps the version its row holds.
        await conn.execute(
            "INSERT INTO khala.checkpoints AS c (generation, projection, position, version)"
            " SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::int[])"
            " ON CONFLICT (generation, projection) DO UPDATE SET position = EXCLUDED.position,"
            " version = coalesce(EXCLUDED.version, c.version), updated_at = now()",
            generation,
            list(checkpoints),
            list(checkpoints.values()),
            [(versions or {}).get(name) for name in checkpoints],
        )
    return Applied(batch_id, heads)


async def record_failure(
    conn: asyncpg.Connection, generation: int, projection: str, position: int, message: str
) -> None:
    """Stop `projection` at `position`, loudly: the error stays until an operator rebuilds."""
    await conn.execute(
        "INSERT INTO khala.checkpoints (generation, projection, failed_at_position, error)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (generation, projection) DO UPDATE SET"
        " failed_at_position = EXCLUDED.failed_at_position, error = EXCLUDED.error, updated_at = now()",
        generation,
        projection,
        position,
        message,
    )
    await conn.execute(
        "INSERT INTO khala.errors (source, projection, position, message) VALUES ('projector', $1, $2, $3)",
        projection,
        position,
        message,
    )
