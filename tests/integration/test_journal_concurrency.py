"""Many concurrent writers, one tailing reader: every event seen exactly once, in order.

Three `GroupAppender`s (as if three runtime processes, each with its own pool) and raw SQL
writers that follow the same locking protocol by hand all append to the same streams,
while a reader tails `read_journal(after_position)` the way the projector does. A reader
that advances its cursor to the last position it saw can only be complete if positions
become visible in order, which is what the journal-head row lock promises. The second test
shows why that lock is needed: with a sequence, the same reader skips an event for good.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from oa.canonical import canonical_json, event_hash, sha256_hex
from oa.runtime.adapters import journal_sql as sql
from oa.runtime.domain.journal import AppendRequest, Event
from oa.runtime.service.appender import GroupAppender
from oa.runtime.service.runs import run_transition
from oa.store.database import Database

OWNER = "user:concurrency"
Acked = tuple[str, int, int, str]  # stream, seq, position, hash


@pytest.fixture
async def appenders(database_url: str) -> AsyncIterator[list[GroupAppender]]:
    dbs = [await Database.connect(database_url, min_size=1, max_size=3) for _ in range(3)]
    apps = [GroupAppender(db, max_batch_events=50) for db in dbs]
    for a in apps:
        a.start()
    try:
        yield apps
    finally:
        for a in apps:
            await a.stop()
        for db in dbs:
            await db.close()


async def submitter(app: GroupAppender, streams: list[str], tag: str, acked: list[Acked]) -> int:
    """Append 25 commands of 1-3 events; retry some of them to exercise replays."""
    rng = random.Random(tag)
    sent: list[tuple[str, list[AppendRequest]]] = []
    replays = 0
    for i in range(25):
        if sent and rng.random() < 0.15:
            sid, reqs = rng.choice(sent)
            plan = await app.append("run", sid, OWNER, reqs, run_transition, "created")
            assert all(o.result == "replayed" for o in plan.outcomes) and not plan.changed
            replays += 1
            continue
        sid = rng.choice(streams)
        reqs = [
            AppendRequest("text.delta", {"text": f"{tag}-{i}-{j}"}, f"{tag}-{i}-{j}")
            for j in range(rng.randint(1, 3))
        ]
        plan = await app.append("run", sid, OWNER, reqs, run_transition, "created")
        acked.extend((e.stream_id, e.seq, e.position, e.hash) for e in plan.new_events)
        sent.append((sid, reqs))
    return replays


async def raw_writer(url: str, streams: list[str], tag: str, acked: list[Acked]) -> None:
    """The locking protocol by hand: stream row, then the journal head, held to COMMIT."""
    rng = random.Random(tag)
    conn = await asyncpg.connect(url)
    try:
        for i in range(40):
            sid = rng.choice(streams)
            async with conn.transaction():
                head = await conn.fetchrow(
                    "SELECT last_seq, last_hash FROM runtime.runs WHERE run_id = $1 FOR UPDATE", sid
                )
                seq, prev = head["last_seq"] + 1, head["last_hash"]
                body = canonical_json({"text": f"{tag}-{i}"})
                digest = event_hash(sid, seq, "text.delta", sha256_hex(body), prev)
                await conn.execute(
                    "UPDATE runtime.runs SET last_seq = $2, last_hash = $3 WHERE run_id = $1",
                    sid,
                    seq,
                    digest,
                )
                position = await conn.fetchval(
                    "UPDATE runtime.journal_head SET position = position + 1 WHERE id = 1 RETURNING position"
                )
                await asyncio.sleep(rng.random() * 0.004)  # hold the head lock a while
                await conn.execute(
                    "INSERT INTO runtime.events (position, stream_kind, stream_id, seq, event_type, payload,"
                    " payload_hash, prev_hash, hash, principal) VALUES ($1, 'run', $2, $3, 'text.delta',"
                    " $4, $5, $6, $7, $8)",
                    position,
                    sid,
                    seq,
                    body.decode(),
                    sha256_hex(body),
                    prev,
                    digest,
                    OWNER,
                )
            acked.append((sid, seq, position, digest))
    finally:
        await conn.close()


async def tail(db: Database, start: int, done: asyncio.Event, seen: list[Event]) -> None:
    """Follow the journal like the projector: cursor = last position seen."""
    cursor = start
    while True:
        finished = done.is_set()  # read once more after the writers are done
        batch = await sql.read_journal(db.pool, cursor, 200)
        seen.extend(batch)
        if batch:
            cursor = batch[-1].position
        elif finished:
            return
        else:
            await asyncio.sleep(0.001)


async def test_concurrent_writers_and_a_tailing_reader(
    database_url: str, db: Database, appenders: list[GroupAppender]
) -> None:
    streams = [f"run-cc{uuid.uuid4().hex[:10]}" for _ in range(8)]
    for sid in streams:
        await appenders[0].append(
            "run", sid, OWNER, [AppendRequest("run.started", {})], run_transition, "created"
        )
    start = int(await db.fetchval("SELECT position FROM runtime.journal_head"))

    reader_db = await Database.connect(database_url, min_size=1, max_size=1)
    done, seen, acked = asyncio.Event(), list[Event](), list[Acked]()
    reader = asyncio.create_task(tail(reader_db, start, done, seen))
    try:
        jobs = [
            submitter(app, streams, f"a{n}s{s}", acked) for n, app in enumerate(appenders) for s in range(8)
        ]
        raw = [raw_writer(database_url, streams, f"raw{r}", acked) for r in range(2)]
        results = await asyncio.gather(*jobs, *raw)
        done.set()
        await asyncio.wait_for(reader, 30)
    finally:
        reader.cancel()
        await reader_db.close()

    assert sum(r for r in results if r) > 0, "no replay was exercised"
    positions = [e.position for e in seen]
    assert positions == list(range(start + 1, start + 1 + len(seen))), "reader skipped or repeated"
    assert len(acked) > 500 and len(seen) == len(acked)
    assert sorted((e.stream_id, e.seq, e.position, e.hash) for e in seen) == sorted(acked)
    final = await sql.read_journal(db.pool, start, 100_000)
    assert [(e.position, e.hash) for e in final] == [(e.position, e.hash) for e in seen]
    assert sum(a.commands for a in appenders) > sum(a.batches for a in appenders), "no group commit"

    for sid in streams:
        events = await sql.read_stream(db.pool, "run", sid, 0, 100_000)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        prev = None
        for e in events:
            assert e.prev_hash == prev
            assert e.hash == event_hash(sid, e.seq, e.event_type, sha256_hex(e.payload_json), prev)
            prev = e.hash
        head = await sql.read_head(db.pool, "run", sid)
        assert head is not None and (head.last_seq, head.last_hash) == (len(events), prev)


async def test_why_positions_come_from_a_row_lock(database_url: str) -> None:
    """A sequence hands out positions in allocation order, not commit order: a tailing reader
    skips the slow writer's event forever. The journal-head row lock makes the second writer
    wait for the first one's COMMIT (or ROLLBACK) instead."""
    schema = f"lockdemo_{uuid.uuid4().hex[:8]}"
    slow, fast, reader = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        await reader.execute(
            f"CREATE SCHEMA {schema}; CREATE SEQUENCE {schema}.pos;"
            f" CREATE TABLE {schema}.events (position bigint PRIMARY KEY)"
        )
        t_slow = slow.transaction()
        await t_slow.start()
        p_slow = await slow.fetchval(f"SELECT nextval('{schema}.pos')")
        async with fast.transaction():
            p_fast = await fast.fetchval(f"SELECT nextval('{schema}.pos')")
            await fast.execute(f"INSERT INTO {schema}.events VALUES ($1)", p_fast)
        cursor = await reader.fetchval(f"SELECT max(position) FROM {schema}.events WHERE position > 0")
        await slow.execute(f"INSERT INTO {schema}.events VALUES ($1)", p_slow)
        await t_slow.commit()
        later = await reader.fetch(f"SELECT position FROM {schema}.events WHERE position > $1", cursor)
        assert p_slow < p_fast and cursor == p_fast and later == []  # p_slow is never read

        # The real allocator: the second transaction blocks until the first one ends.
        t1, t2 = slow.transaction(), fast.transaction()
        await t1.start()
        await t2.start()
        first, _ = await sql.allocate_positions(slow, 1)
        second = asyncio.create_task(sql.allocate_positions(fast, 1))
        await asyncio.sleep(0.3)
        assert not second.done(), "a second writer took a position while the first was open"
        await t1.rollback()
        assert (await asyncio.wait_for(second, 5))[0] == first  # no gap left by the rollback
        await t2.rollback()
    finally:
        await reader.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        for c in (slow, fast, reader):
            await c.close()
