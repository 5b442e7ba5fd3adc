"""SQL for Codex worker rows (their stream heads live in the same rows; see journal_sql).

Heartbeat ages are computed by Postgres (`now() - last_heartbeat_at`) so every runtime
node measures them against the same clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

_SELECT = (
    "SELECT worker_id, owner, status, last_seq, last_hash, workspace_ref, adapter, run_id, metadata,"
    " last_heartbeat_at, created_at, updated_at,"
    " (extract(epoch FROM now() - last_heartbeat_at) * 1000)::bigint AS heartbeat_age_ms,"
    " (extract(epoch FROM now() - coalesce(last_heartbeat_at, created_at)) * 1000)::bigint AS silent_ms"
    " FROM runtime.codex_workers"
)


async def insert_worker(
    conn: asyncpg.Connection | asyncpg.Pool,
    worker_id: str,
    owner: str,
    workspace_ref: str | None,
    adapter: str | None,
    run_id: str | None,
    metadata_json: str,
) -> bool:
    """Create the worker row in `starting`; False if it already existed."""
    row = await conn.fetchrow(
        "INSERT INTO runtime.codex_workers (worker_id, owner, workspace_ref, adapter, run_id, metadata)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (worker_id) DO NOTHING RETURNING worker_id",
        worker_id,
        owner,
        workspace_ref,
        adapter,
        run_id,
        metadata_json,
    )
    return row is not None


async def update_attachment(
    conn: asyncpg.Connection | asyncpg.Pool,
    worker_id: str,
    workspace_ref: str | None,
    adapter: str | None,
    run_id: str | None,
    metadata_json: str | None,
) -> None:
    """On reattach, keep what the caller did not resend."""
    await conn.execute(
        "UPDATE runtime.codex_workers SET workspace_ref = coalesce($2, workspace_ref),"
        " adapter = coalesce($3, adapter), run_id = coalesce($4, run_id),"
        " metadata = coalesce($5, metadata) WHERE worker_id = $1",
        worker_id,
        workspace_ref,
        adapter,
        run_id,
        metadata_json,
    )


async def get_worker(conn: asyncpg.Connection | asyncpg.Pool, worker_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(_SELECT + " WHERE worker_id = $1", worker_id)
    return row


async def list_workers(
    conn: asyncpg.Connection | asyncpg.Pool,
    owner: str,
    status: str | None,
    workspace_ref: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            _SELECT + " WHERE owner = $1 AND ($2::text IS NULL OR status = $2)"
            " AND ($3::text IS NULL OR workspace_ref = $3)"
            " ORDER BY updated_at DESC, worker_id LIMIT $4",
            owner,
            status,
            workspace_ref,
            limit,
        )
    )


async def touch_heartbeat(conn: asyncpg.Connection | asyncpg.Pool, worker_id: str, at: str) -> None:
    """Move last_heartbeat_at forward to `at` (never backwards: heartbeats may race)."""
    await conn.execute(
        "UPDATE runtime.codex_workers SET last_heartbeat_at = greatest(last_heartbeat_at, $2::text::timestamptz)"
        " WHERE worker_id = $1",
        worker_id,
        at,
    )


async def silent_live_workers(
    conn: asyncpg.Connection | asyncpg.Pool, silent_for_ms: int, limit: int
) -> Sequence[asyncpg.Record]:
    """Live workers that have not beaten (or, never beating, existed) for `silent_for_ms`."""
    return list(
        await conn.fetch(
            _SELECT + " WHERE status IN ('starting', 'running', 'stopping')"
            " AND coalesce(last_heartbeat_at, created_at) < now() - make_interval(secs => $1::float8 / 1000)"
            " ORDER BY worker_id LIMIT $2",
            silent_for_ms,
            limit,
        )
    )
