"""SQL for the event journal: lock stream heads, allocate positions, write, read.

Why the global position is a counter row (`runtime.journal_head`) and not a sequence or a
transaction-id watermark: the counter's row lock is taken last in the writing transaction
and held until commit, so no transaction can take a position until the previous holder is
committed and visible. Position order is therefore commit order, and a reader that reads
"position > P" can never later find a smaller position committing behind it. The cost is
one committing writer at a time, which group commit (`service/appender.py`) turns into one
transaction per *batch*: `bench/journal_position.py` measured this against a sequence (fast
but unsafe: gaps and out-of-order commits) and an xid8 watermark (safe, but any long
transaction anywhere in the database stalls every reader, and readers must re-sort).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg

from oa.runtime.domain.journal import Event, StreamHead


@dataclass(frozen=True)
class StreamTable:
    """Where the heads of one kind of stream live."""

    kind: str
    table: str
    id_column: str


STREAM_TABLES: dict[str, StreamTable] = {
    "run": StreamTable("run", "runtime.runs", "run_id"),
    # Codex workers: their table (migration 0003) has the same head columns
    # (worker_id, owner, status, last_seq, last_hash, updated_at) plus their own.
    "worker": StreamTable("worker", "runtime.codex_workers", "worker_id"),
}

EVENT_COLUMNS = (
    "position, stream_kind, stream_id, seq, event_type, payload, payload_hash, prev_hash, hash,"
    " idempotency_key, principal, recorded_at"
)


def row_to_event(row: asyncpg.Record) -> Event:
    return Event(
        kind=row["stream_kind"],
        stream_id=row["stream_id"],
        seq=row["seq"],
        event_type=row["event_type"],
        payload_json=row["payload"].encode("utf-8"),
        payload_hash=row["payload_hash"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
        principal=row["principal"],
        idempotency_key=row["idempotency_key"],
        position=row["position"],
        recorded_at=row["recorded_at"].isoformat().replace("+00:00", "Z"),
    )


async def lock_heads(conn: asyncpg.Connection, kind: str, ids: Sequence[str]) -> dict[str, StreamHead]:
    """Lock the heads of `ids` in a fixed order (no deadlocks between batches)."""
    t = STREAM_TABLES[kind]
    rows = await conn.fetch(
        f"SELECT {t.id_column} AS id, owner, status, last_seq, last_hash, org_id FROM {t.table}"
        f" WHERE {t.id_column} = ANY($1::text[]) ORDER BY {t.id_column} FOR UPDATE",
        sorted(set(ids)),
    )
    return {r["id"]: head_of(kind, r) for r in rows}


def head_of(kind: str, r: asyncpg.Record) -> StreamHead:
    """A head from a row with id, owner, status, last_seq, last_hash, org_id."""
    return StreamHead(kind, r["id"], r["owner"], r["status"], r["last_seq"], r["last_hash"], org=r["org_id"])


async def stored_by_keys(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], Event]:
    if not keys:
        return {}
    kinds, ids, idem = zip(*keys, strict=True)
    rows = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM runtime.events e"
        " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(kind, id, key)"
        " ON e.stream_kind = k.kind AND e.stream_id = k.id AND e.idempotency_key = k.key",
        list(kinds),
        list(ids),
        list(idem),
    )
    return {(r["stream_kind"], r["stream_id"], r["idempotency_key"]): row_to_event(r) for r in rows}


async def create_heads(conn: asyncpg.Connection, heads: Sequence[StreamHead]) -> int:
    """Insert new stream heads; returns how many were new (fewer means a race)."""
    if not heads:
        return 0
    t = STREAM_TABLES[heads[0].kind]
    rows = await conn.fetch(
        f"INSERT INTO {t.table} ({t.id_column}, owner, status, last_seq, last_hash, org_id)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])"
        f" ON CONFLICT ({t.id_column}) DO NOTHING RETURNING {t.id_column}",
        [h.stream_id for h in heads],
        [h.owner for h in heads],
        [h.status for h in heads],
        [h.last_seq for h in heads],
        [h.last_hash for h in heads],
        [h.org for h in heads],
    )
    return len(rows)


async def update_heads(conn: asyncpg.Connection, heads: Sequence[StreamHead]) -> None:
    if not heads:
        return
    t = STREAM_TABLES[heads[0].kind]
    await conn.execute(
        f"UPDATE {t.table} AS s SET status = u.status, last_seq = u.last_seq,"
        " last_hash = u.last_hash, updated_at = now()"
        " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])"
        " AS u(id, status, last_seq, last_hash)"
        f" WHERE s.{t.id_column} = u.id",
        [h.stream_id for h in heads],
        [h.status for h in heads],
        [h.last_seq for h in heads],
        [h.last_hash for h in heads],
    )


async def allocate_positions(conn: asyncpg.Connection, count: int) -> tuple[int, str]:
    """Take `count` positions; returns the first one and the commit's timestamp.

    Must be the last lock the transaction takes: it is held until commit.
    """
    row = await conn.fetchrow(
        "UPDATE runtime.journal_head SET position = position + $1 WHERE id = 1"
        " RETURNING position, now() AS at",
        count,
    )
    assert row is not None
    return row["position"] - count + 1, row["at"].isoformat().replace("+00:00", "Z")


async def insert_events(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    await conn.execute(
        f"INSERT INTO runtime.events ({EVENT_COLUMNS})"
        " SELECT p, k, i, s, t, pl, ph, prv, h, ik, pr, now() FROM unnest("
        "$1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],"
        " $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])"
        " AS u(p, k, i, s, t, pl, ph, prv, h, ik, pr)",
        [e.position for e in events],
        [e.kind for e in events],
        [e.stream_id for e in events],
        [e.seq for e in events],
        [e.event_type for e in events],
        [e.payload_json.decode("utf-8") for e in events],
        [e.payload_hash for e in events],
        [e.prev_hash for e in events],
        [e.hash for e in events],
        [e.idempotency_key for e in events],
        [e.principal for e in events],
    )


async def notify(conn: asyncpg.Connection, head: int, streams: Iterable[str]) -> None:
    """Wake listeners at commit: `head` and the streams that changed (or `*` if too many)."""
    names = sorted(set(streams))
    body = f"{head} " + " ".join(names)
    if len(body) > 7000:
        body = f"{head} *"
    await conn.execute("SELECT pg_notify('oa_journal', $1)", body)


def _notify_streams(streams: Iterable[str]) -> str:
    """What follows the head in the wake-up body (see `notify`), with its leading space."""
    names = " " + " ".join(sorted(set(streams)))
    return names if len(names) < 6900 else " *"


async def write_batch(
    conn: asyncpg.Connection, changed_heads: Sequence[StreamHead], events: Sequence[Event]
) -> tuple[int, str]:
    """`update_heads` + `allocate_positions` + `insert_events` + `notify` in ONE statement.

    Why: the appender commits one batch at a time, so every round trip inside its
    transaction is time in which no other batch can commit (and CPU on both sides). As
    separate statements a steady-state batch took BEGIN, lock, update, allocate, insert,
    notify, COMMIT; this makes it BEGIN, lock, write, COMMIT. Safe as one statement: the
    heads it updates are already locked by this transaction (`lock_heads`), and the
    counter's lock is still held to commit. Positions are `base + ordinality`, i.e. the
    order of `events`, exactly as `allocate_positions` would have given them. Returns the
    first position and the commit's timestamp. New heads still go through `create_heads`
    first (its conflict check must run before the counter is locked).
    """
    args: list[object] = [len(events)]
    ctes: list[str] = []
    by_kind: dict[str, list[StreamHead]] = {}
    for h in changed_heads:
        by_kind.setdefault(h.kind, []).append(h)
    for n, kind in enumerate(sorted(by_kind)):
        t, heads = STREAM_TABLES[kind], by_kind[kind]
        p = len(args)
        # org_id: set once (by the first *.started naming one), never changed after.
        ctes.append(
            f"u{n} AS (UPDATE {t.table} AS s SET status = u.status, last_seq = u.last_seq,"
            " last_hash = u.last_hash, org_id = coalesce(s.org_id, u.org_id), updated_at = now()"
            f" FROM unnest(${p + 1}::text[], ${p + 2}::text[], ${p + 3}::bigint[], ${p + 4}::text[],"
            f" ${p + 5}::text[]) AS u(id, status, last_seq, last_hash, org_id) WHERE s.{t.id_column} = u.id)"
        )
        args += [
            [h.stream_id for h in heads],
            [h.status for h in heads],
            [h.last_seq for h in heads],
            [h.last_hash for h in heads],
            [h.org for h in heads],
        ]
    p = len(args)
    ctes.append(
        "h AS (UPDATE runtime.journal_head SET position = position + $1::bigint WHERE id = 1"
        " RETURNING position - $1::bigint AS base, now() AS at)"
    )
    cols = ", ".join(f"${p + i}::{'bigint' if i == 3 else 'text'}[]" for i in range(1, 11))
    ctes.append(
        f"ins AS (INSERT INTO runtime.events ({EVENT_COLUMNS})"
        " SELECT h.base + u.n, k, i, s, t, pl, ph, prv, hs, ik, pr, h.at"
        f" FROM h, unnest({cols}) WITH ORDINALITY AS u(k, i, s, t, pl, ph, prv, hs, ik, pr, n))"
    )
    args += [
        [e.kind for e in events],
        [e.stream_id for e in events],
        [e.seq for e in events],
        [e.event_type for e in events],
        [e.payload_json.decode("utf-8") for e in events],
        [e.payload_hash for e in events],
        [e.prev_hash for e in events],
        [e.hash for e in events],
        [e.idempotency_key for e in events],
        [e.principal for e in events],
        _notify_streams(f"{e.kind}:{e.stream_id}" for e in events),
    ]
    row = await conn.fetchrow(
        "WITH " + ", ".join(ctes) + " SELECT h.base + 1 AS first, h.at,"
        f" pg_notify('oa_journal', (h.base + $1::bigint)::text || ${len(args)}::text) FROM h",
        *args,
    )
    assert row is not None
    return row["first"], row["at"].isoformat().replace("+00:00", "Z")


async def read_stream(
    conn: asyncpg.Connection | asyncpg.Pool, kind: str, stream_id: str, after_seq: int, limit: int
) -> list[Event]:
    rows = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM runtime.events WHERE stream_kind = $1 AND stream_id = $2"
        " AND seq > $3 ORDER BY seq LIMIT $4",
        kind,
        stream_id,
        after_seq,
        limit,
    )
    return [row_to_event(r) for r in rows]


async def read_journal(
    conn: asyncpg.Connection | asyncpg.Pool, after_position: int, limit: int
) -> list[Event]:
    """Everything after `after_position`, in commit order (see the module docstring)."""
    rows = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM runtime.events WHERE position > $1 ORDER BY position LIMIT $2",
        after_position,
        limit,
    )
    return [row_to_event(r) for r in rows]


async def read_head(conn: asyncpg.Connection | asyncpg.Pool, kind: str, stream_id: str) -> StreamHead | None:
    t = STREAM_TABLES[kind]
    row = await conn.fetchrow(
        f"SELECT {t.id_column} AS id, owner, status, last_seq, last_hash, org_id FROM {t.table}"
        f" WHERE {t.id_column} = $1",
        stream_id,
    )
    return None if row is None else head_of(kind, row)


async def journal_head(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The position of the last committed event (0 when the journal is empty)."""
    return int(await conn.fetchval("SELECT position FROM runtime.journal_head WHERE id = 1") or 0)


async def event_ages(conn: asyncpg.Connection | asyncpg.Pool, positions: Sequence[int]) -> dict[int, float]:
    """position -> seconds since the event there was recorded (positions with no event are left out)."""
    rows = await conn.fetch(
        "SELECT position, extract(epoch FROM now() - recorded_at) AS age FROM runtime.events"
        " WHERE position = ANY($1::bigint[])",
        list(positions),
    )
    return {int(r["position"]): float(r["age"]) for r in rows}
