"""SQL for issued sync tokens and the revocation feed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

# Revocation inserts serialize on this advisory lock (held to commit), so ids are handed
# out in commit order and a reader's `id > cursor` never skips a late-committing row.
REVOCATION_LOCK = 0x0A_C0_47_01


async def insert_issued(
    conn: asyncpg.Connection | asyncpg.Pool,
    jti: str,
    session_id: str,
    user_id: str,
    audience: str,
    scopes: Sequence[str],
    kid: str,
    issued_at: datetime,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO control.issued_tokens"
        " (jti, session_id, user_id, audience, scopes, kid, issued_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        jti,
        session_id,
        user_id,
        audience,
        list(scopes),
        kid,
        issued_at,
        expires_at,
    )


async def issued(conn: asyncpg.Connection, jti: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT jti, session_id, user_id, expires_at FROM control.issued_tokens WHERE jti = $1", jti
    )
    return row


async def lock_revocations(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", REVOCATION_LOCK)


async def insert_revocation(
    conn: asyncpg.Connection, kind: str, value: str, user_id: str | None, reason: str, expires_at: datetime
) -> bool:
    """Call inside a transaction after `lock_revocations`. False if already revoked."""
    status = await conn.execute(
        "INSERT INTO control.revocations (kind, value, user_id, reason, expires_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, value) DO NOTHING",
        kind,
        value,
        user_id,
        reason,
        expires_at,
    )
    return bool(status == "INSERT 0 1")


async def revocations_after(conn: asyncpg.Pool, since: int, limit: int) -> list[asyncpg.Record]:
    """Unexpired revocations with id > since, oldest first."""
    return list(
        await conn.fetch(
            "SELECT id, kind, value, extract(epoch FROM expires_at)::float8 AS expires_at"
            " FROM control.revocations WHERE id > $1 AND expires_at > now() ORDER BY id LIMIT $2",
            since,
            limit,
        )
    )


async def last_revocation_id(conn: asyncpg.Pool) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM control.revocations"))


async def prune(conn: asyncpg.Pool) -> int:
    """Forget revocations and issued-token rows no live token can need any more."""
    status = await conn.execute("DELETE FROM control.revocations WHERE expires_at < now() - interval '1 day'")
    await conn.execute("DELETE FROM control.issued_tokens WHERE expires_at < now() - interval '30 days'")
    return int(status.split()[-1])
