"""Anonymous agent mode end to end: production selectors ignored with a warning, a local
deployment started on demand under .oa/agent (embedded Postgres), reused, then stopped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mcp import Client

from oa.agent import anonymous
from oa.agent.selection import Anonymous, select
from oa.agent.server import Options, build_server, provider_for
from tests.support.mcp_content import text_of


@pytest.mark.slow
async def test_anonymous_mode_starts_its_own_dev_deployment(tmp_path: Path) -> None:
    env = {
        "KHALA_AGENT_MODE": "anonymous",
        "KHALA_SELF_HOSTED_URL": "https://khala.prod.example",
        "KHALA_SELF_HOSTED_ADMIN_KEY": "prod-key-the-agent-must-not-use",
    }
    sel = select(env)
    assert isinstance(sel, Anonymous) and "ignoring KHALA_SELF_HOSTED_URL" in sel.warnings[0]
    home = anonymous.agent_home(tmp_path)
    assert not home.exists()  # nothing runs until a tool needs it
    try:
        async with Client(build_server(provider_for(sel, tmp_path), Options(wait_s=30))) as c:
            status = await c.call_tool("status", {})
            assert not status.is_error, text_of(status)
            data = status.structured_content
            assert data is not None
            assert data["deployment"]["mode"] == "anonymous" and data["deployment"]["class"] == "dev"
            assert data["deployment"]["url"].startswith("http://127.0.0.1:")
            assert "ignoring" in data["warnings"][0]
            assert not (await c.call_tool("workers", {})).is_error  # runtime reachable, signed locally
        assert (home / "pgdata").is_dir() and (home / "deployment.env").is_file()
        pid = int((home / "server.pid").read_text())
        again = anonymous.ensure_running(home)  # reused, not restarted
        assert int((home / "server.pid").read_text()) == pid and again["OA_HOME"] == str(home)
    finally:
        assert anonymous.stop(home)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
