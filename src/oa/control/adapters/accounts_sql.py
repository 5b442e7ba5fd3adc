"""SQL for users, orgs, memberships, sessions and sign-in failures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class SessionInfo:
    """A live session, with what its user may sync in its org."""

    session_id: str
    user_id: str
    email: str
    org_id: str
    sync_scopes: tuple[str, ...]
    expires_at: datetime


async def insert_org(conn: asyncpg.Connection, org_id: str, name: str) -> str:
    """Create the org if its name is new; return the id of the org with that name."""
    row = await conn.fetchrow(
        "INSERT INTO control.orgs (org_id, name) VALUES ($1, $2)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING org_id",
        org_id,
        name,
    )
    assert row is not None
    return str(row["org_id"])


async def insert_user(conn: asyncpg.Connection, user_id: str, email: str, password_hash: str | None) -> bool:
    """False if a user with that email (case-insensitively) already exists."""
    status = await conn.execute(
        "INSERT INTO control.users (user_id, email, password_hash) VALUES ($1, $2, $3)"
        " ON CONFLICT (lower(email)) DO NOTHING",
        user_id,
        email,
        password_hash,
    )
    return bool(status == "INSERT 0 1")


async def user_by_email(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT user_id, email, password_hash, disabled_at FROM control.users WHERE lower(email) = lower($1)",
        email,
    )
    return row


async def set_password(conn: asyncpg.Connection, user_id: str, password_hash: str) -> None:
    await conn.execute(
        "UPDATE control.users SET password_hash = $2 WHERE user_id = $1", user_id, password_hash
    )


async def upsert_membership(
    conn: asyncpg.Connection, org_id: str, user_id: str, role: str, scopes: list[str]
) -> None:
    await conn.execute(
        "INSERT INTO control.memberships (org_id, user_id, role, sync_scopes) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (org_id, user_id) DO UPDATE SET role = $3, sync_scopes = $4",
        org_id,
        user_id,
        role,
        scopes,
    )


async def memberships(conn: asyncpg.Connection, user_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT m.org_id, o.name, m.role, m.sync_scopes FROM control.memberships m"
            " JOIN control.orgs o USING (org_id) WHERE m.user_id = $1 ORDER BY m.created_at, o.name",
            user_id,
        )
    )


async def org_by_id_or_name(conn: asyncpg.Connection | asyncpg.Pool, org: str) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT org_id FROM control.orgs WHERE org_id = $1 OR name = $1 ORDER BY org_id = $1 DESC LIMIT 1", org
    )
    return value


async def insert_session(
    conn: asyncpg.Connection, session_id: str, token_hash: bytes, user_id: str, org_id: str, ttl_s: int
) -> datetime:
    expires: datetime = await conn.fetchval(
        "INSERT INTO control.sessions (session_id, token_hash, user_id, org_id, expires_at)"
        " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at",
        session_id,
        token_hash,
        user_id,
        org_id,
        float(ttl_s),
    )
    return expires


async def live_session(conn: asyncpg.Connection | asyncpg.Pool, token_hash: bytes) -> SessionInfo | None:
    """The session behind a bearer token, if it is live and its user and membership exist."""
    row = await conn.fetchrow(
        "SELECT s.session_id, s.user_id, u.email, s.org_id, s.expires_at, m.sync_scopes"
        " FROM control.sessions s"
        " JOIN control.users u ON u.user_id = s.user_id AND u.disabled_at IS NULL"
        " LEFT JOIN control.memberships m ON m.org_id = s.org_id AND m.user_id = s.user_id"
        " WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()",
        token_hash,
    )
    if row is None:
        return None
    return SessionInfo(
        row["session_id"],
        row["user_id"],
        row["email"],
        row["org_id"],
        tuple(row["sync_scopes"] or ()),
        row["expires_at"],
    )


async def revoke_sessions(
    conn: asyncpg.Connection, user_id: str, reason: str, session_id: str | None = None
) -> list[asyncpg.Record]:
    """Revoke one of the user's live sessions (or all of them); return those revoked."""
    return list(
        await conn.fetch(
            "UPDATE control.sessions SET revoked_at = now(), revoked_reason = $3"
            " WHERE user_id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR session_id = $2)"
            " RETURNING session_id, expires_at",
            user_id,
            session_id,
            reason,
        )
    )


async def session_owner(conn: asyncpg.Connection, session_id: str) -> str | None:
    owner: str | None = await conn.fetchval(
        "SELECT user_id FROM control.sessions WHERE session_id = $1", session_id
    )
    return owner


async def recent_failures(conn: asyncpg.Connection, email: str, window_s: int) -> tuple[int, float]:
    """Failed sign-ins for `email` in the window, and seconds until the oldest leaves it."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n,"
        " coalesce(extract(epoch FROM min(failed_at) + make_interval(secs => $2) - now()), 0) AS wait"
        " FROM control.sign_in_failures"
        " WHERE email = lower($1) AND failed_at > now() - make_interval(secs => $2)",
        email,
        float(window_s),
    )
    assert row is not None
    return int(row["n"]), max(0.0, float(row["wait"]))


async def record_failure(conn: asyncpg.Connection, email: str, window_s: int) -> None:
    await conn.execute(
        "DELETE FROM control.sign_in_failures WHERE failed_at < now() - make_interval(secs => $1)",
        float(window_s),
    )
    await conn.execute("INSERT INTO control.sign_in_failures (email) VALUES (lower($1))", email)


async def clear_failures(conn: asyncpg.Connection, email: str) -> None:
    await conn.execute("DELETE FROM control.sign_in_failures WHERE email = lower($1)", email)
