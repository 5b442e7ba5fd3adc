"""How to give every event a global journal position in commit order: four schemes, measured.

Run: `.venv/bin/python bench/journal_position.py [--seconds 5] [--writers 32]`.

On one Postgres, `--writers` asyncpg connections each insert single events as fast as they
can, while one reader tails the journal the way the scheme requires:

a. a plain sequence (`bigserial`): fast, but positions are taken before commit, so a
   reader that has seen position 10 can later find 9 commit behind it (baseline only);
b. a counter row whose lock is held to commit, one event per transaction: safe, but only
   one transaction at a time can hold the counter, so every commit waits for the previous
   one's WAL flush;
c. the same counter with group commit: writers hand their events to one committer that
   writes everything waiting in one transaction (what `oa.runtime.service.appender` does);
d. an xid8 watermark: rows carry `pg_current_xact_id()`, writers never wait on each other,
   and the reader only reads rows whose xid is below `pg_snapshot_xmin` of its snapshot
   (every transaction below it has ended), in (xid, id) order.

Why: the design asks for the mechanism to be chosen by measurement. The table prints
events/s, the ratio to (a), acknowledged-write latency, and what the reader kept up with.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import uvloop
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

console = Console(width=None if sys.stdout.isatty() else 150)
PAYLOAD = '{"channel":"out","text":"a typical streamed token or two"}'

SCHEMA = """
CREATE SEQUENCE seq_position;
CREATE TABLE seq_events (
    position bigint PRIMARY KEY DEFAULT nextval('seq_position'),
    stream_id text NOT NULL, payload text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE journal_head (id smallint PRIMARY KEY, position bigint NOT NULL);
INSERT INTO journal_head VALUES (1, 0);
CREATE TABLE ctr_events (
    position bigint PRIMARY KEY,
    stream_id text NOT NULL, payload text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE xid_events (
    id bigserial PRIMARY KEY, xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id text NOT NULL, payload text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX xid_events_order ON xid_events (xid, id);
"""

SEQ_INSERT = "INSERT INTO seq_events (stream_id, payload) VALUES ($1, $2)"
# The counter's lock is taken by the UPDATE and held until this (implicit) transaction
# commits, WAL flush included.
CTR_INSERT = (
    "WITH h AS (UPDATE journal_head SET position = position + 1 WHERE id = 1 RETURNING position)"
    " INSERT INTO ctr_events (position, stream_id, payload) SELECT h.position, $1, $2 FROM h"
)
CTR_GROUP_INSERT = (
    "WITH h AS (UPDATE journal_head SET position = position + cardinality($1::text[]) WHERE id = 1"
    " RETURNING position - cardinality($1::text[]) AS base)"
    " INSERT INTO ctr_events (position, stream_id, payload)"
    " SELECT h.base + u.n, u.s, u.p FROM h, unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, p, n)"
)
XID_INSERT = "INSERT INTO xid_events (stream_id, payload) VALUES ($1, $2)"

READ_BY_POSITION = "SELECT position FROM {table} WHERE position > $1 ORDER BY position LIMIT 1000"
READ_BY_XID = (
    "SELECT xid::text::bigint AS x, id FROM xid_events"
    " WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) AND (xid, id) > ($1::text::xid8, $2)"
    " ORDER BY xid, id LIMIT 1000"
)


@dataclass
class Result:
    scheme: str
    events: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    commits: int = 0
    read: int = 0
    out_of_order: int = 0
    seconds: float = 1.0
    cores: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds


Writer = Callable[[asyncpg.Connection, str], Awaitable[None]]


async def _drive(
    url: str,
    result: Result,
    writers: int,
    seconds: float,
    warmup: float,
    write_one: Writer | None,
    reader: Callable[[asyncpg.Connection, Callable[[], bool]], Awaitable[None]],
    progress: Progress,
    group: bool = False,
) -> Result:
    conns = [await asyncpg.connect(url) for _ in range(writers + 2)]
    t0 = time.monotonic()
    start, end = t0 + warmup, t0 + warmup + seconds
    result.seconds = seconds
    task = progress.add_task(result.scheme, total=warmup + seconds)

    def done() -> bool:
        return time.monotonic() >= end

    async def writer(conn: asyncpg.Connection, i: int) -> None:
        stream = f"stream-{i}"
        while not done():
            a = time.monotonic()
            if group:
                await submit(stream)
            else:
                assert write_one is not None
                await write_one(conn, stream)
            b = time.monotonic()
            if a >= start and b <= end:
                result.events += 1
                result.latencies_ms.append((b - a) * 1000)

    queue: asyncio.Queue[tuple[str, asyncio.Future[None]]] = asyncio.Queue()

    async def submit(stream: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await queue.put((stream, fut))
        await fut

    async def committer(conn: asyncpg.Connection) -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            await conn.execute(CTR_GROUP_INSERT, [s for s, _ in batch], [PAYLOAD] * len(batch))
            if start <= time.monotonic() <= end:
                result.commits += 1
            for _, fut in batch:
                fut.set_result(None)

    async def ticker() -> None:
        while not done():
            progress.update(task, completed=time.monotonic() - t0)
            await asyncio.sleep(0.1)
        progress.update(task, completed=warmup + seconds)

    committing = asyncio.create_task(committer(conns[-2])) if group else None
    await asyncio.gather(ticker(), reader(conns[-1], done), *(writer(conns[i], i) for i in range(writers)))
    if committing is not None:
        committing.cancel()
    for c in conns:
        await c.close()
    if not group:
        result.commits = result.events
    return result


def _position_reader(
    table: str, result: Result
) -> Callable[[asyncpg.Connection, Callable[[], bool]], Awaitable[None]]:
    async def read(conn: asyncpg.Connection, done: Callable[[], bool]) -> None:
        query = READ_BY_POSITION.format(table=table)
        last = await conn.fetchval(f"SELECT coalesce(max(position), 0) FROM {table}")
        while not done():
            rows = await conn.fetch(query, last)
            for r in rows:
                if r["position"] != last + 1:
                    # A gap now is a position taken by a transaction not yet committed
                    # (or rolled back): with a sequence the reader cannot tell which.
                    result.out_of_order += 1
                last = r["position"]
            result.read += len(rows)
            if not rows:
                await asyncio.sleep(0.005)

    return read


def _xid_reader(result: Result) -> Callable[[asyncpg.Connection, Callable[[], bool]], Awaitable[None]]:
    async def read(conn: asyncpg.Connection, done: Callable[[], bool]) -> None:
        last_x, last_id = 0, 0
        while not done():
            rows = await conn.fetch(READ_BY_XID, str(last_x), last_id)
            for r in rows:
                last_x, last_id = r["x"], r["id"]
            result.read += len(rows)
            if not rows:
                await asyncio.sleep(0.005)

    return read


async def _seq(conn: asyncpg.Connection, stream: str) -> None:
    await conn.execute(SEQ_INSERT, stream, PAYLOAD)


async def _ctr(conn: asyncpg.Connection, stream: str) -> None:
    await conn.execute(CTR_INSERT, stream, PAYLOAD)


async def _xid(conn: asyncpg.Connection, stream: str) -> None:
    await conn.execute(XID_INSERT, stream, PAYLOAD)


async def run_all(
    url: str, pg: benchlib.PgServer, writers: int, seconds: float, warmup: float
) -> list[Result]:
    conn = await asyncpg.connect(url)
    await conn.execute(SCHEMA)
    await conn.close()
    results: list[Result] = []
    with Progress(console=console) as progress:
        for name, table, fn, group in (
            ("a. plain sequence (no order guarantee)", "seq_events", _seq, False),
            ("b. counter row locked to commit, 1 event/tx", "ctr_events", _ctr, False),
            ("c. counter row + group commit (our appender)", "ctr_events", None, True),
            ("d. xid8 watermark, reader below snapshot xmin", "", _xid, False),
        ):
            r = Result(name)
            reader = _xid_reader(r) if not table else _position_reader(table, r)
            meter = benchlib.meter_in_process(pg)  # over warm-up and window
            results.append(await _drive(url, r, writers, seconds, warmup, fn, reader, progress, group))
            meter.stop()
            r.cores, r.peaks = meter.shares(), meter.peaks()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--writers", type=int, default=32)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="1-second windows (smoke run)")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.warmup = 1.0, 0.2
    benchlib.save_results("journal_position", lambda: run(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    with benchlib.postgres() as pg, benchlib.database(pg.admin_url, "oa_bench_position") as url:
        results = uvloop.run(run_all(url, pg, args.writers, args.seconds, args.warmup))
    base = results[0].rate or 1.0
    table = Table(title=f"journal position schemes: {args.writers} asyncpg writers, single-event inserts")
    for col in (
        "scheme",
        "events/s",
        "ratio to (a)",
        "p50 ms",
        "p99 ms",
        "events/commit",
        "reader saw",
        "cores used",
    ):
        table.add_column(col, justify="left" if col == "scheme" else "right")
    for r in results:
        lat = sorted(r.latencies_ms)
        table.add_row(
            r.scheme,
            f"{r.rate:,.0f}",
            f"{r.rate / base:.2f}",
            f"{benchlib.percentile(lat, 50):.2f}",
            f"{benchlib.percentile(lat, 99):.2f}",
            f"{r.events / max(1, r.commits):.1f}",
            f"{r.read:,}" + (f" ({r.out_of_order} gaps)" if r.out_of_order else ""),
            benchlib.in_process_cell(r.cores, r.peaks),
        )
    console.print(table)
    console.print(
        "reader saw: rows the tailing reader returned during the run; gaps = positions it had to"
        " skip without knowing whether they would still commit (sequence only)."
    )
    return {"seconds": args.seconds, "writers": args.writers,
            "schemes": [{k: v for k, v in asdict(r).items() if k != "latencies_ms"} for r in results]}  # fmt: skip


if __name__ == "__main__":
    main()
