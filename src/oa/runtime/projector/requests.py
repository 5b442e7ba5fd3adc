"""Operator requests (rebuild, prune, audit) that the Khala admin API records.

The admin API runs in the sync server, whose database role cannot write `khala`; it only
inserts a row in `khala_admin.requests`. The projector, Khala's single writer, claims
pending rows between batches (FOR UPDATE SKIP LOCKED, so two projectors never run the same
one), executes them on its own connection and writes the result back.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson

log = logging.getLogger(__name__)
MAX_DRIFT_LISTED = 50


async def _execute(conn: asyncpg.Connection, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    from oa.runtime.projector.prune import prune
    from oa.runtime.projector.rebuild import audit, rebuild

    if kind == "prune":
        result = await prune(conn, str(args.get("topic", "")), args.get("retention_s"))
        return result.json()
    if kind in ("rebuild", "audit"):
        report = await (rebuild(conn) if kind == "rebuild" else audit(conn))
        return {
            "documents": report.documents,
            "events": report.events,
            "drift_count": len(report.drift),
            "drift": report.drift[:MAX_DRIFT_LISTED],
        }
    raise ValueError(f"unknown request kind {kind!r}")


async def _claim(conn: asyncpg.Connection) -> asyncpg.Record | None:
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT id, kind, args FROM khala_admin.requests WHERE status = 'pending'"
            " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
        if row is not None:
            await conn.execute("UPDATE khala_admin.requests SET status = 'running' WHERE id = $1", row["id"])
        return row


async def run_pending_requests(conn: asyncpg.Connection, limit: int = 10) -> int:
    """Claim and execute up to `limit` pending requests; returns how many ran."""
    ran = 0
    while ran < limit:
        try:
            row = await _claim(conn)
        except asyncpg.UndefinedTableError:  # a database from before migration 0005
            return ran
        if row is None:
            return ran
        args = orjson.loads(row["args"]) if isinstance(row["args"], str) else dict(row["args"])
        try:
            result, status = await _execute(conn, row["kind"], args), "done"
        except Exception as exc:  # the request failed, not the projector: report it
            log.warning("khala request %s (%s) failed: %s", row["id"], row["kind"], exc)
            result, status = {"error": str(exc)}, "failed"
        await conn.execute(
            "UPDATE khala_admin.requests SET status = $2, result = $3::jsonb, finished_at = now() WHERE id = $1",
            row["id"],
            status,
            orjson.dumps(result).decode(),
        )
        ran += 1
    return ran
