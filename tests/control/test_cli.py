"""`oa control ...` as an operator runs it: a child process on the same database as a
running control, whose effects the running control sees."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from oa.control.settings import ControlSettings
from tests.control.conftest import PASSWORD


async def oa(args: list[str], database_url: str, home: Path, settings: ControlSettings) -> str:
    env = dict(os.environ)
    env.update(
        OA_DATABASE_URL=database_url,
        OA_HOME=str(home),
        OA_CONTROL_KEY_SECRET=settings.key_secret.decode(),
        OA_CONTROL_PASSWORD=PASSWORD,
        COLUMNS="200",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oa.cli.main", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()


@pytest.mark.slow
async def test_operator_commands_reach_the_running_control(
    database_url: str, control_settings: ControlSettings, control: httpx.AsyncClient, tmp_path: Path
) -> None:
    org = f"org-{uuid.uuid4().hex[:6]}"
    email = f"op-{uuid.uuid4().hex[:6]}@example.com"
    org_id = (await oa(["control", "org", "add", org], database_url, tmp_path, control_settings)).strip()
    assert org_id.startswith("org_")
    user_id = (
        await oa(
            ["control", "user", "add", email, "--org", org, "--scopes", "runtime.notifications"],
            database_url,
            tmp_path,
            control_settings,
        )
    ).strip()
    r = await control.post("/api/auth/sign-in", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["user_id"] == user_id and r.json()["org_id"] == org_id
    headers = {"Authorization": f"Bearer {r.json()['session_token']}"}
    token = await control.post("/api/sync/token", headers=headers)
    assert token.json()["scopes"] == ["runtime.notifications"]

    before = {k["kid"] for k in (await control.get("/.well-known/jwks.json")).json()["keys"]}
    out = await oa(["control", "rotate-keys", "--lead", "30"], database_url, tmp_path, control_settings)
    after = {k["kid"] for k in (await control.get("/.well-known/jwks.json")).json()["keys"]}
    (new_kid,) = after - before
    assert new_kid in out and "not signing yet" in out

    out = await oa(["control", "user", "revoke-sessions", email], database_url, tmp_path, control_settings)
    assert "revoked 1 session" in out
    assert (await control.post("/api/sync/token", headers=headers)).status_code == 401
