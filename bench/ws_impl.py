"""Which uvicorn WebSocket implementation serves Khala: fan-out throughput and latency.

    python bench/ws_impl.py [--clients 200] [--burst 200] [--size 1000]

uvicorn 0.55 offers `websockets` (the legacy one: deprecated, and where issue 10 found
`keepalive ping failed ... AssertionError` in `drain()`), `websockets-sansio` (its default
since 0.50) and `wsproto`. For each, a server process (uvloop + httptools, no
permessage-deflate, as `oa khala serve`) holds N sockets, each with its own outbound queue
and writer task like a Khala session, and a client process (websockets' asyncio client)
holds the N sockets:

* burst: the server fans K frames of S bytes out to every socket as fast as it can;
  deliveries/s is N*K over the time until the last client has them all, and server CPU
  ms per 1,000 deliveries is what it cost.
* steady: 50 frames/s for 4 s, each stamped with the server's clock; send → receive
  p50 / p99 over every delivery (same machine, same clock).

Prints a table; the choice in `oa khala serve` cites it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import percentile

IMPLS = ("websockets", "websockets-sansio", "wsproto")


# -- the server (a child process) --------------------------------------------------------


def serve(impl: str, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    queues: set[asyncio.Queue[str]] = set()

    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        q: asyncio.Queue[str] = asyncio.Queue()

        async def writer() -> None:
            while True:
                await ws.send_text(await q.get())

        task = asyncio.create_task(writer())
        queues.add(q)
        try:
            while True:
                await ws.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            queues.discard(q)
            task.cancel()

    def frame(i: int, size: int) -> str:
        head = json.dumps({"i": i, "t": time.time()})
        return head[:-1] + ',"pad":"' + "x" * max(0, size - len(head) - 9) + '"}'

    async def burst(request: Request) -> JSONResponse:
        n, size = int(request.query_params["n"]), int(request.query_params["size"])
        for i in range(n):
            data = frame(i, size)
            for q in list(queues):
                q.put_nowait(data)
            await asyncio.sleep(0)
        return JSONResponse({"sockets": len(queues)})

    async def steady(request: Request) -> JSONResponse:
        n, hz, size = int(request.query_params["n"]), float(request.query_params["hz"]), 200
        for i in range(n):
            data = frame(i, size)
            for q in list(queues):
                q.put_nowait(data)
            await asyncio.sleep(1 / hz)
        return JSONResponse({"sockets": len(queues)})

    app = Starlette(
        routes=[Route("/burst", burst), Route("/steady", steady), WebSocketRoute("/ws", ws_endpoint)]
    )
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", ws=impl,
        ws_per_message_deflate=False, log_level="warning", access_log=False,
    )  # fmt: skip


# -- the clients (another child process) ------------------------------------------------


async def clients(port: int, n: int, burst: int, size: int) -> dict[str, Any]:
    import httpx
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/ws"
    socks = [await connect(url, max_size=None, ping_interval=None) for _ in range(n)]
    got = [0] * n
    lat: list[float] = []
    done = asyncio.Event()
    phase = {"burst": True, "expect": n * burst}

    async def reader(i: int) -> None:
        async for raw in socks[i]:
            if phase["burst"]:
                got[i] += 1
                if sum(got) >= phase["expect"]:
                    done.set()
            else:
                lat.append(time.time() - json.loads(raw)["t"])

    tasks = [asyncio.create_task(reader(i)) for i in range(n)]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as h:
        started = time.monotonic()
        await h.get("/burst", params={"n": burst, "size": size})
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.monotonic() - started
        phase["burst"] = False
        await h.get("/steady", params={"n": 200, "hz": 50})
        await asyncio.sleep(1)
    for t in tasks:
        t.cancel()
    for s in socks:
        await s.close()
    lat.sort()
    return {
        "burst_s": elapsed,
        "deliveries_per_s": n * burst / elapsed,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "steady_deliveries": len(lat),
    }


# -- the orchestration --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(impl: str, n: int, burst: int, size: int) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "_serve", impl, str(port)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        proc = psutil.Process(server.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        kids0, wall0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
        out = subprocess.run(
            [sys.executable, __file__, "_clients", str(port), str(n), str(burst), str(size)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        kids, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - wall0
        client_cpu = kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime
        result: dict[str, Any] = json.loads(out.stdout)
        deliveries = n * burst + result["steady_deliveries"]
        result["server_cpu_ms_per_1k"] = cpu * 1000 / deliveries * 1000
        result["cores"] = f"{cpu / wall:.2f} / {client_cpu / wall:.2f}"
        return result
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--burst", type=int, default=200, help="frames per socket in the burst")
    parser.add_argument("--size", type=int, default=1000, help="bytes per burst frame")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per implementation")
    args = parser.parse_args()
    impls = [i for i in IMPLS if i != "wsproto" or importlib.util.find_spec("wsproto") is not None]
    if len(impls) < len(IMPLS):
        print("wsproto is not installed (`pip install wsproto` to compare it); skipping it")
    rows: dict[str, list[dict[str, Any]]] = {i: [] for i in impls}
    for _ in range(args.rounds):
        for impl in impls:
            rows[impl].append(measure(impl, args.clients, args.burst, args.size))
    print(f"\n{args.clients} sockets, burst of {args.burst} x {args.size} B, then 50 frames/s for 4 s")
    print(
        f"{'implementation':<20}{'deliveries/s':>14}{'server CPU ms/1k':>18}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'cores server / clients':>25}"
    )
    for impl, runs in rows.items():
        best = max(runs, key=lambda r: r["deliveries_per_s"])
        cpu = min(r["server_cpu_ms_per_1k"] for r in runs)
        p50 = min(r["p50_ms"] for r in runs)
        p99 = min(r["p99_ms"] for r in runs)
        print(
            f"{impl:<20}{best['deliveries_per_s']:>14,.0f}{cpu:>18.1f}{p50:>9.1f}{p99:>9.1f}{best['cores']:>25}"
        )
    print("(best of the rounds for each column; rounds alternate the implementations)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_clients":
        port, n, burst, size = (int(a) for a in sys.argv[2:6])
        print(json.dumps(asyncio.run(clients(port, n, burst, size))))
    else:
        main()
