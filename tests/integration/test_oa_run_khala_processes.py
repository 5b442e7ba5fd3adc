"""`oa run --khala-workers 2`: Khala in two processes of its own on one port, apart from
the runtime's; a Khala process that dies is reported and restarted while the run goes on;
Ctrl-C stops every process and removes deployment.env."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.deployment import OaRun


def children_of(pid: int) -> list[int]:
    return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_oa_run_with_two_khala_processes_restarts_a_dead_one_and_stops_cleanly(
    database_url: str, tmp_path: Path
) -> None:
    run = OaRun(tmp_path / "home", database_url)
    run.start(khala_workers=2)
    assert run.proc is not None
    kids: list[int] = []
    now: list[int] = []
    try:
        env = run.env_values()
        khala = env["OA_KHALA_URL"]
        admin = {"Authorization": f"Bearer {env['KHALA_SELF_HOSTED_ADMIN_KEY']}"}
        kids = children_of(run.proc.pid)
        assert len(kids) == 2, kids  # the Khala processes (the database is an external one)
        # The port is theirs (not the runtime's process), and the dashboard still names control.
        reached: set[int] = set()
        deadline = time.monotonic() + 30
        while set(kids) - reached and time.monotonic() < deadline:
            with httpx.Client(timeout=5) as h:  # a new connection each time
                reached.add(h.get(f"{khala}/sync/v1/status", headers=admin).json()["node"]["pid"])
        assert reached == set(kids)
        config = httpx.get(f"{khala}/dashboard/config.json", timeout=5).json()
        assert config["control_url"] == env["OA_CONTROL_URL"]
        assert httpx.get(f"{env['OA_RUNTIME_URL']}/healthz", timeout=5).status_code == 200

        os.kill(kids[0], signal.SIGKILL)
        wait_for(lambda: "restarting it" in run.log.read_text(), 30, "the death to be reported")
        pid = run.proc.pid
        wait_for(
            lambda: len(children_of(pid)) == 2 and kids[0] not in children_of(pid), 30, "a new Khala process"
        )
        assert f"(pid {kids[0]}) exited with code -9; restarting it" in run.log.read_text()
        assert run.proc.poll() is None  # the run goes on
        now = children_of(run.proc.pid)
        wait_for(
            lambda: httpx.get(f"{khala}/healthz", timeout=5).status_code == 200, 30, "Khala to answer again"
        )
    finally:
        code = run.interrupt()
    assert code == 0, run.log.read_text()[-3000:]
    assert not any(alive(p) for p in [*kids, *now]), "a Khala process outlived oa run"
    assert not run.home.joinpath("deployment.env").exists()
