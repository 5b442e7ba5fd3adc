"""`oa mcp start` as a real process: a stdio session and a streamable-HTTP session (SDK clients),
with the HTTP side's bearer auth (401 + protected-resource metadata) and Origin check."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.agent.conftest import Deployment
from tests.support.mcp_content import text_of
from tests.support.servers import free_port

pytestmark = pytest.mark.slow  # each starts the CLI in a child process (several seconds of imports)


def child_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OA_", "KHALA_"))}
    return {**env, "OA_HOME": str(tmp / "home")}


async def test_stdio_session(dev: Deployment, tmp_path: Path) -> None:
    env_file = tmp_path / "dev.env"
    env_file.write_text(dev.env_file_text())
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "oa.cli.main", "mcp", "start", "--env-file", str(env_file)],
        env=child_env(tmp_path),
        cwd=str(tmp_path),
    )
    async with Client(params) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"status", "rebuild", "prune"} <= names
        status = await c.call_tool("status", {})
        assert not status.is_error and status.structured_content is not None
        assert status.structured_content["deployment"]["class"] == "dev"
        bad = await c.call_tool("document", {"doc_key": "runtime/run_summary:none"})
        assert bad.is_error and "no document" in text_of(bad)


@asynccontextmanager
async def http_server(dev: Deployment, tmp: Path, token: str) -> AsyncIterator[str]:
    env_file = tmp / "dev.env"
    env_file.write_text(dev.env_file_text())
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oa.cli.main", "mcp", "start", "--http", "--port", str(port),
        "--env-file", str(env_file), env={**child_env(tmp), "OA_MCP_HTTP_TOKEN": token}, cwd=str(tmp),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as h:
            for _ in range(300):
                try:
                    await h.get(base + "/mcp")
                    break
                except httpx.HTTPError:
                    assert proc.returncode is None, "oa mcp start --http exited"
                    await asyncio.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        await proc.wait()


async def test_streamable_http_session(dev: Deployment, tmp_path: Path) -> None:
    token = "test-bearer-" + "x" * 20
    async with http_server(dev, tmp_path, token) as base:
        async with httpx.AsyncClient(base_url=base) as h:
            init = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            accept = {"Accept": "application/json, text/event-stream"}
            anon = await h.post("/mcp", json=init, headers=accept)
            assert anon.status_code == 401
            challenge = anon.headers["www-authenticate"]
            assert challenge.startswith("Bearer") and "resource_metadata=" in challenge
            meta_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
            meta = (await h.get(meta_url)).json()
            assert meta["resource"] == f"{base}/mcp"
            wrong = await h.post("/mcp", json=init, headers={**accept, "Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            evil = await h.post(
                "/mcp",
                json=init,
                headers={**accept, "Authorization": f"Bearer {token}", "Origin": "http://evil.example"},
            )
            assert evil.status_code == 403
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client,
            Client(streamable_http_client(f"{base}/mcp", http_client=client)) as c,
        ):
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert tools["status"].annotations is not None and tools["status"].annotations.read_only_hint
            status = await c.call_tool("status", {})
            assert not status.is_error and status.structured_content is not None
            assert status.structured_content["deployment"]["class"] == "dev"
