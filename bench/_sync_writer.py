"""The runtime-side load for `bench/sync.py`: appends over HTTP in a process of their own.

Two modes:

* paced (default): single `text.delta` events at a fixed rate, open loop (event i is due
  at start + i/rate whatever happened to the earlier ones, so a slow server shows up as
  latency, not as a politely lower rate), round-robin over `--runs` runs so no run's lock
  serializes the load. Every run is created first with `run.started` carrying the org,
  which is what makes its summary visible to the org's viewers. Prints each event's
  `(run, seq, sent_at)` so the orchestrator can join it with what the probes received.
* `--create-only`: start `--runs` runs and exit (the scoped phase starts 1,000 runs before
  its watchers subscribe, then streams into the first 100 of them with `--no-create`).
* `--bulk N`: N events through the batch API (1,000 per request, a few in flight), for
  the rebuild and audit phases.

Output: one JSON object in the file `--result-file` names (written atomically).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp
import benchlib  # this folder is sys.path[0] when run as a script
import orjson
import uvloop

from oa.runtime.signing import HEADER, sign_caller

DELTA = {"event_type": "text.delta", "payload": {"text": "a typical streamed token or two", "channel": "out"}}


async def _start_runs(session: aiohttp.ClientSession, base: str, runs: list[str], org: str) -> None:
    """`run.started` for each run, 16 at a time (1,000 one by one took seconds)."""
    body = orjson.dumps({"event_type": "run.started", "payload": {"model": "bench", "org_id": org}})
    gate = asyncio.Semaphore(16)

    async def one(run: str) -> None:
        async with gate, session.post(f"{base}/internal/v1/runs/{run}/events", data=body) as resp:
            if resp.status not in (200, 201):
                raise RuntimeError(f"run.started: {resp.status} {(await resp.text())[:300]}")

    await asyncio.gather(*(one(run) for run in runs))


async def paced(args: argparse.Namespace, session: aiohttp.ClientSession) -> dict[str, Any]:
    runs = [f"{args.tag}-{i}" for i in range(args.runs)]
    if not args.no_create:
        await _start_runs(session, args.url, runs, args.org)
    body = orjson.dumps(DELTA)
    total = int(args.rate * args.seconds)
    start = time.monotonic() + (args.start_at - time.time())
    sent: list[tuple[int, int, float]] = []
    latencies: list[float] = []
    errors: list[str] = []
    late = [0]
    gate = asyncio.Semaphore(args.in_flight)

    async def one(i: int) -> None:
        async with gate:
            t_sent = time.time()
            t0 = time.monotonic()
            try:
                async with session.post(
                    f"{args.url}/internal/v1/runs/{runs[i % len(runs)]}/events", data=body
                ) as r:
                    data = await r.read()
                    if r.status != 201:
                        errors.append(f"{r.status} {data[:200]!r}")
                        return
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                return
            latencies.append((time.monotonic() - t0) * 1000.0)
            sent.append((i % len(runs), int(orjson.loads(data)["last_seq"]), t_sent))

    tasks = []
    for i in range(total):
        due = start + i / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late[0] += 1
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    return {
        "runs": runs,
        "sent": sent,
        "events": len(sent),
        "elapsed_s": elapsed,
        "late_starts": late[0],
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "http_ms": latencies,
    }


async def bulk(args: argparse.Namespace, session: aiohttp.ClientSession) -> dict[str, Any]:
    per_run = 1000
    n_runs = max(1, args.bulk // per_run)
    runs = [f"{args.tag}-{i}" for i in range(n_runs)]
    await _start_runs(session, args.url, runs, args.org)
    body = orjson.dumps({"events": [DELTA] * (per_run - 1)})
    queue = list(runs)
    t0 = time.monotonic()
    errors: list[str] = []

    async def worker() -> None:
        while queue:
            run = queue.pop()
            async with session.post(f"{args.url}/internal/v1/runs/{run}/events/batch", data=body) as r:
                if r.status != 201:
                    errors.append(f"{r.status} {(await r.text())[:200]}")

    await asyncio.gather(*(worker() for _ in range(args.in_flight)))
    return {"events": n_runs * per_run, "seconds": time.monotonic() - t0, "errors": len(errors),
            "first_error": errors[0] if errors else None}  # fmt: skip


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    headers = {
        HEADER: sign_caller(args.secret.encode(), f"user:{args.owner}", 900, org=args.org or None),
        "Content-Type": "application/json",
    }
    connector = aiohttp.TCPConnector(limit=args.in_flight)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        if args.create_only:
            runs = [f"{args.tag}-{i}" for i in range(args.runs)]
            t0 = time.monotonic()
            await _start_runs(session, args.url, runs, args.org)
            return {"runs": runs, "seconds": time.monotonic() - t0}
        return await (bulk(args, session) if args.bulk else paced(args, session))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--owner", required=True, help="user id the runs belong to")
    p.add_argument("--org", required=True)
    p.add_argument("--tag", required=True, help="run id prefix")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rate", type=float, default=100.0, help="events per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--start-at", type=float, default=0.0, help="wall-clock start of the window")
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--bulk", type=int, default=0, help="append this many events in batches instead")
    p.add_argument("--create-only", action="store_true", help="only start the runs (run.started each)")
    p.add_argument("--no-create", action="store_true", help="the runs exist: stream into them only")
    benchlib.add_result_file_arg(p)
    args = p.parse_args()
    benchlib.write_json_atomic(args.result_file, uvloop.run(_main(args)))


if __name__ == "__main__":
    main()
