"""Load generator for `bench/append.py`: HTTP writers in a process of their own.

Why a separate process: on a 2-core machine a load generator inside the benchmark's own
process would share the GIL with the orchestration and hide what the server can do. Each
writer appends to its own run over one keep-alive connection (aiohttp: several times less
CPU per request than httpx). Every process measures the same wall-clock window
(`--start-at` .. `+seconds`), so windows of several processes line up; requests before
the window are warm-up. Writes one JSON object to `--result-file`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import aiohttp
import benchlib  # this folder is sys.path[0] when run as a script
import orjson
import uvloop

from oa.runtime.signing import HEADER, sign_caller


def _body(batch: int) -> bytes:
    event = {
        "event_type": "text.delta",
        "payload": {"text": "a typical streamed token or two", "channel": "out"},
    }
    if batch == 0:
        return orjson.dumps(event)
    return orjson.dumps({"events": [event] * batch})


async def _main(args: argparse.Namespace) -> dict[str, object]:
    headers = {
        HEADER: sign_caller(args.secret.encode(), "user:bench", 900),
        "Content-Type": "application/json",
    }
    body = _body(args.batch)
    per_request = max(1, args.batch)
    path = "/events/batch" if args.batch else "/events"
    tag = uuid.uuid4().hex[:6]
    # Map the shared wall-clock window onto this process's monotonic clock.
    start = time.monotonic() + (args.start_at - time.time())
    end = start + args.seconds
    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0}
    first_error: list[str] = []

    async def writer(session: aiohttp.ClientSession, i: int) -> None:
        url = f"{args.url}/internal/v1/runs/bench-{tag}-{os.getpid()}-{i}{path}"
        while True:
            t0 = time.monotonic()
            if t0 >= end:
                return
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                ok = resp.status == 201
                if not ok and not first_error:
                    first_error.append(f"{resp.status} {(await resp.text())[:300]}")
            t1 = time.monotonic()
            if start <= t0 and t1 <= end:
                if ok:
                    counts["requests"] += 1
                    latencies.append((t1 - t0) * 1000.0)
                else:
                    counts["errors"] += 1

    connector = aiohttp.TCPConnector(limit=args.writers, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(writer(session, i) for i in range(args.writers)))
    return {
        "events": counts["requests"] * per_request,
        "requests": counts["requests"],
        "errors": counts["errors"],
        "first_error": first_error[0] if first_error else None,
        "latencies_ms": latencies,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--writers", type=int, required=True)
    p.add_argument("--batch", type=int, default=0, help="events per request; 0 = single-event endpoint")
    p.add_argument("--start-at", type=float, required=True, help="wall-clock start of the window")
    p.add_argument("--seconds", type=float, required=True)
    benchlib.add_result_file_arg(p)
    args = p.parse_args()
    benchlib.write_json_atomic(args.result_file, uvloop.run(_main(args)))


if __name__ == "__main__":
    main()
