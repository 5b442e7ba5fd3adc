"""The MCP server (`oa mcp start`): read tools, two write tools, each call checked and audited.

Built on the official SDK's `MCPServer`. Tools reach the deployment only through its public
APIs. Expected failures (refusals, unknown ids, an unreachable deployment) are `ToolError`s
whose text says why and what to do; large results are paged with a cursor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

import oa
from oa.agent import access
from oa.agent.clients import AdminClient, ApiError, RuntimeClient
from oa.agent.selection import Anonymous, Selection, SelfHosted
from oa.deployment import hold_presence
from oa.exceptions import OAError

log = logging.getLogger(__name__)

READ = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
WRITE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
INSTRUCTIONS = (
    "Inspect an OpenAgents deployment (Khala sync layer and runtime). Read tools are safe. "
    "`rebuild` and `prune` change derived state. On a production deployment every call needs a live, "
    "time-limited change-control grant and is audited; refusals explain how to get access."
)


@dataclass
class Target:
    mode: Literal["self-hosted", "anonymous"]
    admin: AdminClient
    runtime: RuntimeClient | None
    warnings: tuple[str, ...] = ()


TargetProvider = Callable[[], Awaitable[Target]]


def _caller_secret(secret: str | None, home: str | None) -> bytes | None:
    if secret:
        return secret.encode()
    if home and (Path(home) / "runtime-caller.secret").is_file():
        return (Path(home) / "runtime-caller.secret").read_bytes().strip()
    return None


def _target(mode: Literal["self-hosted", "anonymous"], env: SelfHosted, warnings: tuple[str, ...]) -> Target:
    secret = _caller_secret(env.caller_secret, env.home)
    runtime = RuntimeClient(env.runtime_url, secret) if env.runtime_url and secret else None
    return Target(mode, AdminClient(env.url, env.admin_key), runtime, warnings)


def provider_for(selection: Selection, root: Path) -> TargetProvider:
    """A static target for a selected deployment; for anonymous mode, one started on first use."""
    if isinstance(selection, SelfHosted):
        target = _target("self-hosted", selection, selection.warnings)

        async def static() -> Target:
            return target

        return static
    assert isinstance(selection, Anonymous)
    cache: list[Target] = []
    presence: list[IO[str]] = []
    lock = asyncio.Lock()

    async def anonymous() -> Target:
        from oa.agent import anonymous as anon
        from oa.agent.selection import select

        async with lock:
            if not cache:
                home = anon.agent_home(root)
                presence.append(hold_presence(anon.presence_lock(home)))  # until this process exits
                env = await asyncio.to_thread(anon.ensure_running, home)
                chosen = select({k: v for k, v in env.items() if k != "KHALA_AGENT_MODE"})
                assert isinstance(chosen, SelfHosted)
                cache.append(_target("anonymous", chosen, selection.warnings))
            return cache[0]

    return anonymous


@dataclass
class Options:
    principal: str = "user:agent"  # who runtime reads are signed as, unless a tool names an owner
    wait_s: float = 60.0  # how long rebuild/prune/audit wait for the projector
    poll_s: float = 0.1
    calls: list[str] = field(default_factory=list)


Cursor = Annotated[
    str, Field(description="next_cursor from the previous page; empty for the first", max_length=400)
]
Limit = Annotated[int, Field(ge=1, le=200, description="page size")]
Owner = Annotated[
    str,
    Field(
        description="principal to read as, e.g. user:alice (default: the server's principal)", max_length=200
    ),
]


def build_server(provider: TargetProvider, options: Options | None = None, **server_kw: Any) -> MCPServer:
    opts = options or Options()
    server: MCPServer = MCPServer("oa-khala", version=oa.__version__, instructions=INSTRUCTIONS, **server_kw)

    async def guarded(
        tool: str, write: bool, args: dict[str, Any], body: Callable[[Target, access.Access], Awaitable[Any]]
    ) -> dict[str, Any]:
        opts.calls.append(tool)
        try:
            target = await provider()
        except Exception as exc:
            raise ToolError(f"no deployment to talk to: {exc}") from exc
        try:
            acc = await access.authorize(target.admin, tool, write)
        except access.Refused as refused:
            await _audit(target, refused.access, tool, args, refused.short)
            raise ToolError(str(refused)) from None
        except ApiError as exc:
            raise ToolError(_explain(exc, target)) from None
        outcome = "ok"
        try:
            result: dict[str, Any] = await body(target, acc)
            return result
        except ToolError as exc:
            outcome = f"error: {exc}"
            raise
        except ApiError as exc:
            outcome = f"error: {exc}"
            raise ToolError(_explain(exc, target)) from None
        except OAError as exc:  # e.g. an owner that is no principal: the agent can fix it
            outcome = f"error: {exc.message}"
            raise ToolError(f"{exc.message} ({exc.code})") from None
        finally:
            if acc.audited:
                await _audit(target, acc, tool, args, outcome)

    async def _audit(
        target: Target, acc: access.Access, tool: str, args: dict[str, Any], outcome: str
    ) -> None:
        try:
            await access.record(target.admin, acc, tool, args, outcome)
        except ApiError as exc:
            raise ToolError(
                f"the production audit trail refused the record of this call ({exc}); nothing more runs"
            ) from None

    async def reader_of(t: Target, doc_key: str, owner: str) -> str:
        """Who to sign a runtime read as: the owner the agent named, else the owner Khala's
        summary names (so the agent can open what `runs`/`workers` just listed), else ours."""
        if owner:
            return principal_of(owner)
        try:
            doc = (await t.admin.call("GET", f"/documents/{doc_key}", params={"history": 0}))["document"]
        except ApiError:
            return opts.principal
        return principal_of(doc["owner_user"]) if doc.get("owner_user") else opts.principal

    def runtime_of(target: Target) -> RuntimeClient:
        if target.runtime is None:
            raise ToolError(
                "runtime tools need OA_RUNTIME_URL and a caller secret (OA_RUNTIME_CALLER_SECRET, or OA_HOME "
                "with runtime-caller.secret) in the env file that selects the deployment"
            )
        return target.runtime

    async def wait_for(target: Target, created: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + opts.wait_s
        req = created
        while req["status"] in ("pending", "running") and time.monotonic() < deadline:
            await asyncio.sleep(opts.poll_s)
            req = await target.admin.call("GET", f"/requests/{created['id']}")
        if req["status"] == "failed":
            raise ToolError(
                f"{req['kind']} failed in the projector: {(req.get('result') or {}).get('error')}"
            )
        if req["status"] != "done":
            req["note"] = f"still {req['status']} after {opts.wait_s:.0f}s (is the projector running?)"
        return req

    @server.tool(annotations=READ)
    async def status() -> dict[str, Any]:
        """The deployment: its class (dev/prod, as the deployment itself reports it), versions, topic heads and projector lag."""

        async def body(t: Target, acc: access.Access) -> dict[str, Any]:
            dep = await t.admin.deployment()
            grant = acc.grant
            return {
                "deployment": {"url": t.admin.base_url, "mode": t.mode, "class": dep["class"]},
                "versions": dep["versions"],
                "topics": dep["topics"],
                "journal_head": dep["journal_head"],
                "projector_lag": dep["projector"],
                "grant": grant,
                "warnings": list(t.warnings),
            }

        return await guarded("status", False, {}, body)

    @server.tool(annotations=READ)
    async def topics() -> dict[str, Any]:
        """Topics with retention, replay budget, heads and their schemas from proto/."""
        return await guarded("topics", False, {}, lambda t, _: t.admin.call("GET", "/topics"))

    @server.tool(annotations=READ)
    async def documents(
        topic: Annotated[str, Field(description="e.g. runtime.run_summaries", max_length=100)],
        prefix: Annotated[str, Field(description="doc key prefix", max_length=300)] = "",
        cursor: Cursor = "",
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """Live documents of a topic, by key prefix, one page at a time (follow next_cursor)."""
        args = {"topic": topic, "prefix": prefix, "cursor": cursor, "limit": limit}
        return await guarded(
            "documents", False, args, lambda t, _: t.admin.call("GET", "/documents", params=args)
        )

    @server.tool(annotations=READ)
    async def document(
        doc_key: Annotated[str, Field(description="e.g. runtime/run_summary:run-1", max_length=300)],
        history: Annotated[int, Field(ge=0, le=500, description="journal rows to include")] = 20,
    ) -> dict[str, Any]:
        """One live document with its journal history (newest first)."""
        return await guarded(
            "document",
            False,
            {"doc_key": doc_key, "history": history},
            lambda t, _: t.admin.call("GET", f"/documents/{doc_key}", params={"history": history}),
        )

    @server.tool(annotations=READ)
    async def runs(owner: Owner = "", cursor: Cursor = "", limit: Limit = 50) -> dict[str, Any]:
        """Runs, newest state each, from Khala's run summaries (derived); use `run` for the runtime's truth."""
        args = {"owner": owner, "cursor": cursor, "limit": limit}

        async def body(t: Target, _: access.Access) -> dict[str, Any]:
            page = await t.admin.call(
                "GET",
                "/documents",
                params={"topic": "runtime.run_summaries", "cursor": cursor, "limit": limit},
            )
            who = owner_of(principal_of(owner)) if owner else ""
            items = [d["payload"] for d in page["documents"] if not who or d["owner_user"] == who]
            return {"runs": items, "next_cursor": page["next_cursor"]}

        return await guarded("runs", False, args, body)

    @server.tool(annotations=READ)
    async def run(
        run_id: Annotated[str, Field(max_length=128)],
        owner: Owner = "",
        after_seq: Annotated[int, Field(ge=0, description="events after this seq")] = 0,
        limit: Annotated[int, Field(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """One run from the runtime API: its snapshot and a page of its events (follow next_after_seq)."""
        args = {"run_id": run_id, "owner": owner, "after_seq": after_seq, "limit": limit}

        async def body(t: Target, _: access.Access) -> dict[str, Any]:
            rt, who = runtime_of(t), await reader_of(t, f"runtime/run_summary:{run_id}", owner)
            snap = await rt.get(who, f"/internal/v1/runs/{run_id}/snapshot")
            events = await rt.get(
                who, f"/internal/v1/runs/{run_id}/events", {"after_seq": after_seq, "limit": limit}
            )
            return {"snapshot": snap, "events": events["events"], "next_after_seq": events["next_after_seq"]}

        return await guarded("run", False, args, body)

    @server.tool(annotations=READ)
    async def workers(
        owner: Owner = "",
        status: Annotated[str | None, Field(description="starting|running|stopping|stopped|failed")] = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """Codex workers of a principal, from the runtime API."""
        args = {"owner": owner, "status": status, "limit": limit}
        params: dict[str, Any] = {"limit": limit} | ({"status": status} if status else {})
        return await guarded(
            "workers",
            False,
            args,
            lambda t, _: runtime_of(t).get(
                principal_of(owner) if owner else opts.principal, "/internal/v1/codex/workers", params
            ),
        )

    @server.tool(annotations=READ)
    async def worker(worker_id: Annotated[str, Field(max_length=128)], owner: Owner = "") -> dict[str, Any]:
        """One Codex worker's snapshot (state, heartbeat freshness), from the runtime API."""

        async def body(t: Target, _: access.Access) -> dict[str, Any]:
            who = await reader_of(t, f"runtime/codex_worker_summary:{worker_id}", owner)
            snap: dict[str, Any] = await runtime_of(t).get(
                who, f"/internal/v1/codex/workers/{worker_id}/snapshot"
            )
            return snap

        return await guarded("worker", False, {"worker_id": worker_id, "owner": owner}, body)

    @server.tool(annotations=READ)
    async def audit() -> dict[str, Any]:
        """Parity check: every live document against a fresh fold of the runtime journal (reports only)."""

        async def body(t: Target, _: access.Access) -> dict[str, Any]:
            return await wait_for(t, await t.admin.call("POST", "/requests", json={"kind": "audit"}))

        return await guarded("audit", False, {}, body)

    @server.tool(annotations=READ)
    async def errors(limit: Limit = 50) -> dict[str, Any]:
        """Recent projector errors and projections stopped on an error."""
        return await guarded(
            "errors",
            False,
            {"limit": limit},
            lambda t, _: t.admin.call("GET", "/errors", params={"limit": limit}),
        )

    @server.tool(annotations=WRITE)
    async def rebuild() -> dict[str, Any]:
        """Rebuild every projection from the runtime journal (blue/green, clients stay connected). Write."""

        async def body(t: Target, acc: access.Access) -> dict[str, Any]:
            gid = acc.grant["id"] if acc.grant else None
            return await wait_for(
                t, await t.admin.call("POST", "/requests", json={"kind": "rebuild", "grant_id": gid})
            )

        return await guarded("rebuild", True, {}, body)

    @server.tool(annotations=WRITE)
    async def prune(
        topic: Annotated[
            str,
            Field(
                description="the topic whose journal to prune (the `topics` tool lists them)", max_length=100
            ),
        ] = "",
        retention_s: Annotated[
            int | None,
            Field(ge=0, description="keep only this many seconds (never more than the topic's retention)"),
        ] = None,
    ) -> dict[str, Any]:
        """Prune a topic's stream journal beyond its retention and replay budget; raises its retention floor. Write."""
        args = {"topic": topic, "retention_s": retention_s}

        async def body(t: Target, acc: access.Access) -> dict[str, Any]:
            if not topic:
                names = [x["name"] for x in (await t.admin.call("GET", "/topics"))["topics"]]
                raise ToolError(
                    f'prune needs a topic: give one of {", ".join(names)}, e.g. {{"topic": "{names[0]}"}}'
                )
            gid = acc.grant["id"] if acc.grant else None
            return await wait_for(
                t, await t.admin.call("POST", "/requests", json={"kind": "prune", **args, "grant_id": gid})
            )

        return await guarded("prune", True, args, body)

    return server


def principal_of(owner: str) -> str:
    """What `runs` reports (`alice`, `service:codex`) as a principal `run` can sign as."""
    return owner if ":" in owner else f"user:{owner}"


def owner_of(principal: str) -> str:
    """`user:alice` -> `alice`, as run summaries name owners; other principals stay whole."""
    return principal.removeprefix("user:")


def _explain(exc: ApiError, target: Target) -> str:
    if exc.code == "unreachable":
        return f"cannot reach the deployment: {exc.message}"
    if exc.status == 401:
        return f"the deployment refused the admin key ({exc.message}); check KHALA_SELF_HOSTED_ADMIN_KEY"
    return f"{exc.message} ({exc.status} {exc.code})"
