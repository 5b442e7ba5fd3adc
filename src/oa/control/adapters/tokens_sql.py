"""SQL for issued sync tokens and the revocation feed."""

from __future__ import annotations

from datetime import datetime

import asyncpg

# Revocation inserts serialize on this advisory lock (held to commit), so ids are handed
# out in commit order and a reader's `id > cursor` never skips a late-committing row.
REVOCATION_LOCK = 0x0A_C0_47_01


async def insert_issued_many(
    conn: asyncpg.Connection | asyncpg.Pool,
    jti: list[str],
    session_id: list[str],
    user_id: list[str],
    audience: list[str],
    scopes: list[list[str]],
    kid: list[str],
    issued_at: list[datetime],
    expires_at: list[datetime],
) -> None:
    """Many issued-token rows in one statement (column arrays; scopes space-joined)."""
    await conn.execute(
        "INSERT INTO control.issued_tokens"
        " (jti, session_id, user_id, audience, scopes, kid, issued_at, expires_at)"
        " SELECT jti, session_id, user_id, audience, string_to_array(scopes, ' '), kid,"
        " issued_at, expires_at"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
        " $7::timestamptz[], $8::timestamptz[])"
        " AS t(jti, session_id, user_id, audience, scopes, kid, issued_at, expires_at)",
        jti,
        session_id,
        user_id,
        audience,
        [" ".join(s) for s in scopes],
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


async def prune(conn: asyncpg.Pool) -> int:
    """Forget revocations and issued-token rows no live token can need any more."""
    status = await conn.execute("DELETE FROM control.revocations WHERE expires_at < now() - interval '1 day'")
    await conn.execute("DELETE FROM control.issued_tokens WHERE expires_at < now() - interval '30 days'")
    return int(status.split()[-1])
