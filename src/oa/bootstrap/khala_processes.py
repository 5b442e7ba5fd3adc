"""Khala in processes of its own: N processes on one port, supervised.

Each process binds the shared port with SO_REUSEPORT (the kernel spreads connections over
them), has its own hub (it reads each committed batch once, for its own sockets), and, when
there are several, also listens on a port of its own: its node URL, where its `/metrics` and
`/sync/v1/status` can be reached one process at a time (`oa khala status` lists them).

A child gets its `KhalaSettings` as data on its stdin (pickled: settings travel as
arguments, never through the environment) and says it is ready on a pipe of its own. It
asks the kernel to end it when its parent dies (PR_SET_PDEATHSIG), so a kill -9 of `oa run`
or `oa khala serve` leaves no orphan serving the port.

A child that dies is reported and restarted: Khala nodes are stateless (Postgres holds
everything) and clients reconnect and resume from their watermarks, while the runtime and
the projector beside it keep serving agents. A child that keeps dying (`max_restarts` in
`window_s`: a bad configuration, a port taken) stops the whole run instead of spinning.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from oa.khala.settings import KhalaSettings, default_node_id
from oa.khala.sync.node import Node

log = logging.getLogger(__name__)


class KhalaFailed(RuntimeError):
    """Khala's processes could not start, or one keeps dying."""


@dataclass
class Spawned:
    """A Khala process started ahead of its settings: it imports while its parent gets the
    database ready, then waits on its stdin (see `prespawn`)."""

    proc: subprocess.Popen[bytes]
    ready_fd: int  # ours, to read its "listening" line
    child_fd: int  # the same pipe's write end, by its number in the child


def prespawn(count: int) -> list[Spawned]:
    """Start `count` Khala processes now, to be given their settings by `KhalaProcesses.start`.

    Python and the sync server's imports take seconds of CPU on a busy 2-core machine
    (`oa run` from 5-9 s to 11-14 s with one Khala process started only once Postgres was
    ready); started first, they overlap Postgres' start and the migrations."""
    return [_popen() for _ in range(count)]


def _popen() -> Spawned:
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oa.bootstrap.khala_processes"], stdin=subprocess.PIPE, pass_fds=(write,)
    )
    os.close(write)
    os.set_blocking(read, False)
    return Spawned(proc, read, write)


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes]
    ready_fd: int
    node: dict[str, Any] | None = None
    buffer: bytes = b""


@dataclass
class KhalaProcesses:
    settings: KhalaSettings
    report: Callable[[str], None] = log.warning
    max_restarts: int = 5
    window_s: float = 60.0
    prespawned: list[Spawned] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    _deaths: list[float] = field(default_factory=list)
    _stopping: bool = False

    def start(self) -> None:
        """Start every process (the prespawned ones first) and give each its settings."""
        self.children = [self._spawn(i) for i in range(1, self.settings.workers + 1)]

    @property
    def nodes(self) -> list[dict[str, Any]]:
        return [c.node for c in self.children if c.node is not None]

    def _spawn(self, index: int) -> Child:
        spawned = self.prespawned.pop() if self.prespawned else _popen()
        proc = spawned.proc
        assert proc.stdin is not None
        # A child that died while importing is reported by wait_ready/watch, with its code.
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(pickle.dumps((self.settings, index, spawned.child_fd, os.getpid())))
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        return Child(index, proc, spawned.ready_fd)

    def _poll_ready(self, child: Child) -> None:
        if child.node is not None:
            return
        with contextlib.suppress(BlockingIOError):
            child.buffer += os.read(child.ready_fd, 4096)
        if b"\n" in child.buffer:
            child.node = orjson.loads(child.buffer.split(b"\n", 1)[0])

    async def wait_ready(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until every process listens; KhalaFailed if one exits first or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            for c in self.children:
                self._poll_ready(c)
                if c.node is None and c.proc.poll() is not None:
                    raise KhalaFailed(
                        f"Khala process {c.index} exited with code {c.proc.returncode} while starting "
                        "(its error is above)"
                    )
            if all(c.node is not None for c in self.children):
                return self.nodes
            if time.monotonic() > deadline:
                raise KhalaFailed(f"Khala's processes did not listen within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def watch(self) -> None:
        """Restart children that die; raise KhalaFailed when one keeps dying."""
        while True:
            await asyncio.sleep(0.2)
            for i, c in enumerate(self.children):
                self._poll_ready(c)
                code = c.proc.poll()
                if code is None or self._stopping:
                    continue
                now = time.monotonic()
                self._deaths = [t for t in self._deaths if now - t < self.window_s] + [now]
                name = (c.node or {}).get("id", f"process {c.index}")
                if len(self._deaths) > self.max_restarts:
                    raise KhalaFailed(
                        f"Khala node {name} (pid {c.proc.pid}) exited with code {code}; Khala's "
                        f"processes died {len(self._deaths)} times in {self.window_s:.0f} s: stopping"
                    )
                self.report(
                    f"Khala node {name} (pid {c.proc.pid}) exited with code {code}; restarting it "
                    "(its clients reconnect to the port and resume from their watermarks)"
                )
                os.close(c.ready_fd)
                self.children[i] = self._spawn(c.index)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every child, wait for them, kill -9 the ones still there after `timeout`."""
        self._stopping = True
        for extra in self.prespawned:  # never given settings: closing stdin ends them
            self.children.append(Child(0, extra.proc, extra.ready_fd))
            if extra.proc.stdin is not None:
                extra.proc.stdin.close()
        self.prespawned = []
        for c in self.children:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(c.proc.poll() is None for c in self.children) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for c in self.children:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
            with contextlib.suppress(OSError):
                os.close(c.ready_fd)


def node_for(settings: KhalaSettings, index: int, url: str) -> Node:
    """`<node id>.<n>` when several processes share the port, else `<node id>`; without a
    configured node id, `<host>-<pid>` (unique anyway)."""
    if settings.node_id is None:
        return Node(default_node_id(), url)
    return Node(settings.node_id if settings.workers == 1 else f"{settings.node_id}.{index}", url)


async def serve_node(
    settings: KhalaSettings,
    index: int,
    on_ready: Callable[[Node], None],
    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
) -> None:
    """Serve one Khala process until one of `signals` (`index` from 1 when one of several)."""
    from oa.bootstrap.khala import khala_server
    from oa.bootstrap.servers import bind, serve_all

    several = settings.workers > 1
    shared = bind(settings.host, settings.port, reuse_port=several)
    sockets = [shared]
    port = shared.getsockname()[1]
    if several:
        own = bind(settings.host, settings.node_port + index if settings.node_port else 0)
        sockets.append(own)
        port = own.getsockname()[1]
    node = node_for(settings, index, f"http://{settings.host}:{port}")
    try:
        node.application_name  # noqa: B018 - checked before anything connects
    except ValueError as exc:
        raise SystemExit(f"oa khala serve: {exc}") from None
    server = khala_server(settings, node)
    server.sockets = sockets
    await serve_all([server], on_ready=lambda: on_ready(node), signals=signals)


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call above
        raise SystemExit(0)


def _child_main() -> None:
    import uvloop

    import oa.bootstrap.khala  # noqa: F401 - the imports first, while the parent prepares

    data = sys.stdin.buffer.read()
    if not data:  # the parent stopped before giving us settings
        raise SystemExit(0)
    settings, index, ready_fd, parent = pickle.loads(data)
    _die_with_parent(parent)
    # Ctrl-C in a terminal reaches the whole process group: the parent decides, and stops
    # its children with SIGTERM (so it never mistakes their exit for a crash to restart).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="khala %(process)d: %(levelname)s %(message)s")

    def ready(node: Node) -> None:
        line = orjson.dumps({"id": node.id, "url": node.url, "pid": node.pid}) + b"\n"
        os.write(ready_fd, line)
        os.close(ready_fd)

    uvloop.run(serve_node(settings, index, ready, signals=(signal.SIGTERM,)))


if __name__ == "__main__":
    _child_main()
