"""`oa bench replay`: export and verify REPLAY.jsonl for a 100,000-event run.

The run is written through the group appender in batches of 1,000 events (tool calls,
results and text deltas), exported through `ReplayService.export` (the code behind
`GET runs/{id}/replay`) to a file, then verified from the file alone with
`verify_lines` (what `oa replay verify` runs): line chain, payload hashes, event hash
chain, trajectory hash. Target: 100,000 events/s verified.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

from oa.runtime.adapters.listener import JournalListener
from oa.runtime.domain.journal import AppendRequest
from oa.runtime.domain.replay import verify_lines
from oa.runtime.service.appender import GroupAppender
from oa.runtime.service.replay import ReplayService
from oa.runtime.service.runs import RunService
from oa.store import migrate
from oa.store.database import Database

console = Console(width=None if sys.stdout.isatty() else 150)
TARGET_VERIFY = 100_000
OWNER = "user:bench"


def requests(start: int, n: int) -> list[AppendRequest]:
    out = []
    for i in range(start, start + n):
        if i == 0:
            out.append(AppendRequest("run.started", {"model": "bench"}))
        elif i % 3 == 1:
            out.append(
                AppendRequest(
                    "tool.call", {"tool_call_id": f"tc{i}", "tool": "search", "arguments": {"q": f"q{i}"}}
                )
            )
        elif i % 3 == 2:
            out.append(
                AppendRequest("tool.result", {"tool_call_id": f"tc{i - 1}", "ok": True, "output": {"n": i}})
            )
        else:
            out.append(AppendRequest("text.delta", {"text": f"token {i} of the answer"}))
    return out


def counted(f: BinaryIO, bar: Progress, task: TaskID) -> Iterator[bytes]:
    n = 0
    for line in f:
        n += 1
        if n % 10_000 == 0:
            bar.update(task, completed=n)
        yield line
    bar.update(task, completed=n)


async def main(url: str, events: int) -> dict[str, Any]:
    db = await Database.connect(url)
    appender = GroupAppender(db)
    appender.start()
    listener = JournalListener(url)
    runs = RunService(db, appender, listener, 10_000)
    replay = ReplayService(db, runs)
    run_id = "run-bench-replay"
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*cols, console=console) as bar:
            task = bar.add_task("write run", total=events)
            t0 = time.perf_counter()
            for start in range(0, events, 1000):
                await runs.append(OWNER, run_id, requests(start, min(1000, events - start)))
                bar.update(task, completed=min(events, start + 1000))
            write_s = time.perf_counter() - t0

            path = Path(tempfile.mkdtemp(prefix="oa-bench-replay-")) / "REPLAY.jsonl"
            task = bar.add_task("export", total=events)
            t0 = time.perf_counter()
            written = 0
            with path.open("wb") as f:
                async for chunk in await replay.export(OWNER, run_id):
                    f.write(chunk)
                    written += chunk.count(b'"type":"event"')
                    bar.update(task, completed=written)
            export_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            receipt = await replay.receipt(OWNER, run_id)
            receipt_s = time.perf_counter() - t0

            task = bar.add_task("verify", total=events + 3)
            t0 = time.perf_counter()
            with path.open("rb") as f:
                verdict = verify_lines(counted(f, bar, task))
            verify_s = time.perf_counter() - t0
        size = path.stat().st_size
        path.unlink()
    finally:
        await appender.stop()
        await db.close()
    assert verdict.ok, verdict
    assert verdict.trajectory_hash == receipt["trajectory_hash"]
    table = Table(title=f"oa bench replay: one run of {events:,} events ({size / 1e6:.1f} MB REPLAY.jsonl)")
    for col in ("step", "seconds", "events/s", "target", "met"):
        table.add_column(col, justify="left" if col in ("step", "met") else "right")
    rate = events / verify_s
    met = benchlib.met_cell(rate >= TARGET_VERIFY)
    table.add_row(
        "write the run (group appender, 1,000/batch)", f"{write_s:.2f}", f"{events / write_s:,.0f}", "-", ""
    )
    table.add_row(
        "export REPLAY.jsonl (service, from Postgres)",
        f"{export_s:.2f}",
        f"{events / export_s:,.0f}",
        "-",
        "",
    )
    table.add_row(
        "receipt (service, from Postgres)", f"{receipt_s:.2f}", f"{events / receipt_s:,.0f}", "-", ""
    )
    table.add_row(
        "verify (offline, from the file)", f"{verify_s:.2f}", f"{rate:,.0f}", f"{TARGET_VERIFY:,}", met
    )
    console.print(table)
    console.print(
        f"verified: {verdict.events:,} events, trajectory {verdict.trajectory_hash}, matches the receipt"
    )
    return {"events": events, "bytes": size, "write_s": write_s, "export_s": export_s, "receipt_s": receipt_s,
            "verify_s": verify_s, "verify_target": TARGET_VERIFY, "verify_met": rate >= TARGET_VERIFY}  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="2,000 events (smoke run)")
    args = ap.parse_args()
    events = 2_000 if args.quick else args.events

    def run() -> dict[str, Any]:
        with benchlib.postgres() as server, benchlib.database(server.admin_url, "oa_bench_replay") as url:
            migrate(url)
            return asyncio.run(main(url, events))

    benchlib.save_results("replay", run)
