"""Control's resources and Khala's audiences agree: a genuine token for `khala-http` reads
over HTTP, one for `khala-sync` serves socket and HTTP, and the socket refuses HTTP-only
tokens (meanings in oa/khala/sync/principal.py). Real control, real Khala, real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from oa.bootstrap import services
from oa.khala.settings import KhalaSettings
from tests.control.conftest import ISSUER, NewUser, mint
from tests.support.servers import serve_in_loop

RUNS = "runtime.run_summaries"


@pytest.fixture
async def khala_url(database_url: str, control_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """Khala as `oa khala serve` builds it: settings from its variables, then the root."""
    env = {"OA_CONTROL_URL": control_url, "OA_SYNC_TOKEN_ISSUER": ISSUER}
    app = services.khala_app(KhalaSettings.from_env(env, database_url=database_url, home=tmp_path))
    async with serve_in_loop(app) as url:
        yield url


async def socket_answer(khala_url: str, token: str) -> dict[str, object]:
    async with connect(khala_url.replace("http", "ws") + "/sync/v1/ws") as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        frame: dict[str, object] = json.loads(await ws.recv())
        return frame


@pytest.mark.parametrize("resource", ["khala-http", "khala-sync"])
async def test_a_genuine_token_for_either_resource_reads_the_snapshot(
    new_user: NewUser, control: httpx.AsyncClient, khala_url: str, resource: str
) -> None:
    token = (await mint(control, await new_user(), resource=resource))["token"]
    async with httpx.AsyncClient(base_url=khala_url) as http:
        r = await http.get(f"/sync/v1/topics/{RUNS}/snapshot", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.json()["topic"] == RUNS


async def test_the_socket_takes_sync_tokens_and_refuses_http_only_ones(
    new_user: NewUser, control: httpx.AsyncClient, khala_url: str
) -> None:
    user = await new_user()
    ready = await socket_answer(khala_url, (await mint(control, user, resource="khala-sync"))["token"])
    assert ready["type"] == "ready", ready
    refused = await socket_answer(khala_url, (await mint(control, user, resource="khala-http"))["token"])
    assert refused["type"] == "error" and refused["code"] == "unauthorized", refused
    assert "khala-sync" in str(refused["message"])
