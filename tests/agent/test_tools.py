"""Every MCP tool through the SDK's in-memory client, against a real `dev` deployment."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from mcp import Client
from mcp.types import CallToolResult

from oa.agent.server import Options, build_server, provider_for
from tests.agent.conftest import ClientFor, Deployment
from tests.conftest import Signer
from tests.support.mcp_content import text_of

READ_TOOLS = {
    "status",
    "topics",
    "documents",
    "document",
    "runs",
    "run",
    "workers",
    "worker",
    "audit",
    "errors",
}
WRITE_TOOLS = {"rebuild", "prune"}


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    data: dict[str, Any] = result.structured_content or orjson.loads(text_of(result))
    return data


async def call(c: Client, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return ok(await c.call_tool(tool, args or {}))


async def seed_run(client: httpx.AsyncClient, runs: int = 3) -> list[str]:
    ids = [f"run-mcp-{uuid.uuid4().hex[:8]}" for _ in range(runs)]
    for rid in ids:
        for ev in ({"event_type": "run.started", "payload": {"model": "m"}},
                   {"event_type": "text.delta", "payload": {"text": "hi"}}):  # fmt: skip
            r = await client.post(f"/internal/v1/runs/{rid}/events", json=ev)
            assert r.status_code in (200, 201), r.text
    return ids


async def projected(dep: Deployment, key: str) -> None:
    async with dep.admin() as a:
        for _ in range(100):
            if (await a.get(f"/documents/{key}")).status_code == 200:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never projected")


async def test_tools_are_listed_with_honest_annotations(dev: Deployment, mcp_client: ClientFor) -> None:
    async with mcp_client(dev) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) == READ_TOOLS | WRITE_TOOLS
    for name in READ_TOOLS:
        a = tools[name].annotations
        assert a is not None and a.read_only_hint is True and a.destructive_hint is False, name
    for name in WRITE_TOOLS:
        a = tools[name].annotations
        assert a is not None and a.read_only_hint is False and a.destructive_hint is True, name
        assert a.idempotent_hint is True


async def test_read_tools(dev: Deployment, mcp_client: ClientFor, client: httpx.AsyncClient) -> None:
    ids = await seed_run(client)
    await projected(dev, f"runtime/run_summary:{ids[-1]}")
    wid = f"w-mcp-{uuid.uuid4().hex[:8]}"
    assert (await client.post("/internal/v1/codex/workers", json={"worker_id": wid})).status_code in (
        200,
        201,
    )
    async with mcp_client(dev) as c:
        status = await call(c, "status")
        assert status["deployment"]["class"] == "dev" and status["deployment"]["mode"] == "self-hosted"
        assert status["journal_head"] > 0 and "run_summaries" in str(status["projector_lag"])

        topics = await call(c, "topics")
        runs_topic = next(t for t in topics["topics"] if t["name"] == "runtime.run_summaries")
        assert runs_topic["schema"]["wire"]["message"] == "oa.sync.v1.Update"
        assert any(s["message"] == "oa.runtime.v1.RunStarted" for s in runs_topic["schema"]["source_events"])

        # Paged by key prefix: three of our runs, two pages of two.
        prefix = "runtime/run_summary:run-mcp-"
        args = {"topic": "runtime.run_summaries", "prefix": prefix, "limit": 2}
        first = await call(c, "documents", args)
        assert len(first["documents"]) == 2 and first["next_cursor"]
        keys = [d["doc_key"] for d in first["documents"]]
        rest = await call(c, "documents", {**args, "cursor": first["next_cursor"], "limit": 200})
        keys += [d["doc_key"] for d in rest["documents"]]
        assert all(k.startswith(prefix) for k in keys) and len(keys) == len(set(keys))
        assert {f"runtime/run_summary:{i}" for i in ids} <= set(keys)

        doc = await call(c, "document", {"doc_key": f"runtime/run_summary:{ids[0]}"})
        assert doc["document"]["payload"]["run_id"] == ids[0]
        # Newest first, ending at the document's version. A projector that catches up after a
        # pause folds both events into one batch (one journal row), so [2] is as right as [2, 1].
        versions = [h["doc_version"] for h in doc["history"]]
        assert versions[0] == doc["document"]["doc_version"] == 2
        assert versions == sorted(set(versions), reverse=True) and set(versions) <= {1, 2}

        runs = await call(c, "runs", {"owner": "user:alice", "limit": 200})
        assert {r["run_id"] for r in runs["runs"]} >= set(ids) and all(
            r["owner"] == "alice" for r in runs["runs"]
        )

        run = await call(c, "run", {"run_id": ids[0], "limit": 1})
        assert run["snapshot"]["run_id"] == ids[0] and len(run["events"]) == 1 and run["next_after_seq"] == 1

        workers = await call(c, "workers")
        assert wid in {w["worker_id"] for w in workers["workers"]}
        worker = await call(c, "worker", {"worker_id": wid})
        assert worker["worker_id"] == wid

        audit = await call(c, "audit")
        assert audit["status"] == "done" and audit["result"]["drift_count"] == 0
        errors = await call(c, "errors")
        assert isinstance(errors["errors"], list) and errors["stopped_projections"] == {}


async def test_unknown_ids_are_tool_errors_that_say_so(dev: Deployment, mcp_client: ClientFor) -> None:
    async with mcp_client(dev) as c:
        missing = await c.call_tool("document", {"doc_key": "runtime/run_summary:nope"})
        assert missing.is_error and "no document" in text_of(missing)
        other = await c.call_tool("run", {"run_id": "run-nope-404"})
        assert other.is_error and "404" in text_of(other)
        bad = await c.call_tool("documents", {"topic": "no.such.topic"})
        assert bad.is_error and "unknown topic" in text_of(bad)


async def test_write_tools_run_in_the_projector(
    dev: Deployment, mcp_client: ClientFor, client: httpx.AsyncClient
) -> None:
    ids = await seed_run(client, 1)
    key = f"runtime/run_summary:{ids[0]}"
    await projected(dev, key)
    async with mcp_client(dev) as c:
        before = await call(c, "document", {"doc_key": key})
        rebuilt = await call(c, "rebuild")
        assert rebuilt["status"] == "done" and rebuilt["result"]["documents"] >= 1
        assert rebuilt["result"]["drift_count"] == 0
        after = await call(c, "document", {"doc_key": key})
        assert after["document"]["payload_hash"] == before["document"]["payload_hash"]

        # The session database is shared: prune by the topic's own policy, which keeps every
        # row a client may still resume from (the aggressive case is in test_prune.py).
        pruned = await call(c, "prune", {"topic": "runtime.notifications"})
        result = pruned["result"]
        assert pruned["status"] == "done" and result["topic"] == "runtime.notifications"
        assert result["retention_floor_after"] >= result["retention_floor_before"]
        status = await call(c, "status")
        assert status["topics"]["runtime.notifications"]["retention_floor"] == result["retention_floor_after"]

        bad = await c.call_tool("prune", {"topic": "nope"})
        assert bad.is_error and "prune needs a topic" in text_of(bad)


# -- issue 13: an agent can open what it was shown; failures explain the fix ----------------
# (in this module, sharing its projector: a second module's projector taking over the leader
# lock would batch the events test_read_tools appends, and it counts journal rows)


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
