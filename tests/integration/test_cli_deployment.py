"""A newcomer's first commands against a real `oa run` (a child process on a temp OA_HOME):
one identity from `oa login` on, one deployment per home, and clear errors instead of
tracebacks when a server is gone or the home is wrong."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from oa.deployment import LocalDeployment
from tests.support.deployment import Cli, OaRun

PASSWORD = "a newcomer's password"


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    """A port another program holds, asked for as the runtime's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture(scope="module")
def deployment(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, taken_port: int
) -> Iterator[OaRun]:
    run = OaRun(tmp_path_factory.mktemp("oa-home"), database_url)
    run.start(runtime_port=taken_port)
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="module")
def cli(deployment: OaRun) -> Cli:
    return Cli(deployment.home)


@pytest.fixture(scope="module")
def account(cli: Cli) -> tuple[str, str]:
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    added = cli("control", "user", "add", email, "--org", "acme", OA_CONTROL_PASSWORD=PASSWORD)
    assert added.returncode == 0, added.stderr
    return email, added.stdout.strip()


def test_banner_says_the_default_port_was_taken_and_names_the_dashboard(
    deployment: OaRun, taken_port: int
) -> None:
    log = deployment.log.read_text()
    assert f"runtime port {taken_port} is taken" in log
    assert f"{deployment.env_values()['KHALA_SELF_HOSTED_URL']}/dashboard/" in log


def test_login_makes_the_cli_act_as_the_account(cli: Cli, account: tuple[str, str]) -> None:
    email, user_id = account
    before = cli("runs", "append", "r-anon", "run.started")
    assert before.returncode != 0 and "oa login" in before.stderr and "Traceback" not in before.stderr
    login = cli("login", "--email", email, OA_CONTROL_PASSWORD=PASSWORD)
    assert login.returncode == 0, login.stderr
    session = cli.home / "session.json"
    assert stat.S_IMODE(session.stat().st_mode) == 0o600

    run_id = f"mine-{uuid.uuid4().hex[:8]}"
    assert cli("runs", "append", run_id, "run.started", "--payload", '{"model":"gpt"}').returncode == 0
    shown = cli("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert f"owner user:{user_id}" in shown.stdout  # the dashboard's account, not user:local

    sig = cli("token", "runtime").stdout.strip()
    claims = jwt.decode(sig, options={"verify_signature": False})
    assert claims["sub"] == f"user:{user_id}" and claims["oa_org_id"].startswith("org_")
    sync = cli("token", "sync").stdout.strip()
    assert jwt.decode(sync, options={"verify_signature": False})["oa_user_id"] == user_id
    operator = cli("token", "sync", "--user", user_id, "--org", "acme")
    assert operator.returncode == 0, operator.stderr
    assert jwt.decode(operator.stdout.strip(), options={"verify_signature": False})["oa_user_id"] == user_id

    workers = cli("workers", "list")
    assert workers.returncode == 0 and "no workers yet" in workers.stdout, workers.stderr
    missing = cli("workers", "show", "w-none")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_a_second_start_in_the_same_home_refuses_naming_the_first(deployment: OaRun, cli: Cli) -> None:
    second = cli("run", "--runtime-port", "0", "--control-port", "0", "--khala-port", "0")
    assert second.returncode == 1
    env = deployment.env_values()
    assert f"pid {env['OA_PID']}" in second.stdout and env["OA_RUNTIME_URL"] in second.stdout
    assert deployment.env_values() == env  # untouched


def test_an_unreachable_runtime_names_the_url_and_its_source(cli: Cli) -> None:
    out = cli("runs", "show", "x", "--user", "op", OA_RUNTIME_URL="http://127.0.0.1:9")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "http://127.0.0.1:9" in out.stderr and "OA_RUNTIME_URL" in out.stderr


def test_a_stale_env_file_is_called_stale(tmp_path: Path) -> None:
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    LocalDeployment(tmp_path).write_env({"OA_RUNTIME_URL": "http://127.0.0.1:9", "OA_PID": str(dead)})
    out = Cli(tmp_path)("runs", "show", "x", "--user", "op")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"stale: the `oa run` that wrote it (pid {dead}) is no longer running" in out.stderr.replace(
        "\n", " "
    )


def test_control_user_add_refuses_a_home_without_a_deployment(tmp_path: Path) -> None:
    home = tmp_path / "typo"
    out = Cli(home)("control", "user", "add", "x@example.com", OA_CONTROL_PASSWORD=PASSWORD)
    assert out.returncode == 2 and "no deployment in" in out.stdout and "--create" in out.stdout
    assert not (home / "pgdata").exists()


def test_ctrl_c_removes_the_env_file(database_url: str, tmp_path: Path) -> None:
    run = OaRun(tmp_path / "home", database_url)
    run.start()
    try:
        assert run.interrupt() == 0
    finally:
        run.stop()
    assert not LocalDeployment(run.home).env_file.exists()


def test_the_readme_agent_env_file_selects_this_deployment(deployment: OaRun) -> None:
    """README: `oa mcp start --env-file .oa/deployment.env` points an agent at `make run`'s deployment."""
    from oa.agent.selection import SelfHosted, load_env, select

    env = deployment.env_values()
    chosen = select(load_env([LocalDeployment(deployment.home).env_file], {}))
    assert isinstance(chosen, SelfHosted)
    assert (chosen.url, chosen.runtime_url, chosen.home) == (
        env["KHALA_SELF_HOSTED_URL"],
        env["OA_RUNTIME_URL"],
        str(deployment.home),
    )


def test_khala_watch_follows_as_the_signed_in_account(cli: Cli, account: tuple[str, str]) -> None:
    email, _ = account
    assert cli("login", "--email", email, OA_CONTROL_PASSWORD=PASSWORD).returncode == 0
    run_id = f"watched-{uuid.uuid4().hex[:8]}"
    assert cli("runs", "append", run_id, "run.started").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "oa.cli.main", "khala", "watch", "runtime.run_summaries"],
        env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killer = threading.Timer(30, proc.kill)  # readline below must not wait forever
    killer.start()
    try:
        assert proc.stdout is not None
        time.sleep(2)  # connected and hydrated; now a live change
        assert cli("runs", "append", run_id, "text.delta", "--payload", '{"text":"hi"}').returncode == 0
        seen = ""
        while run_id not in seen and proc.poll() is None:
            seen += proc.stdout.readline()
        assert run_id in seen, seen + (proc.stderr.read() if proc.stderr else "")
    finally:
        killer.cancel()
        proc.kill()
        proc.wait()
