"""SQL for spend authorizations, reservations and the policy decision outbox.

Reserving locks the authorization rows (`FOR UPDATE`, in id order so batches never
deadlock) for the whole deciding transaction: that lock, not arithmetic in Python, is
what makes "spent + reserved never passes the maximum" hold under any concurrency. The
table's CHECK constraint is the second line of defence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from oa.runtime.domain.policy import Authorization


@dataclass(frozen=True)
class NewReservation:
    reservation_id: str
    authorization_id: str
    run_id: str
    tool_call_id: str
    tool: str
    owner: str
    amount_sats: int
    decision_id: str
    day: date
    deadline_s: int


@dataclass(frozen=True)
class NewDecision:
    decision_id: str
    run_id: str
    owner: str
    events_json: str
    response_json: str


def row_to_authorization(r: asyncpg.Record) -> Authorization:
    return Authorization(
        authorization_id=r["authorization_id"],
        owner=r["owner"],
        mode=r["mode"],
        max_total_sats=r["max_total_sats"],
        max_per_call_sats=r["max_per_call_sats"],
        max_per_day_sats=r["max_per_day_sats"],
        threshold_sats=r["threshold_sats"],
        allowed_tools=tuple(r["allowed_tools"]) if r["allowed_tools"] is not None else None,
        spent_sats=r["spent_sats"],
        reserved_sats=r["reserved_sats"],
        day=r["day"],
        day_used_sats=r["day_used_sats"],
        expires_at=r["expires_at"],
        revoked=r["revoked_at"] is not None,
    )


async def clock(conn: asyncpg.Connection) -> tuple[datetime, date]:
    row = await conn.fetchrow("SELECT now() AS now, (now() AT TIME ZONE 'UTC')::date AS today")
    assert row is not None
    return row["now"], row["today"]


async def insert_authorization(conn: asyncpg.Connection | asyncpg.Pool, values: dict[str, Any]) -> bool:
    row = await conn.fetchrow(
        "INSERT INTO runtime.spend_authorizations (authorization_id, owner, mode, max_total_sats,"
        " max_per_call_sats, max_per_day_sats, threshold_sats, allowed_tools, expires_at, params_hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " ON CONFLICT (authorization_id) DO NOTHING RETURNING authorization_id",
        values["authorization_id"],
        values["owner"],
        values["mode"],
        values["max_total_sats"],
        values["max_per_call_sats"],
        values["max_per_day_sats"],
        values["threshold_sats"],
        values["allowed_tools"],
        values["expires_at"],
        values["params_hash"],
    )
    return row is not None


async def get_authorization(
    conn: asyncpg.Connection | asyncpg.Pool, authorization_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM runtime.spend_authorizations WHERE authorization_id = $1"
        + (" FOR UPDATE" if lock else ""),
        authorization_id,
    )
    return row


async def lock_authorizations(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT * FROM runtime.spend_authorizations WHERE authorization_id = ANY($1::text[])"
        " ORDER BY authorization_id FOR UPDATE",
        sorted(set(ids)),
    )
    return {r["authorization_id"]: r for r in rows}


async def save_authorizations(conn: asyncpg.Connection, auths: Sequence[Authorization]) -> None:
    if not auths:
        return
    await conn.execute(
        "UPDATE runtime.spend_authorizations AS a SET reserved_sats = u.reserved, day = u.day,"
        " day_used_sats = u.day_used, updated_at = now()"
        " FROM unnest($1::text[], $2::bigint[], $3::date[], $4::bigint[]) AS u(id, reserved, day, day_used)"
        " WHERE a.authorization_id = u.id",
        [a.authorization_id for a in auths],
        [a.reserved_sats for a in auths],
        [a.day for a in auths],
        [a.day_used_sats for a in auths],
    )


async def revoke(conn: asyncpg.Connection | asyncpg.Pool, authorization_id: str, reason: str | None) -> None:
    await conn.execute(
        "UPDATE runtime.spend_authorizations SET revoked_at = coalesce(revoked_at, now()),"
        " revoke_reason = coalesce(revoke_reason, $2), updated_at = now() WHERE authorization_id = $1",
        authorization_id,
        reason,
    )


async def run_heads(conn: asyncpg.Connection, run_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT run_id, owner, status FROM runtime.runs WHERE run_id = ANY($1::text[])", sorted(set(run_ids))
    )
    return {r["run_id"]: r for r in rows}


async def decisions_by_id(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT decision_id, response FROM runtime.policy_decisions WHERE decision_id = ANY($1::text[])",
        sorted(set(ids)),
    )
    return {r["decision_id"]: r["response"] for r in rows}


async def reservations_by_id(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT * FROM runtime.spend_reservations WHERE reservation_id = ANY($1::text[])", sorted(set(ids))
    )
    return {r["reservation_id"]: r for r in rows}


async def insert_reservations(
    conn: asyncpg.Connection, rows: Sequence[NewReservation]
) -> dict[str, asyncpg.Record]:
    if not rows:
        return {}
    out = await conn.fetch(
        "INSERT INTO runtime.spend_reservations (reservation_id, authorization_id, run_id, tool_call_id,"
        " tool, owner, amount_sats, decision_id, day, deadline_at)"
        " SELECT r, a, ru, tc, t, o, amt, d, dy, now() + make_interval(secs => dl) FROM unnest("
        "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],"
        " $8::text[], $9::date[], $10::float8[]) AS u(r, a, ru, tc, t, o, amt, d, dy, dl) RETURNING *",
        [r.reservation_id for r in rows],
        [r.authorization_id for r in rows],
        [r.run_id for r in rows],
        [r.tool_call_id for r in rows],
        [r.tool for r in rows],
        [r.owner for r in rows],
        [r.amount_sats for r in rows],
        [r.decision_id for r in rows],
        [r.day for r in rows],
        [float(r.deadline_s) for r in rows],
    )
    return {r["reservation_id"]: r for r in out}


async def insert_decisions(conn: asyncpg.Connection, rows: Sequence[NewDecision]) -> None:
    if not rows:
        return
    await conn.execute(
        "INSERT INTO runtime.policy_decisions (decision_id, run_id, owner, events, response)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
        [r.decision_id for r in rows],
        [r.run_id for r in rows],
        [r.owner for r in rows],
        [r.events_json for r in rows],
        [r.response_json for r in rows],
    )


async def mark_published(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[str]) -> None:
    if ids:
        await conn.execute(
            "UPDATE runtime.policy_decisions SET published_at = now()"
            " WHERE decision_id = ANY($1::text[]) AND published_at IS NULL",
            list(ids),
        )


async def unpublished(
    conn: asyncpg.Connection | asyncpg.Pool, older_than_s: float, limit: int
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT decision_id, run_id, owner, events FROM runtime.policy_decisions"
            " WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)"
            " ORDER BY created_at LIMIT $2",
            older_than_s,
            limit,
        )
    )


async def get_reservation(
    conn: asyncpg.Connection | asyncpg.Pool, reservation_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM runtime.spend_reservations WHERE reservation_id = $1"
        + (" FOR UPDATE" if lock else ""),
        reservation_id,
    )
    return row


async def settle_reservation(
    conn: asyncpg.Connection,
    reservation_id: str,
    state: str,
    committed_sats: int | None,
    reason: str | None,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "UPDATE runtime.spend_reservations SET state = $2, committed_sats = $3,"
        " reason = coalesce($4, reason), updated_at = now() WHERE reservation_id = $1 RETURNING *",
        reservation_id,
        state,
        committed_sats,
        reason,
    )
    return row


async def apply_budget(
    conn: asyncpg.Connection, authorization_id: str, spent: int, reserved: int, day: date, day_delta: int
) -> None:
    """Add the deltas; the daily counter only moves if `day` is still the counted day."""
    await conn.execute(
        "UPDATE runtime.spend_authorizations SET spent_sats = spent_sats + $2,"
        " reserved_sats = reserved_sats + $3,"
        " day_used_sats = CASE WHEN day = $4 THEN greatest(0, day_used_sats + $5) ELSE day_used_sats END,"
        " updated_at = now() WHERE authorization_id = $1",
        authorization_id,
        spent,
        reserved,
        day,
        day_delta,
    )


async def list_reservations(
    conn: asyncpg.Connection | asyncpg.Pool,
    owner: str,
    state: str | None,
    authorization_id: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM runtime.spend_reservations WHERE owner = $1"
            " AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR authorization_id = $3)"
            " ORDER BY created_at, reservation_id LIMIT $4",
            owner,
            state,
            authorization_id,
            limit,
        )
    )


async def sweep_stuck(conn: asyncpg.Connection | asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    """Move reservations past their deadline to reconcile_required (their sats stay reserved)."""
    return list(
        await conn.fetch(
            "UPDATE runtime.spend_reservations SET state = 'reconcile_required', updated_at = now(),"
            " reason = 'deadline passed while reserved: neither committed nor released in time'"
            " WHERE reservation_id IN (SELECT reservation_id FROM runtime.spend_reservations"
            "  WHERE state = 'reserved' AND deadline_at < now() ORDER BY deadline_at LIMIT $1"
            "  FOR UPDATE SKIP LOCKED) RETURNING reservation_id",
            limit,
        )
    )
