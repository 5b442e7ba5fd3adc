"""The admin API's SQL: reads of `khala` (reader role) and of `khala_admin` (gate role).

The gate role writes `khala_admin` only through the owner's functions (migration 0006):
the database, not this code, bounds a grant to 1-60 minutes from its own clock, makes
revocation final, and keeps the audit trail append-only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import orjson

from oa.khala.topics import TOPICS

Pool: TypeAlias = Any  # an asyncpg Pool or Connection (asyncpg ships no types)
GRANT_COLUMNS = "id, ticket, reason, requester, scope, created_at, expires_at, revoked_at"


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def grant_json(r: asyncpg.Record, now: datetime) -> dict[str, Any]:
    live = r["revoked_at"] is None and r["expires_at"] > now
    return {
        "id": r["id"],
        "ticket": r["ticket"],
        "reason": r["reason"],
        "requester": r["requester"],
        "scope": r["scope"],
        "created_at": _iso(r["created_at"]),
        "expires_at": _iso(r["expires_at"]),
        "revoked_at": _iso(r["revoked_at"]),
        "live": live,
        "seconds_left": max(0, int((r["expires_at"] - now).total_seconds())) if live else 0,
    }


async def now(db: Pool) -> datetime:
    value: datetime = await db.fetchval("SELECT now()")
    return value


async def projector_lag(db: Pool) -> dict[str, dict[str, Any]]:
    """Per projection of the live generation: checkpoint, events behind the journal head, error."""
    head = int(await db.fetchval("SELECT position FROM runtime.journal_head WHERE id = 1") or 0)
    rows = await db.fetch(
        "SELECT c.projection, c.position, c.error, c.updated_at FROM khala.checkpoints c"
        " JOIN khala.state s ON s.live_generation = c.generation ORDER BY c.projection"
    )
    return {
        r["projection"]: {
            "position": r["position"],
            "events_behind": head - r["position"],
            "error": r["error"],
            "updated_at": _iso(r["updated_at"]),
        }
        for r in rows
    } | {"_journal": {"head": head}}


async def topic_heads(db: Pool) -> dict[str, dict[str, int]]:
    rows = await db.fetch("SELECT topic, watermark, retention_floor FROM khala.topic_heads")
    found = {r["topic"]: {"head": r["watermark"], "retention_floor": r["retention_floor"]} for r in rows}
    return {t: found.get(t, {"head": 0, "retention_floor": 0}) for t in TOPICS}


def _doc(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "doc_key": r["doc_key"],
        "topic": r["topic"],
        "doc_version": r["doc_version"],
        "watermark": r["watermark"],
        "payload_hash": r["payload_hash"],
        "owner_user": r["owner_user"],
        "org_id": r["org_id"],
        "payload": orjson.Fragment(r["payload"]),
    }


async def documents(db: Pool, topic: str, prefix: str, after: str, limit: int) -> list[dict[str, Any]]:
    """Live documents of `topic` whose key starts with `prefix`, in key order after `after`."""
    rows = await db.fetch(
        "SELECT d.doc_key, d.topic, d.doc_version, d.watermark, d.payload_hash, d.owner_user, d.org_id,"
        " d.payload FROM khala.documents d JOIN khala.state s ON s.live_generation = d.generation"
        " WHERE d.topic = $1 AND d.doc_key > $2 AND starts_with(d.doc_key, $3)"
        " ORDER BY d.doc_key LIMIT $4",
        topic,
        after,
        prefix,
        limit,
    )
    return [_doc(r) for r in rows]


async def document(db: Pool, key: str, history: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    row = await db.fetchrow(
        "SELECT d.doc_key, d.topic, d.doc_version, d.watermark, d.payload_hash, d.owner_user, d.org_id,"
        " d.payload FROM khala.documents d JOIN khala.state s ON s.live_generation = d.generation"
        " WHERE d.doc_key = $1",
        key,
    )
    rows = await db.fetch(
        "SELECT topic, watermark, batch_id, doc_version, payload, payload_hash, committed_at"
        " FROM khala.stream_journal WHERE doc_key = $1 ORDER BY topic, watermark DESC LIMIT $2",
        key,
        history,
    )
    journal = [
        {
            "topic": r["topic"],
            "watermark": r["watermark"],
            "batch_id": r["batch_id"],
            "doc_version": r["doc_version"],
            "deleted": r["payload"] is None,
            "payload_hash": r["payload_hash"],
            "committed_at": _iso(r["committed_at"]),
            "payload": orjson.Fragment(r["payload"]) if r["payload"] is not None else None,
        }
        for r in rows
    ]
    return (_doc(row) if row else None), journal


async def errors(db: Pool, limit: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT id, at, source, projection, position, message FROM khala.errors ORDER BY id DESC LIMIT $1",
        limit,
    )
    return [
        {
            "id": r["id"],
            "at": _iso(r["at"]),
            "source": r["source"],
            "projection": r["projection"],
            "position": r["position"],
            "message": r["message"],
        }
        for r in rows
    ]


async def insert_grant(
    db: Pool, ticket: str, reason: str, requester: str, scope: str, ttl_minutes: int
) -> int:
    gid: int = await db.fetchval(
        "SELECT khala_admin.open_grant($1, $2, $3, $4, $5)", ticket, reason, requester, scope, ttl_minutes
    )
    return gid


async def grant(db: Pool, gid: int) -> asyncpg.Record | None:
    return await db.fetchrow(f"SELECT {GRANT_COLUMNS} FROM khala_admin.grants WHERE id = $1", gid)


async def grants(db: Pool, live_only: bool, limit: int) -> list[asyncpg.Record]:
    where = "WHERE revoked_at IS NULL AND expires_at > now()" if live_only else ""
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {GRANT_COLUMNS} FROM khala_admin.grants {where} ORDER BY id DESC LIMIT $1", limit
    )
    return rows


async def revoke(db: Pool, gid: int | None) -> int:
    """Revoke one live grant (or all, `gid` None); returns how many were live."""
    count: int = await db.fetchval("SELECT khala_admin.revoke_grants($1)", gid)
    return count


async def insert_audit(
    db: Pool, grant_id: int | None, ticket: str | None, tool: str, digest: str, outcome: str
) -> int:
    aid: int = await db.fetchval(
        "SELECT khala_admin.record_audit($1, $2, $3, $4, $5)", grant_id, ticket, tool, digest, outcome
    )
    return aid


async def audit_trail(db: Pool, before: int, limit: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT id, at, grant_id, ticket, tool, args_digest, outcome FROM khala_admin.mcp_audit"
        " WHERE id < $1 ORDER BY id DESC LIMIT $2",
        before,
        limit,
    )
    return [{**dict(r), "at": _iso(r["at"])} for r in rows]


async def insert_request(db: Pool, kind: str, args: dict[str, Any], grant_id: int | None) -> int:
    """Queue work for the projector (the function also wakes it with a NOTIFY)."""
    rid: int = await db.fetchval(
        "SELECT khala_admin.request_work($1, $2::jsonb, $3)", kind, orjson.dumps(args).decode(), grant_id
    )
    return rid


async def request(db: Pool, rid: int) -> dict[str, Any] | None:
    r = await db.fetchrow(
        "SELECT id, kind, args, status, result, created_at, finished_at FROM khala_admin.requests WHERE id = $1",
        rid,
    )
    if r is None:
        return None
    return {
        "id": r["id"],
        "kind": r["kind"],
        "args": orjson.Fragment(r["args"]),
        "status": r["status"],
        "result": orjson.Fragment(r["result"]) if r["result"] is not None else None,
        "created_at": _iso(r["created_at"]),
        "finished_at": _iso(r["finished_at"]),
    }
