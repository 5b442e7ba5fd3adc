"""The local deployment's files under `OA_HOME` (default `./.oa`).

`deployment.env` is how every client (CLI, scripts, agents) finds a running deployment;
`runtime-caller.secret` signs caller tokens for it. One home holds one deployment: `oa run`
holds `deployment.lock` (an flock, so a killed process cannot leave it held) for as long as
it serves, writes its pid into `deployment.env`, and removes the file when it stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

DEFAULT_URLS = {
    "OA_RUNTIME_URL": "http://127.0.0.1:8787",
    "OA_CONTROL_URL": "http://127.0.0.1:8788",
    "KHALA_SELF_HOSTED_URL": "http://127.0.0.1:8789",
}


class DeploymentRunning(Exception):
    """Another `oa run` holds this home; `env` is what it wrote (pid, URLs)."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        urls = ", ".join(f"{k}={v}" for k, v in env.items() if k.endswith("_URL") and k != "OA_DATABASE_URL")
        super().__init__(
            f"a deployment is already running in {home} (pid {env.get('OA_PID', '?')}; {urls or 'starting'}). "
            "Use it (its clients read deployment.env), stop it (Ctrl-C in its terminal, or "
            f"kill {env.get('OA_PID', '<pid>')}), or start another with OA_HOME set to another folder."
        )


@dataclass(frozen=True)
class Endpoint:
    """A URL and where it came from, so an error can say both."""

    url: str
    source: str


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_open(url: str, timeout: float = 0.5) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def hold_presence(lock: Path) -> IO[str]:
    """Mark this process as an agent of the deployment; keep the returned file open."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    f = lock.open("a+")
    fcntl.flock(f, fcntl.LOCK_SH)
    return f


def nobody_present(lock: Path) -> bool:
    with lock.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


@dataclass(frozen=True)
class LocalDeployment:
    home: Path

    @classmethod
    def from_env(cls) -> LocalDeployment:
        return cls(Path(os.environ.get("OA_HOME", ".oa")).resolve())

    @property
    def env_file(self) -> Path:
        return self.home / "deployment.env"

    @property
    def lock_file(self) -> Path:
        return self.home / "deployment.lock"

    @property
    def caller_secret_file(self) -> Path:
        return self.home / "runtime-caller.secret"

    def exists(self) -> bool:
        """Has a deployment ever been created in this home (its database or its files)?"""
        return (self.home / "pgdata").exists() or self.env_file.exists() or self.caller_secret_file.exists()

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold this home for one `oa run`; raise `DeploymentRunning` if another holds it.

        On exit (normal stop or Ctrl-C) the env file is removed so clients do not point at
        dead ports; after a kill -9 it stays, and clients see its pid is gone (`stale_reason`).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        lock = self.lock_file.open("a+")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip()  # its pid, even while it is still starting
                raise DeploymentRunning(self.home, {"OA_PID": holder or "?", **self.read_env()}) from None
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            self.env_file.unlink(missing_ok=True)  # a previous run's, killed before it could clean up
            try:
                yield
            finally:
                if self.read_env().get("OA_PID") == str(os.getpid()):
                    self.env_file.unlink(missing_ok=True)
        finally:
            lock.close()

    def write_env(self, values: dict[str, str]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Written by `oa run`: selects this local deployment; removed when it stops.",
            *(f"{k}={v}" for k, v in values.items()),
        ]
        tmp = self.env_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.env_file)

    def read_env(self) -> dict[str, str]:
        if not self.env_file.exists():
            return {}
        values: dict[str, str] = {}
        for line in self.env_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
        return values

    def endpoint(self, *names: str) -> Endpoint:
        """The first of the variables `names` set in the environment, else in deployment.env,
        else the default for the first name."""
        for name in names:
            if os.environ.get(name):
                return Endpoint(os.environ[name].rstrip("/"), f"the variable {name}")
        env = self.read_env()
        for name in names:
            if env.get(name):
                return Endpoint(env[name].rstrip("/"), str(self.env_file))
        return Endpoint(DEFAULT_URLS.get(names[0], ""), f"the default, as {self.env_file} is missing")

    def stale_reason(self) -> str | None:
        """Why deployment.env no longer describes a running deployment, or None."""
        env = self.read_env()
        pid = env.get("OA_PID", "")
        if pid.isdigit() and not pid_alive(int(pid)):
            return (
                f"{self.env_file} is stale: the `oa run` that wrote it (pid {pid}) is no longer "
                "running. Start it again with `make run` (or `oa run`)"
            )
        return None

    def unreachable(self, what: str, endpoint: Endpoint) -> str:
        """The message for a server that did not answer: the URL, its source, what to do."""
        head = f"cannot reach {what} at {endpoint.url} (from {endpoint.source})"
        stale = self.stale_reason() if endpoint.source == str(self.env_file) else None
        if stale:
            return f"{head}: {stale}."
        if endpoint.source == str(self.env_file):
            return (
                f"{head}: the deployment's pid {self.read_env().get('OA_PID', '?')} is alive but does "
                "not answer there. Is it still starting? Otherwise restart it with `make run`."
            )
        if endpoint.source.startswith("the variable"):
            return f"{head}: check that variable, or unset it to use {self.env_file}."
        return f"{head}: start the deployment with `make run` (it writes {self.env_file})."
