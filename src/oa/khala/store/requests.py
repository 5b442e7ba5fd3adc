"""Operator requests (rebuild, prune, audit): the projector's side of `khala_admin.requests`.

The admin API (gate role) only appends pending rows through `khala_admin.request_work`; the
projector claims them (FOR UPDATE SKIP LOCKED, so two projectors never run the same one)
and writes the outcome back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    args: dict[str, Any]


async def claim(conn: asyncpg.Connection) -> Request | None:
    """The oldest pending request, marked running; None when there is none (or no table yet)."""
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT id, kind, args FROM khala_admin.requests WHERE status = 'pending'"
                " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            )
            if row is None:
                return None
            await conn.execute("UPDATE khala_admin.requests SET status = 'running' WHERE id = $1", row["id"])
    except asyncpg.UndefinedTableError:  # a database from before migration 0005
        return None
    args = orjson.loads(row["args"]) if isinstance(row["args"], str) else dict(row["args"])
    return Request(row["id"], row["kind"], args)


async def finish(conn: asyncpg.Connection, request_id: int, status: str, result: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE khala_admin.requests SET status = $2, result = $3::jsonb, finished_at = now() WHERE id = $1",
        request_id,
        status,
        orjson.dumps(result).decode(),
    )
