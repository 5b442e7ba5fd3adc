"""`oa bench spend`: reservations per second, one hot authorization vs 100 of them.

In-process against the service layer (`SpendService.decide`, the code the HTTP route
calls) on a real Postgres (embedded in a temp folder, or `OA_BENCH_DATABASE_URL`), so the
figure is the spend path itself, not the HTTP stack's cost per request on 2 cores. Every
reservation also writes its `policy.decision` run event through the group appender.

Phases: 32 reservers on ONE authorization (the worst case: every reserve locks the same
row), the same on 100 authorizations, and a baseline with no batching (one transaction
per reserve under the row lock), which shows why the batcher exists. Each phase ends by
checking the books: spent + reserved within the limit, reserved == sum of reservations.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

from oa.runtime.domain.policy import DecisionInputs
from oa.runtime.service.appender import GroupAppender
from oa.runtime.service.runs import RunService
from oa.runtime.service.spend import SpendService
from oa.store import migrate
from oa.store.database import Database

console = Console(width=None if sys.stdout.isatty() else 150)
TARGET_HOT = 2_000
OWNER = "user:bench"


async def setup(db: Database, runs: int, auths: int) -> tuple[list[str], list[str]]:
    run_ids = [f"run-{uuid.uuid4().hex[:10]}" for _ in range(runs)]
    auth_ids = [f"auth-{uuid.uuid4().hex[:10]}" for _ in range(auths)]
    await db.pool.executemany(
        "INSERT INTO runtime.runs (run_id, owner, status) VALUES ($1, $2, 'running')",
        [(r, OWNER) for r in run_ids],
    )
    await db.pool.executemany(
        "INSERT INTO runtime.spend_authorizations (authorization_id, owner, mode, max_total_sats, params_hash)"
        " VALUES ($1, $2, 'delegated_budget', 1000000000, 'bench')",
        [(a, OWNER) for a in auth_ids],
    )
    return run_ids, auth_ids


async def books(db: Database, auth_ids: list[str]) -> tuple[int, bool]:
    rows = await db.fetch(
        "SELECT a.authorization_id, a.spent_sats + a.reserved_sats <= a.max_total_sats AS within,"
        " a.reserved_sats = coalesce((SELECT sum(amount_sats) FROM runtime.spend_reservations r"
        "   WHERE r.authorization_id = a.authorization_id AND r.state = 'reserved'), 0) AS balanced"
        " FROM runtime.spend_authorizations a WHERE a.authorization_id = ANY($1::text[])",
        auth_ids,
    )
    count = await db.fetchval(
        "SELECT count(*) FROM runtime.spend_reservations WHERE authorization_id = ANY($1::text[])", auth_ids
    )
    return int(count), all(r["within"] and r["balanced"] for r in rows)


async def batched(db: Database, spend: SpendService, n_auths: int, reservers: int, seconds: float,
                  bar: Progress) -> dict[str, Any]:  # fmt: skip
    run_ids, auth_ids = await setup(db, reservers, n_auths)
    latencies: list[float] = []
    errors = 0
    batches0 = spend.batches
    stop_at = time.monotonic() + seconds
    task = bar.add_task(f"batched, {n_auths} authorization(s)", total=seconds)

    async def reserver(i: int) -> None:
        nonlocal errors
        k = 0
        while time.monotonic() < stop_at:
            k += 1
            inp = DecisionInputs(run_ids[i], f"tc{k}", "spend", 1, auth_ids[(i + k) % n_auths])
            t = time.perf_counter()
            d = await spend.decide(OWNER, inp)
            latencies.append((time.perf_counter() - t) * 1000)
            if d["decision"] != "allow":
                errors += 1

    async def tick() -> None:
        while time.monotonic() < stop_at:
            await asyncio.sleep(0.2)
            bar.update(task, completed=seconds - max(0.0, stop_at - time.monotonic()))

    t0 = time.monotonic()
    await asyncio.gather(tick(), *(reserver(i) for i in range(reservers)))
    wall = time.monotonic() - t0
    count, ok = await books(db, auth_ids)
    lat = sorted(latencies)
    return {"rate": count / wall, "count": count, "p50": benchlib.percentile(lat, 50),
            "p99": benchlib.percentile(lat, 99), "errors": errors, "ok": ok,
            "batch": count / max(1, spend.batches - batches0)}  # fmt: skip


async def naive(db: Database, reservers: int, seconds: float, bar: Progress) -> dict[str, Any]:
    """One transaction per reserve: lock the row, insert, update, commit."""
    run_ids, auth_ids = await setup(db, reservers, 1)
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    task = bar.add_task("unbatched baseline, 1 authorization", total=seconds)

    async def reserver(i: int) -> None:
        k = 0
        async with db.pool.acquire() as conn:
            while time.monotonic() < stop_at:
                k += 1
                t = time.perf_counter()
                async with conn.transaction():
                    await conn.execute(
                        "SELECT 1 FROM runtime.spend_authorizations WHERE authorization_id = $1 FOR UPDATE",
                        auth_ids[0],
                    )
                    await conn.execute(
                        "INSERT INTO runtime.spend_reservations (reservation_id, authorization_id, run_id,"
                        " tool_call_id, tool, owner, amount_sats, decision_id, day, deadline_at)"
                        " VALUES ($1, $2, $3, $4, 'spend', $5, 1, 'd', current_date, now() + interval '1 hour')",
                        uuid.uuid4().hex, auth_ids[0], run_ids[i], f"tc{k}", OWNER,
                    )  # fmt: skip
                    await conn.execute(
                        "UPDATE runtime.spend_authorizations SET reserved_sats = reserved_sats + 1"
                        " WHERE authorization_id = $1",
                        auth_ids[0],
                    )
                latencies.append((time.perf_counter() - t) * 1000)
                bar.update(task, completed=seconds - max(0.0, stop_at - time.monotonic()))

    t0 = time.monotonic()
    await asyncio.gather(*(reserver(i) for i in range(reservers)))
    wall = time.monotonic() - t0
    count, ok = await books(db, auth_ids)
    lat = sorted(latencies)
    return {"rate": count / wall, "count": count, "p50": benchlib.percentile(lat, 50),
            "p99": benchlib.percentile(lat, 99), "errors": 0, "ok": ok, "batch": 1}  # fmt: skip


async def main(url: str, pg: benchlib.PgServer, seconds: float, reservers: int) -> dict[str, Any]:
    db = await Database.connect(url, max_size=reservers + 4)
    appender = GroupAppender(db)
    appender.start()
    spend = SpendService(db, appender, reservation_deadline_s=3600)
    await spend.start()
    _ = RunService  # the runs the decisions land on are made directly in SQL above
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            # "bench" is this process: the reservers and the spend service both run here.
            meter = benchlib.meter_in_process(pg)
            hot = await batched(db, spend, 1, reservers, seconds, bar)
            meter.stop()
            hot["cores"], hot["peaks"] = meter.shares(), meter.peaks()
            meter = benchlib.meter_in_process(pg)
            spread = await batched(db, spend, 100, reservers, seconds, bar)
            meter.stop()
            spread["cores"], spread["peaks"] = meter.shares(), meter.peaks()
            meter = benchlib.meter_in_process(pg)
            base = await naive(db, reservers, seconds, bar)
            meter.stop()
            base["cores"], base["peaks"] = meter.shares(), meter.peaks()
    finally:
        await spend.stop()
        await appender.stop()
        await db.close()
    table = Table(title=f"oa bench spend: {reservers} concurrent reservers, {seconds:g} s per phase")
    for col in (
        "scenario",
        "reservations/s",
        "target",
        "met",
        "p50 ms",
        "p99 ms",
        "avg batch",
        "books",
        "cores used",
    ):
        table.add_column(col, justify="right" if col not in ("scenario", "met") else "left")
    rows = [("1 authorization (hot row), batched", hot, TARGET_HOT), ("100 authorizations, batched", spread, None),
            ("1 authorization, one tx per reserve", base, None)]  # fmt: skip
    for name, r, target in rows:
        met = benchlib.met_cell(None if target is None else r["rate"] >= target)
        table.add_row(
            name, f"{r['rate']:,.0f}", f"{target:,}" if target else "-", met, f"{r['p50']:.1f}",
            f"{r['p99']:.1f}", f"{r['batch']:.1f}", "[green]balanced[/]" if r["ok"] else "[red]WRONG[/]",
            benchlib.in_process_cell(r["cores"], r["peaks"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        "books: spent + reserved <= max_total and reserved == sum of open reservations, per authorization. "
        "Every batched reservation also appended its policy.decision run event."
    )
    return {"seconds": seconds, "reservers": reservers, "target_hot": TARGET_HOT,
            "phases": {"hot": hot, "spread": spread, "one_tx_per_reserve": base}}  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--reservers", type=int, default=32)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds = 1.0 if args.quick else args.seconds

    def run() -> dict[str, Any]:
        with benchlib.postgres() as server, benchlib.database(server.admin_url, "oa_bench_spend") as url:
            migrate(url)
            return asyncio.run(main(url, server, seconds, args.reservers))

    benchlib.save_results("spend", run)
