"""Generations of Khala documents: whole-store rebuilds, per-projection builds, reset.

A generation is a full set of documents and checkpoints; `khala.state.live_generation`
names the one clients see. A whole rebuild fills a new generation and switches to it; a
per-projection build fills a generation of its own with one projection's documents and
moves them into the live generation when caught up. Callers hold the state row lock
(`writer.lock_live_generation`) around a switch, so no projector batch interleaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class StoredDoc:
    topic: str
    payload_hash: str
    doc_version: int
    payload: str


async def next_generation(conn: asyncpg.Connection) -> int:
    """A generation number no document or checkpoint uses yet."""
    return 1 + int(
        await conn.fetchval(
            "SELECT greatest(max(generation), (SELECT live_generation FROM khala.state WHERE id = 1))"
            " FROM (SELECT generation FROM khala.checkpoints UNION ALL SELECT generation FROM khala.documents) g"
        )
    )


async def documents(
    conn: asyncpg.Connection, generation: int, prefix: str | None = None
) -> dict[str, StoredDoc]:
    """Every document of `generation` (under `prefix`, if given), by key."""
    rows = await conn.fetch(
        "SELECT doc_key, topic, payload_hash, doc_version, payload FROM khala.documents"
        " WHERE generation = $1 AND ($2::text IS NULL OR starts_with(doc_key, $2))",
        generation,
        prefix,
    )
    return {
        r["doc_key"]: StoredDoc(r["topic"], r["payload_hash"], r["doc_version"], r["payload"]) for r in rows
    }


async def switch_generation(conn: asyncpg.Connection, new: int, old: int) -> None:
    """Make `new` live and drop `old` (and every per-projection build that targeted it)."""
    await conn.execute("UPDATE khala.state SET live_generation = $1 WHERE id = 1", new)
    stale = await conn.fetch("SELECT DISTINCT generation FROM khala.checkpoints WHERE builds_into = $1", old)
    for g in [old, *(r["generation"] for r in stale)]:
        await conn.execute("DELETE FROM khala.documents WHERE generation = $1", g)
        await conn.execute("DELETE FROM khala.checkpoints WHERE generation = $1", g)


async def start_build(conn: asyncpg.Connection, projection: str, version: int, into: int) -> int:
    """Open a generation of its own for `projection` at `version`, to join `into` later."""
    gen = await next_generation(conn)
    await conn.execute(
        "INSERT INTO khala.checkpoints (generation, projection, position, version, builds_into)"
        " VALUES ($1, $2, 0, $3, $4)",
        gen,
        projection,
        version,
        into,
    )
    return gen


async def builds(conn: asyncpg.Connection, into: int) -> dict[str, tuple[int, int, int | None, int | None]]:
    """projection -> (build generation, position, version, failed_at) of builds joining `into`."""
    rows = await conn.fetch(
        "SELECT projection, generation, position, version, failed_at_position FROM khala.checkpoints"
        " WHERE builds_into = $1",
        into,
    )
    return {
        r["projection"]: (r["generation"], r["position"], r["version"], r["failed_at_position"]) for r in rows
    }


async def drop_generation(conn: asyncpg.Connection, generation: int) -> None:
    await conn.execute("DELETE FROM khala.documents WHERE generation = $1", generation)
    await conn.execute("DELETE FROM khala.checkpoints WHERE generation = $1", generation)


async def finish_build(conn: asyncpg.Connection, projection: str, prefix: str, build: int, live: int) -> None:
    """Move a built projection into the live generation: its documents replace the live ones
    under `prefix`, its checkpoint (position, version) replaces the live one; the build goes.

    The caller journals the differences (in the same transaction) so clients converge."""
    await conn.execute(
        "DELETE FROM khala.documents WHERE generation = $1 AND starts_with(doc_key, $2)", live, prefix
    )
    await conn.execute(
        "UPDATE khala.documents SET generation = $2 WHERE generation = $1 AND starts_with(doc_key, $3)",
        build,
        live,
        prefix,
    )
    await conn.execute(
        "INSERT INTO khala.checkpoints AS c (generation, projection, position, version)"
        " SELECT $2, projection, position, version FROM khala.checkpoints WHERE generation = $1 AND projection = $3"
        " ON CONFLICT (generation, projection) DO UPDATE SET position = EXCLUDED.position,"
        " version = EXCLUDED.version, failed_at_position = NULL, error = NULL, updated_at = now()",
        build,
        live,
        projection,
    )
    await drop_generation(conn, build)


async def reset(conn: asyncpg.Connection) -> None:
    """Empty Khala entirely (every table, every counter): what a drop-and-rebuild starts from."""
    await conn.execute(
        "TRUNCATE khala.documents, khala.topic_heads, khala.stream_journal, khala.checkpoints, khala.errors;"
        " UPDATE khala.state SET live_generation = 1 WHERE id = 1;"
        " SELECT setval('khala.batch_ids', 1, false)"
    )
