"""Anonymous agent mode: the agent's own local deployment, started on demand.

It is a plain `oa run` with `OA_HOME=.oa/agent` (embedded Postgres under it, its own free
ports, class `dev`), started in the background the first time a tool needs it and reused
while it answers. Production selectors and `OA_DATABASE_URL` are removed from its
environment, so it can never point at someone else's database. No login, no credentials:
it writes its own admin key and caller secret under its home, like any local deployment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from oa.agent.selection import MODE, PROD_SELECTORS
from oa.deployment import LocalDeployment

SCRUBBED = (*PROD_SELECTORS, MODE, "OA_DATABASE_URL", "KHALA_DEPLOYMENT_CLASS", "OA_RUNTIME_URL",
            "OA_RUNTIME_CALLER_SECRET", "OA_CONTROL_URL")  # fmt: skip


IDLE_EXIT_S = 900.0  # a detached deployment nobody uses stops after 15 min (OA_AGENT_IDLE_EXIT_S)


def agent_home(root: Path) -> Path:
    return (root / ".oa" / "agent").resolve()


def presence_lock(home: Path) -> Path:
    """Held (shared) by every MCP server using the deployment; see oa.cli.idle."""
    return home / "agents.lock"


def _healthy(url: str | None) -> bool:
    if not url:
        return False
    try:
        return httpx.get(url.rstrip("/") + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _running(env: dict[str, str]) -> bool:
    return _healthy(env.get("KHALA_SELF_HOSTED_URL")) and _healthy(env.get("OA_RUNTIME_URL"))


def ensure_running(home: Path, timeout: float = 120.0) -> dict[str, str]:
    """The deployment's env (URLs, admin key, OA_HOME), starting it first if it is not up."""
    dep = LocalDeployment(home)
    home.mkdir(parents=True, exist_ok=True)
    with (home / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two agents starting at once get one deployment
        env = dep.read_env()
        if env and _running(env):
            return env
        dep.env_file.unlink(missing_ok=True)
        child_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        child_env.update(OA_HOME=str(home), KHALA_DEPLOYMENT_CLASS="dev")
        log = (home / "server.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "oa.cli.main", "run", "--runtime-port", "0",
             "--control-port", "0", "--khala-port", "0", "--idle-lock", str(presence_lock(home)),
             "--idle-exit-s", os.environ.get("OA_AGENT_IDLE_EXIT_S", str(IDLE_EXIT_S))],
            env=child_env, cwd=home, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        (home / "server.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            env = dep.read_env()
            if env and _running(env):
                return env
            if proc.poll() is not None:
                tail = (home / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the anonymous deployment exited ({proc.returncode}):\n{tail}")
            time.sleep(0.2)
        raise RuntimeError(
            f"the anonymous deployment did not come up in {timeout:.0f}s; see {home}/server.log"
        )


def stop(home: Path, timeout: float = 20.0) -> bool:
    """Stop the deployment this home's pid file names (SIGTERM, then SIGKILL)."""
    pid_file = home / "server.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child: poll for its exit
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                done = 0
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    LocalDeployment(home).env_file.unlink(missing_ok=True)
    return True
