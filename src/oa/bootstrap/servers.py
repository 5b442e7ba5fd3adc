"""uvicorn as every entry point runs it: uvloop + httptools, quiet, sharing one loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn

# uvicorn's maintained WebSocket implementation (its default since 0.50; `websockets` is the
# deprecated legacy one). `python bench/ws_impl.py` (200 sockets, busy 2-core machine, three
# runs): server CPU per 1,000 deliveries 19-27 ms against 21-29 for wsproto and 29-35 for the
# legacy one, latency alike (p50 11-14 ms); burst throughput too noisy to rank sansio against
# wsproto. No extra dependency (wsproto would be one).
WS_IMPL = "websockets-sansio"


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to us, so several can share one loop.

    With `reuse_port`, it binds with SO_REUSEPORT so several processes can serve one port
    (the kernel spreads connections): the runtime is stateless over Postgres, and its
    global journal order holds across processes (the head lock), so this is safe.
    """

    reuse_port = False
    sockets: list[socket.socket] | None = None  # bound beforehand (`bind`): served instead

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        sockets = sockets or self.sockets
        if sockets is None and self.reuse_port:
            sockets = [bind(self.config.host, self.config.port, reuse_port=True)]
        await super().serve(sockets=sockets)


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening-ready TCP socket on (host, port); port 0 takes any free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def embedded_server(app: Any, host: str, port: int, **options: Any) -> EmbeddedServer:
    """uvicorn on uvloop + httptools, quiet, sharing the loop with the other servers."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", loop="uvloop", http="httptools", ws=WS_IMPL,
        access_log=False, lifespan="on", timeout_graceful_shutdown=3, **options,
    )  # fmt: skip
    return EmbeddedServer(config)


async def serve_all(
    servers: list[EmbeddedServer],
    on_ready: Callable[[], Any] | None = None,
    companion: Awaitable[None] | None = None,
    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
) -> None:
    """Run servers together until one of `signals`; stop them all if one fails.

    `on_ready` runs once every server listens (a coroutine function is awaited; if it
    raises, everything stops). `companion` runs beside them (the supervisor of Khala's
    processes): if it ends, everything stops. Either way the exit code is then 1."""
    log = logging.getLogger(__name__)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    extra = asyncio.ensure_future(companion) if companion is not None else None
    watched = [*tasks, *([extra] if extra is not None else [])]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    while not all(s.started for s in servers) and not any(t.done() for t in watched) and not stop.is_set():
        await asyncio.sleep(0.05)
    broken = False
    if all(s.started for s in servers) and on_ready is not None and not stop.is_set():
        readying = asyncio.ensure_future(_call(on_ready))
        await asyncio.wait([readying, waiter, *watched], return_when=asyncio.FIRST_COMPLETED)
        if not readying.done():
            readying.cancel()
        elif readying.exception() is not None:
            log.error("could not start: %s", readying.exception())
            broken = True
    if not broken:
        await asyncio.wait([waiter, *watched], return_when=asyncio.FIRST_COMPLETED)
    if extra is not None:  # first: a supervisor must not restart what is being stopped
        if extra.done():
            broken = True
            if not extra.cancelled() and extra.exception() is not None:
                log.error("%s", extra.exception())
        else:
            extra.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await extra
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    waiter.cancel()
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
    if failed or broken or not all(s.started for s in servers):
        log.error("a server failed to start or crashed")
        raise SystemExit(1)


async def _call(fn: Callable[[], Any]) -> None:
    result = fn()
    if asyncio.iscoroutine(result):
        await result
