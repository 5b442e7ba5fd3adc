"""`oa run` as a person starts it: a child process on a temp OA_HOME and free ports, and the
`oa` CLI run against it as a child process too (so what a user sees is what a test sees)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from oa.deployment import LocalDeployment
from tests.support.servers import ChildProcess, free_port

KEY_SECRET = "test-key-secret-0123456789abcdef"  # the session database's control keys use it


@dataclass
class Cli:
    home: Path
    extra: dict[str, str] = field(default_factory=dict)

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OA_", "KHALA_"))}
        env.update(OA_HOME=str(self.home), COLUMNS="200", OA_CONTROL_KEY_SECRET=KEY_SECRET, **self.extra)
        env.update(more)
        return env

    def __call__(self, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "oa.cli.main", *args],
            env=self.env(**env), input=stdin, capture_output=True, text=True, timeout=120,
        )  # fmt: skip


@dataclass
class OaRun(ChildProcess):
    """`oa run` on `home`; `ports` are what it is asked for (0 = any)."""

    home: Path
    database_url: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.home / "run.log"

    def start(
        self,
        runtime_port: int = 0,
        timeout: float = 90.0,
        control_port: int = 0,
        khala_port: int = 0,
        khala_workers: int | None = None,
    ) -> None:
        """Start it and wait for its deployment.env (written once every server is up)."""
        self.home.mkdir(parents=True, exist_ok=True)
        cli = Cli(self.home, {"OA_DATABASE_URL": self.database_url} if self.database_url else {})
        args = ["run", "--runtime-port", str(runtime_port or free_port())]
        args += [
            "--control-port",
            str(control_port or free_port()),
            "--khala-port",
            str(khala_port or free_port()),
        ]
        if khala_workers is not None:
            args += ["--khala-workers", str(khala_workers)]
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oa.cli.main", *args], env=cli.env(), stdout=out, stderr=out
        )
        deadline = time.monotonic() + timeout
        while "OA_PID" not in self.env_values():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"oa run did not come up: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.port = int(self.env_values()["OA_RUNTIME_URL"].rsplit(":", 1)[1])

    def env_values(self) -> dict[str, str]:
        return LocalDeployment(self.home).read_env()

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C, as a person stops it; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)
