"""What an agent is shown it can open, and every failure reaches it as a tool error saying
how to fix it (issue 13, item 5): owners as `runs` reports them, `prune {}`, a bad owner."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from mcp import Client

from oa.agent.server import Options, build_server, provider_for
from tests.agent.conftest import Deployment
from tests.agent.test_tools import call, projected
from tests.conftest import Signer
from tests.support.mcp_content import text_of


def agent(dep: Deployment) -> Client:
    """The MCP server as `oa mcp start` runs it: reads signed as user:agent by default."""
    return Client(build_server(provider_for(dep.selection(), Path(".")), Options(principal="user:agent")))


async def test_an_agent_can_open_the_runs_it_was_shown(
    dev: Deployment, runtime_url: str, sign: Signer
) -> None:
    me, run_id, wid = (
        f"me{uuid.uuid4().hex[:6]}",
        f"run-seen-{uuid.uuid4().hex[:8]}",
        f"w-seen-{uuid.uuid4().hex[:8]}",
    )
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{me}")) as h:
        r = await h.post(
            f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {}}
        )
        assert r.status_code == 201, r.text
        assert (await h.post("/internal/v1/codex/workers", json={"worker_id": wid})).status_code in (200, 201)
    await projected(dev, f"runtime/run_summary:{run_id}")
    await projected(dev, f"runtime/codex_worker_summary:{wid}")
    async with agent(dev) as c:
        listed = await call(c, "runs", {"owner": me, "limit": 200})
        shown = next(r for r in listed["runs"] if r["run_id"] == run_id)
        assert shown["owner"] == me
        # The owner exactly as `runs` reported it is accepted by `run` ...
        by_owner = await call(c, "run", {"run_id": run_id, "owner": shown["owner"]})
        assert by_owner["snapshot"]["owner"] == f"user:{me}"
        # ... and without one, the read is signed as the run's owner, not refused for user:agent.
        assert (await call(c, "run", {"run_id": run_id}))["snapshot"]["run_id"] == run_id
        assert (await call(c, "worker", {"worker_id": wid}))["worker_id"] == wid


async def test_failures_are_tool_errors_that_explain_the_fix(dev: Deployment) -> None:
    async with agent(dev) as c:
        bad_owner = await c.call_tool("run", {"run_id": "r1", "owner": "user:"})
        assert bad_owner.is_error and "must look like user:<id>" in text_of(bad_owner), text_of(bad_owner)
        prune = await c.call_tool("prune", {})
        text = text_of(prune)
        assert prune.is_error and "prune needs a topic" in text and "runtime.run_summaries" in text
        assert "validation error" not in text and "Field required" not in text
