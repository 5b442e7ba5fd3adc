"""SQL for signing keys. Only control reads this table (private keys, encrypted)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import orjson

from oa.control.domain.keys import KeyRecord

# Key changes (bootstrap, rotation) serialize on this lock so two processes never both
# create "the first key" or interleave rotations.
KEYS_LOCK = 0x0A_C0_47_02


async def lock_keys(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK)


async def all_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[KeyRecord]:
    rows = await conn.fetch(
        "SELECT kid, alg, public_jwk::text AS jwk, private_key, not_before, activates_at, retire_after"
        " FROM control.signing_keys ORDER BY activates_at"
    )
    return [
        KeyRecord(
            r["kid"],
            r["alg"],
            orjson.loads(r["jwk"]),
            bytes(r["private_key"]),
            r["not_before"],
            r["activates_at"],
            r["retire_after"],
        )
        for r in rows
    ]


async def insert_key(conn: asyncpg.Connection, key: KeyRecord) -> None:
    await conn.execute(
        "INSERT INTO control.signing_keys"
        " (kid, alg, public_jwk, private_key, not_before, activates_at, retire_after)"
        " VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)",
        key.kid,
        key.alg,
        orjson.dumps(key.public_jwk).decode(),
        key.private_key,
        key.not_before,
        key.activates_at,
        key.retire_after,
    )


async def retire_unscheduled(conn: asyncpg.Connection, retire_after: datetime) -> int:
    """Schedule every key that has no retirement yet to leave the JWKS at `retire_after`."""
    status = await conn.execute(
        "UPDATE control.signing_keys SET retire_after = $1 WHERE retire_after IS NULL", retire_after
    )
    return int(status.split()[-1])


async def db_now(conn: asyncpg.Connection | asyncpg.Pool) -> datetime:
    now: datetime = await conn.fetchval("SELECT now()")
    return now
