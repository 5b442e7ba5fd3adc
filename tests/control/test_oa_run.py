"""`make run` (= `oa run`) starts control beside the runtime and tells clients where it is."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from oa.control.service.accounts import Accounts
from oa.control.settings import ControlSettings
from oa.deployment import LocalDeployment
from oa.khala.auth import JwksCache, SyncTokenVerifier, VerifierConfig
from tests.control.conftest import PASSWORD


@pytest.mark.slow
async def test_oa_run_serves_control_and_writes_its_url(
    database_url: str, accounts: Accounts, control_settings: ControlSettings, control_url: str, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        OA_DATABASE_URL=database_url,
        OA_HOME=str(tmp_path),
        # The deployment's key secret: the session's control already stored keys with it.
        OA_CONTROL_KEY_SECRET=control_settings.key_secret.decode(),
        COLUMNS="200",
    )
    for key in ("OA_CONTROL_ISSUER", "OA_CONTROL_HS256_SECRET"):
        env.pop(key, None)
    log = (tmp_path / "run.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "oa.cli.main",
        "run",
        "--runtime-port",
        "0",
        "--control-port",
        "0",
        "--khala-port",
        "0",
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        dep = LocalDeployment(tmp_path)
        deadline = time.monotonic() + 60
        while "OA_CONTROL_URL" not in dep.read_env():
            assert proc.returncode is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "oa run did not write deployment.env"
            await asyncio.sleep(0.2)
        control_url = dep.read_env()["OA_CONTROL_URL"]
        assert control_url != dep.read_env()["OA_RUNTIME_URL"]

        email = f"run-{time.time_ns()}@example.com"
        await accounts.add_user(email, PASSWORD)
        async with httpx.AsyncClient(base_url=control_url) as c:
            assert (await c.get("/.well-known/openid-configuration")).json()["issuer"] == control_url
            r = await c.post("/api/auth/sign-in", json={"email": email, "password": PASSWORD})
            assert r.status_code == 200, r.text
            headers = {"Authorization": f"Bearer {r.json()['session_token']}"}
            token = (await c.post("/api/sync/token", headers=headers)).json()["token"]
        # What Khala does with deployment.env: trust exactly this control's issuer and JWKS.
        jwks = JwksCache(f"{control_url}/.well-known/jwks.json")
        verifier = SyncTokenVerifier(VerifierConfig(issuer=control_url, audience="oa-khala-sync"), jwks)
        assert (await verifier.verify(token)).scopes
        await jwks.aclose()
        assert "control" in (tmp_path / "run.log").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()
