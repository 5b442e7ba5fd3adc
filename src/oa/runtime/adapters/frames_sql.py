"""SQL for run frames (inputs to a run, idempotent by frame_id)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from oa.runtime.domain.journal import StreamHead


async def ensure_run(conn: asyncpg.Connection, run_id: str, principal: str) -> StreamHead:
    """Create the run (owned by `principal`) if it is new; return its locked head."""
    await conn.execute(
        "INSERT INTO runtime.runs (run_id, owner) VALUES ($1, $2) ON CONFLICT (run_id) DO NOTHING",
        run_id,
        principal,
    )
    row = await conn.fetchrow(
        "SELECT owner, status, last_seq, last_hash FROM runtime.runs WHERE run_id = $1 FOR UPDATE",
        run_id,
    )
    assert row is not None
    return StreamHead("run", run_id, row["owner"], row["status"], row["last_seq"], row["last_hash"])


async def get_frame(conn: asyncpg.Connection, run_id: str, frame_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM runtime.run_frames WHERE run_id = $1 AND frame_id = $2", run_id, frame_id
    )
    return row


async def insert_frame(
    conn: asyncpg.Connection,
    run_id: str,
    frame_id: str,
    thread_id: str,
    frame_type: str,
    payload: str,
    payload_hash: str,
    principal: str,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO runtime.run_frames"
        " (run_id, frame_id, thread_id, frame_type, payload, payload_hash, principal)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        run_id,
        frame_id,
        thread_id,
        frame_type,
        payload,
        payload_hash,
        principal,
    )
    return row


def frame_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "run_id": row["run_id"],
        "frame_id": row["frame_id"],
        "thread_id": row["thread_id"],
        "type": row["frame_type"],
        "payload": orjson.loads(row["payload"]),
        "payload_hash": row["payload_hash"],
        "received_at": row["received_at"].isoformat().replace("+00:00", "Z"),
    }
