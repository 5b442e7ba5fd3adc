"""asyncpg or psycopg 3 (async)? Commits per second on the append transaction's shape.

Run: `.venv/bin/python bench/driver.py [--seconds 5] [--events 10]`.

The shape is what the group appender does per commit: BEGIN; lock a head row
(`SELECT ... FOR UPDATE`); insert the events through `unnest` of parallel arrays; update
the head; COMMIT. Each writer owns its head row, so writers do not wait on each other's
locks and what differs is the driver: its per-statement CPU cost and round trips. Measured
with 1 writer (latency-bound: the appender is one loop) and with `--writers` (CPU-bound).
Both drivers use their defaults as an application would: asyncpg prepares and caches
every statement and speaks binary; psycopg prepares a statement from its 5th execution and
speaks text unless asked otherwise.

Why: the design lets us pick one async driver, by measurement (`oa.store.database`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import uvloop
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

console = Console(width=None if sys.stdout.isatty() else 150)
PAYLOAD = '{"channel":"out","text":"a typical streamed token or two"}'
HASH = "b5d4045c3f466fa91fe2cc6abe79232a1a57cdf104f7a26e716e0a8e2c0b1c7d"

SCHEMA = """
CREATE TABLE heads (id text PRIMARY KEY, last_seq bigint NOT NULL, last_hash text);
CREATE TABLE events (
    stream_id text NOT NULL, seq bigint NOT NULL, event_type text NOT NULL,
    payload text NOT NULL, hash text NOT NULL, PRIMARY KEY (stream_id, seq));
"""
LOCK = "SELECT last_seq FROM heads WHERE id = {p1} FOR UPDATE"
INSERT = (
    "INSERT INTO events (stream_id, seq, event_type, payload, hash)"
    " SELECT * FROM unnest({p1}::text[], {p2}::bigint[], {p3}::text[], {p4}::text[], {p5}::text[])"
)
UPDATE = "UPDATE heads SET last_seq = {p2}, last_hash = {p3} WHERE id = {p1}"


def _sql(template: str, style: str) -> str:
    marks = {f"p{i}": (f"${i}" if style == "dollar" else "%s") for i in range(1, 6)}
    return template.format(**marks)


Tx = Callable[[str, int], Awaitable[int]]


async def _asyncpg_writer(url: str, events: int) -> tuple[Tx, Callable[[], Awaitable[None]]]:
    conn = await asyncpg.connect(url)
    lock, insert, update = (_sql(q, "dollar") for q in (LOCK, INSERT, UPDATE))

    async def tx(stream: str, _i: int) -> int:
        async with conn.transaction():
            last = await conn.fetchval(lock, stream)
            seqs = list(range(last + 1, last + events + 1))
            await conn.execute(
                insert, [stream] * events, seqs, ["text.delta"] * events, [PAYLOAD] * events, [HASH] * events
            )
            await conn.execute(update, stream, seqs[-1], HASH)
        return events

    return tx, conn.close


async def _psycopg_writer(url: str, events: int) -> tuple[Tx, Callable[[], Awaitable[None]]]:
    conn = await psycopg.AsyncConnection.connect(url)
    lock, insert, update = (_sql(q, "pyformat") for q in (LOCK, INSERT, UPDATE))

    async def tx(stream: str, _i: int) -> int:
        async with conn.transaction():
            cur = await conn.execute(lock, (stream,))  # type: ignore[arg-type]
            row = await cur.fetchone()
            assert row is not None
            last = int(row[0])
            seqs = list(range(last + 1, last + events + 1))
            await conn.execute(
                insert,  # type: ignore[arg-type]
                ([stream] * events, seqs, ["text.delta"] * events, [PAYLOAD] * events, [HASH] * events),
            )
            await conn.execute(update, (seqs[-1], HASH, stream))  # type: ignore[arg-type]  # %s: in order
        return events

    return tx, conn.close


async def measure(
    url: str,
    name: str,
    make: Callable[[str, int], Awaitable[tuple[Tx, Callable[[], Awaitable[None]]]]],
    writers: int,
    events: int,
    seconds: float,
    warmup: float,
    progress: Progress,
) -> tuple[float, float]:
    """(commits/s, events/s) over the window."""
    made = [await make(url, events) for _ in range(writers)]
    admin = await asyncpg.connect(url)
    tag = f"{name}-{writers}-{time.monotonic_ns()}"
    await admin.executemany(
        "INSERT INTO heads VALUES ($1, 0, NULL)", [(f"{tag}-{i}",) for i in range(writers)]
    )
    await admin.close()
    t0 = time.monotonic()
    start, end = t0 + warmup, t0 + warmup + seconds
    counts = [0, 0]
    task = progress.add_task(f"{name}, {writers} writer(s)", total=warmup + seconds)

    async def writer(i: int) -> None:
        tx = made[i][0]
        while (a := time.monotonic()) < end:
            n = await tx(f"{tag}-{i}", i)
            if a >= start and time.monotonic() <= end:
                counts[0] += 1
                counts[1] += n
            progress.update(task, completed=min(warmup + seconds, time.monotonic() - t0))

    await asyncio.gather(*(writer(i) for i in range(writers)))
    progress.update(task, completed=warmup + seconds)
    for _, close in made:
        await close()
    return counts[0] / seconds, counts[1] / seconds


async def run_all(
    url: str, pg: benchlib.PgServer, writers: int, events: int, seconds: float, warmup: float
) -> list[list[str]]:
    conn = await asyncpg.connect(url)
    await conn.execute(SCHEMA)
    await conn.close()
    rows: list[list[str]] = []
    with Progress(console=console) as progress:
        for n in (1, writers):
            meter = benchlib.meter_in_process(pg)  # over warm-up and window
            a = await measure(url, "asyncpg", _asyncpg_writer, n, events, seconds, warmup, progress)
            meter.stop()
            cores_a = benchlib.in_process_cell(meter.shares(), meter.peaks())
            meter = benchlib.meter_in_process(pg)
            p = await measure(url, "psycopg", _psycopg_writer, n, events, seconds, warmup, progress)
            meter.stop()
            cores_p = benchlib.in_process_cell(meter.shares(), meter.peaks())
            rows.append(
                [
                    str(n),
                    f"{a[0]:,.0f}",
                    f"{p[0]:,.0f}",
                    f"{a[0] / p[0]:.2f}" if p[0] else "-",
                    f"{a[1]:,.0f}",
                    f"{p[1]:,.0f}",
                    cores_a,
                    cores_p,
                ]
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--writers", type=int, default=32)
    p.add_argument("--events", type=int, default=10, help="events per transaction")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="1-second windows (smoke run)")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.warmup = 1.0, 0.2
    benchlib.save_results("driver", lambda: run(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    with benchlib.postgres() as pg, benchlib.database(pg.admin_url, "oa_bench_driver") as url:
        rows = uvloop.run(run_all(url, pg, args.writers, args.events, args.seconds, args.warmup))
    table = Table(title=f"driver: lock head, insert {args.events} events via unnest, update head, commit")
    for col in (
        "writers",
        "asyncpg tx/s",
        "psycopg tx/s",
        "asyncpg / psycopg",
        "asyncpg ev/s",
        "psycopg ev/s",
        "cores asyncpg",
        "cores psycopg",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    return {"seconds": args.seconds, "writers": args.writers, "events_per_tx": args.events,
            "columns": [c.header for c in table.columns], "rows": [list(r) for r in rows]}  # fmt: skip


if __name__ == "__main__":
    main()
