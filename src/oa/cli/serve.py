"""Starting servers: the composition root that `oa run` and `oa serve` share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from oa.control.service.container import build_control_app
from oa.control.settings import ControlSettings
from oa.deployment import LocalDeployment
from oa.runtime.service.container import build_runtime_app
from oa.runtime.settings import RuntimeSettings
from oa.runtime.signing import load_or_create_secret
from oa.store import migrate, resolve_database_url


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to us, so several can share one loop.

    With `reuse_port`, it binds with SO_REUSEPORT so several processes can serve one port
    (the kernel spreads connections): the runtime is stateless over Postgres, and its
    global journal order holds across processes (the head lock), so this is safe.
    """

    reuse_port = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None and self.reuse_port:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.config.host, self.config.port))
            sock.set_inheritable(True)
            sockets = [sock]
        await super().serve(sockets=sockets)


@dataclass
class Listening:
    name: str
    url: str


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(host: str, wanted: int) -> int:
    if wanted and port_free(host, wanted):
        return wanted
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def database_url(dep: LocalDeployment) -> str:
    """OA_DATABASE_URL, else the running deployment's database (its deployment.env), else the
    embedded one in this home: a CLI command must reach the database `oa run` serves from."""
    running = dep.read_env().get("OA_DATABASE_URL") if dep.stale_reason() is None else None
    return os.environ.get("OA_DATABASE_URL") or running or resolve_database_url(dep.home)


def prepare_database(dep: LocalDeployment) -> str:
    url = database_url(dep)
    migrate(url)
    return url


# uvicorn's maintained WebSocket implementation (its default since 0.50; `websockets` is the
# deprecated legacy one). `python bench/ws_impl.py` (200 sockets, busy 2-core machine, three
# runs): server CPU per 1,000 deliveries 19-27 ms against 21-29 for wsproto and 29-35 for the
# legacy one, latency alike (p50 11-14 ms); burst throughput too noisy to rank sansio against
# wsproto. No extra dependency (wsproto would be one).
WS_IMPL = "websockets-sansio"


def embedded_server(app: Any, host: str, port: int, **options: Any) -> uvicorn.Server:
    """uvicorn on uvloop + httptools, quiet, sharing the loop with the other servers."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", loop="uvloop", http="httptools", ws=WS_IMPL,
        access_log=False, lifespan="on", timeout_graceful_shutdown=3, **options,
    )  # fmt: skip
    return EmbeddedServer(config)


def runtime_server(
    url: str, dep: LocalDeployment, host: str, port: int, pool_size: int = 10
) -> uvicorn.Server:
    secret_env = os.environ.get("OA_RUNTIME_CALLER_SECRET")
    secret = secret_env.encode() if secret_env else load_or_create_secret(dep.caller_secret_file)
    app = build_runtime_app(url, RuntimeSettings.from_env(secret), pool_size=pool_size)
    return embedded_server(app, host, port)


def control_server(
    url: str, dep: LocalDeployment, host: str, port: int, pool_size: int = 10
) -> uvicorn.Server:
    """Control (auth authority) on its own port; its issuer is its own URL unless
    OA_CONTROL_ISSUER says otherwise."""
    settings = ControlSettings.from_env(dep.home, issuer=f"http://{host}:{port}")
    app = build_control_app(url, settings, pool_size=pool_size)
    return embedded_server(app, host, port)


async def serve_all(servers: list[uvicorn.Server], on_ready: Callable[[], Any] | None = None) -> None:
    """Run servers together until SIGINT/SIGTERM; stop them all if one fails."""
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    if all(s.started for s in servers) and on_ready is not None:
        on_ready()
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    waiter.cancel()
    failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
    if failed or not all(s.started for s in servers):
        logging.getLogger(__name__).error("a server failed to start or crashed")
        raise SystemExit(1)
