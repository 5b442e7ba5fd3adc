"""Servers for tests: uvicorn on a real loopback port, in this process or a child one."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from oa.cli.serve import WS_IMPL, EmbeddedServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve_in_loop(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` on a free port in the running loop; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", ws=WS_IMPL)
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class ChildProcess:
    """An `oa` command in a child process that serves /healthz, so a test can kill -9 it."""

    port: int
    proc: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(
        self, args: list[str], env: dict[str, str], log: Path | None = None, timeout: float = 30.0
    ) -> None:
        """Run `python -m oa.cli.main ARGS` with `env` added, and wait until it is healthy."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - kept by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oa.cli.main", *args], env={**os.environ, **env}, stdout=out, stderr=out
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                where = f": see {log}" if log is not None else ""
                raise RuntimeError(f"{args[0]} {args[1]} exited with {self.proc.returncode}{where}")
            time.sleep(0.1)
        raise RuntimeError(f"{args[0]} {args[1]} did not become healthy")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


@dataclass
class ChildServer(ChildProcess):
    """`oa serve runtime` in a child process."""

    database_url: str
    secret: str
    home: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.port = self.port or free_port()
        env = {
            "OA_DATABASE_URL": self.database_url,
            "OA_RUNTIME_CALLER_SECRET": self.secret,
            "OA_HOME": str(self.home),
        }
        self.spawn(["serve", "runtime", "--port", str(self.port), "--skip-migrate"], env, timeout=timeout)
