"""Sync clients for `bench/sync.py`: many raw WebSocket subscribers in a process of their own.

Why a separate process (several, for big counts): on 2 cores a receiver sharing the
benchmark's interpreter would be the bottleneck, not the server, and probes that share a
loop with 250 busy sockets would measure their own queueing. So the orchestrator starts
one process of *probes* (a few sockets that parse every frame and stamp its receive time)
and N/250 processes of *counters* (sockets that count frames and update rows with a C-speed
byte search, never parsing JSON), so the server really fans out to every subscriber.

Each socket does what a browser would: connect (permessage-deflate offered, as browsers
do, unless `--no-deflate`), `auth` with its own ES256 sync token (minted here from the
bench's key, claims as control mints them), `subscribe` to `runtime.run_summaries` live
from the head, wait for the `replay_complete` batch, then heartbeat every 20 s.
Protocol on stdio: prints `READY <n>` once every socket is live; each `mark` line on stdin
is answered with `MARK {rows, errors}` (totals so far); any other line (or EOF, or
`--max-seconds`) closes the sockets and writes one JSON object to `--result-file`.

With `--stream-prefix TAG`, each socket opens one live query instead (scope
`{stream: TAG-<n>}` on `runtime.run_summaries`; socket i watches run n = `--stream-first`
+ i: one run page each) and records, for its run's summary, every `doc_version` it
receives with its receive time. It finds doc keys and versions with two byte regexes and
never parses JSON: a watcher must cost far less CPU than the server spends on it (the
scoped table prints both, per delivered update).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import benchlib  # this folder is sys.path[0] when run as a script
import jwt
import orjson
import uvloop
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

RUNS = "runtime.run_summaries"
AUDIENCE = "oa-khala-sync"
SUMMARY_PREFIX = "runtime/run_summary:"
# One match per update, in order (every update, upsert, patch or remove, carries both).
DOC_KEY = re.compile(rb'"doc_key":"([^"]*)"')
DOC_VERSION = re.compile(rb'"doc_version":(\d+)')
SUMMARY = SUMMARY_PREFIX.encode()


def raise_nofile() -> None:
    """Raise the soft open-files limit to the hard one (10,000 sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Minter:
    """Sync tokens as control mints them (see tests/khala/sync_fixtures.py `mint`)."""

    def __init__(self, key_pem: bytes, kid: str, issuer: str) -> None:
        self._key = load_pem_private_key(key_pem, password=None)
        self._kid = kid
        self._issuer = issuer

    def mint(self, user: str, org: str, ttl: int = 900) -> str:
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "aud": AUDIENCE,
            "sub": f"user:{user}",
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "sid": f"sess-{user}",
            "oa_user_id": user,
            "oa_org_id": org,
            "oa_sync_scopes": [RUNS],
            "oa_claims_version": 1,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._kid})  # type: ignore[arg-type]


class Sub:
    """One subscriber socket and what it saw."""

    def __init__(self, probe: bool, stream: str = "") -> None:
        self.probe = probe
        self.stream = stream  # the run this socket's live query watches ("" = whole topic)
        self.frames = 0
        self.rows = 0
        self.errors: list[str] = []
        self.closed = False
        self.seen: list[tuple[str, int, float]] = []  # probes: (run id, doc_version, received at)

    async def open(self, url: str, token: str, deflate: bool) -> ClientConnection:
        ws = await connect(
            url,
            compression="deflate" if deflate else None,
            max_size=1 << 26,  # whatever the server sends (a 6 MB merged frame was seen under load)
            ping_interval=None,
            open_timeout=60,
            close_timeout=2,
        )
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        await self._expect(ws, "ready")
        if self.stream:
            sub = {"type": "subscribe", "sub": "r", "topic": RUNS, "scope": {"stream": self.stream}}
        else:
            sub = {"type": "subscribe", "topics": [RUNS]}
        await ws.send(orjson.dumps({**sub, "request_id": "b"}).decode())
        await self._expect(ws, "subscribed")
        while True:  # the batch that ends the (empty) replay
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            if msg.get("type") == "update_batch" and msg.get("replay_complete"):
                break
            if msg.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {msg}")
        return ws

    @staticmethod
    async def _expect(ws: ClientConnection, kind: str) -> None:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
        if msg.get("type") != kind:
            raise RuntimeError(f"expected {kind}, got {msg}")

    async def listen(self, ws: ClientConnection) -> None:
        try:
            while True:
                data = await ws.recv(decode=False)  # bytes: no UTF-8 decode per frame
                now = time.time()
                self.frames += 1
                if data.startswith(b'{"type":"error"'):
                    self.errors.append(data[:200].decode(errors="replace"))
                    continue
                if self.stream:
                    if not data.startswith(b'{"type":"update_batch"'):
                        continue
                    versions = DOC_VERSION.findall(data)
                    self.rows += len(versions)
                    for key, version in zip(DOC_KEY.findall(data), versions, strict=False):
                        if key.startswith(SUMMARY):
                            self.seen.append((self.stream, int(version), now))
                elif self.probe:
                    if not data.startswith(b'{"type":"update_batch"'):
                        continue
                    for u in orjson.loads(data)["updates"]:
                        self.rows += 1
                        key = u["doc_key"]
                        if key.startswith(SUMMARY_PREFIX):
                            self.seen.append((key[len(SUMMARY_PREFIX) :], int(u["doc_version"]), now))
                else:
                    self.rows += data.count(b'"doc_key":')
        except ConnectionClosedOK:
            pass
        except Exception as exc:  # a closed socket ends the listener; the count says so
            self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
        self.closed = True


async def _heartbeats(sockets: list[ClientConnection | None], stop: asyncio.Event) -> None:
    """From the first connect on: the server closes a socket silent for 60 s, and opening
    10,000 can take longer than that."""
    beat = orjson.dumps({"type": "heartbeat"}).decode()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 20.0)
        if stop.is_set():
            return
        for ws in list(sockets):
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.send(beat)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    minter = Minter(args.key_pem, args.kid, args.issuer)
    prefix, first = args.stream_prefix, args.stream_first
    streams = [f"{prefix}-{first + i}" if prefix else "" for i in range(args.count)]
    subs = [Sub(args.probe, streams[i]) for i in range(args.count)]
    users = [args.user or f"{args.user_prefix}{args.first + i}" for i in range(args.count)]
    tokens = [minter.mint(u, args.org) for u in users]
    gate = asyncio.Semaphore(args.connect_concurrency)
    sockets: list[ClientConnection | None] = [None] * args.count
    failures: list[str] = []
    urls = args.url.split(",")

    async def open_one(i: int) -> None:
        async with gate:
            for attempt in range(3):
                try:
                    url = urls[i % len(urls)]  # several nodes: sockets spread over them
                    sockets[i] = await subs[i].open(url, tokens[i], not args.no_deflate)
                    return
                except Exception as exc:
                    if attempt == 2:
                        failures.append(f"{type(exc).__name__}: {exc}"[:200])
                    await asyncio.sleep(0.2 * (attempt + 1))

    stop = asyncio.Event()
    tasks = [asyncio.create_task(_heartbeats(sockets, stop))]
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(args.count)))
    connect_s = time.monotonic() - t0
    live = [(s, ws) for s, ws in zip(subs, sockets, strict=True) if ws is not None]
    listeners = [asyncio.create_task(s.listen(ws)) for s, ws in live]
    print(f"READY {len(live)}", flush=True)
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(
                loop.run_in_executor(None, sys.stdin.readline), deadline - time.monotonic()
            )
        except TimeoutError:
            break
        if line.strip() != "mark":
            break
        # A mark between phases: totals so far, so one set of sockets serves several phases.
        mark = {"rows": sum(s.rows for s in subs), "errors": sum(len(s.errors) for s in subs)}
        print("MARK " + json.dumps(mark), flush=True)
    stop.set()
    await asyncio.gather(*tasks)
    still_open = sum(1 for s, _ in live if not s.closed)

    # All at once and bounded as a whole: one by one, with 2 s each, 250 sockets of a busy
    # server took longer than the orchestrator waits (it killed the helper, -9).
    async def close(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            await ws.close()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(close(ws) for _, ws in live)), 10)
    for t in listeners:
        t.cancel()
    errors = [e for s in subs for e in s.errors]
    return {
        "sockets": len(live),
        "connect_failures": len(failures),
        "first_connect_failure": failures[0] if failures else None,
        "connect_s": round(connect_s, 3),
        "still_open": still_open,
        "frames": sum(s.frames for s in subs),
        "rows": [s.rows for s, _ in live],
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seen": [s.seen for s, _ in live if s.seen] if args.probe or args.stream_prefix else [],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--url", required=True, help="ws://127.0.0.1:PORT/sync/v1/ws (comma-separated: spread over them)"
    )
    p.add_argument("--key", required=True, help="PEM file of the bench's ES256 signing key")
    p.add_argument("--kid", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--org", required=True)
    p.add_argument("--user", default="", help="one user for every socket (probes: the runs' owner)")
    p.add_argument("--user-prefix", default="bench-viewer-")
    p.add_argument("--first", type=int, default=0, help="number of the first user of this process")
    p.add_argument("--probe", action="store_true", help="parse frames and stamp receive times")
    p.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    p.add_argument("--stream-prefix", default="", help="one live query per socket: run TAG-<n>")
    p.add_argument("--stream-first", type=int, default=0, help="the run number of the first socket")
    p.add_argument("--connect-concurrency", type=int, default=64)
    p.add_argument("--max-seconds", type=float, default=600.0)
    benchlib.add_result_file_arg(p)
    args = p.parse_args()
    args.key_pem = Path(args.key).read_bytes()
    benchlib.write_json_atomic(args.result_file, uvloop.run(_main(args)))


if __name__ == "__main__":
    main()
