"""The anonymous agent deployment does not outlive its agents: it stops by itself once no
MCP server has used it for OA_AGENT_IDLE_EXIT_S, and `oa mcp stop` ends it at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oa.agent import anonymous
from oa.deployment import hold_presence, pid_alive


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # it is our child: reap it
        except ChildProcessError:
            done = pid if not pid_alive(pid) else 0
        if done:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_it_stops_after_the_idle_time_without_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OA_AGENT_IDLE_EXIT_S", "4")
    home = anonymous.agent_home(tmp_path)
    agent = hold_presence(anonymous.presence_lock(home))  # an MCP server using it
    try:
        anonymous.ensure_running(home)
        pid = int((home / "server.pid").read_text())
        time.sleep(6)
        assert pid_alive(pid), "stopped while an agent was using it"
        agent.close()  # the agent exits
        assert _wait_gone(pid, 30), "still running 30 s after its last agent left"
        assert not (home / "deployment.env").exists()
    finally:
        agent.close()
        anonymous.stop(home)


@pytest.mark.slow
def test_oa_mcp_stop_ends_it_now(tmp_path: Path) -> None:
    home = anonymous.agent_home(tmp_path)
    anonymous.ensure_running(home)
    pid = int((home / "server.pid").read_text())
    out = subprocess.run(
        [sys.executable, "-m", "oa.cli.main", "mcp", "stop"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "stopped the anonymous agent deployment" in out.stderr, out.stderr
    assert _wait_gone(pid, 5) and not (home / "deployment.env").exists()
