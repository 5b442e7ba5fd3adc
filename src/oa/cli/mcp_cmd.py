"""`oa mcp ...`: the agent's MCP server, the production-access gate, the audit trail."""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from oa.agent import gate as gate_rules
from oa.agent.clients import AdminClient, ApiError
from oa.agent.selection import Selection, SelectionError, SelfHosted, env_files, load_env, select

app = typer.Typer(
    help="Constrained agent mode: MCP server, production-access gate, audit.", no_args_is_help=True
)
err = Console(stderr=True)

EnvFile = Annotated[
    Path | None,
    typer.Option("--env-file", help="Env file selecting the deployment (default: .env.local, then .env)."),
]


def _selection(env_file: Path | None) -> tuple[Selection, dict[str, str]]:
    try:
        env = load_env(env_files(Path.cwd(), env_file), os.environ)
        return select(env), env
    except SelectionError as exc:
        err.print(f"[red]deployment selection refused:[/] {exc}")
        raise typer.Exit(2) from None


def _selected(env_file: Path | None, what: str) -> SelfHosted:
    sel, _ = _selection(env_file)
    if not isinstance(sel, SelfHosted):
        err.print(
            f"[red]{what} needs a selected deployment[/]: set KHALA_SELF_HOSTED_URL and KHALA_SELF_HOSTED_ADMIN_KEY "
            "(in --env-file, .env.local or .env) and unset KHALA_AGENT_MODE"
        )
        raise typer.Exit(2)
    return sel


@app.command()
def stop() -> None:
    """Stop the anonymous agent deployment (.oa/agent) now; it also stops by itself after
    OA_AGENT_IDLE_EXIT_S (default 900) seconds without an MCP server using it."""
    from oa.agent import anonymous

    home = anonymous.agent_home(Path.cwd())
    if anonymous.stop(home):
        err.print(f"stopped the anonymous agent deployment in {home}")
    else:
        err.print(f"no anonymous agent deployment is running in {home}")


@app.command()
def start(
    env_file: EnvFile = None,
    http: Annotated[
        bool, typer.Option("--http", help="Streamable HTTP on 127.0.0.1 instead of stdio.")
    ] = False,
    port: Annotated[int, typer.Option(help="HTTP port (0: any free one).")] = 8790,
    principal: Annotated[
        str, typer.Option(envvar="OA_MCP_PRINCIPAL", help="Who runtime reads are signed as.")
    ] = ("user:agent"),
) -> None:
    """Serve the MCP tools (stdio by default; logs go to stderr, never stdout)."""
    from oa.agent.server import Options, build_server, provider_for

    sel, _ = _selection(env_file)
    for warning in sel.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    provider = provider_for(sel, Path.cwd())
    options = Options(principal=principal)
    if not http:
        asyncio.run(build_server(provider, options).run_stdio_async())
        return
    import uvicorn

    from oa.agent.http import LOOPBACK, http_app
    from oa.cli.serve import pick_port
    from oa.deployment import LocalDeployment

    token = os.environ.get("OA_MCP_HTTP_TOKEN", "").strip()
    if not token:
        token_file = LocalDeployment.from_env().home / "mcp-http.token"
        if not token_file.exists():
            token_file.parent.mkdir(parents=True, exist_ok=True)
            token_file.touch(mode=0o600)
            token_file.write_text(secrets.token_urlsafe(32))
        token = token_file.read_text().strip()
        err.print(f"bearer token in {token_file}")
    bound = pick_port(LOOPBACK, port)
    err.print(f"MCP (streamable HTTP) on http://{LOOPBACK}:{bound}/mcp")
    uvicorn.run(http_app(provider, bound, token, options), host=LOOPBACK, port=bound, log_level="warning")


@app.command()
def gate(
    env_file: EnvFile = None,
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Revoke every live grant on the deployment.")
    ] = False,
    scope: Annotated[str, typer.Option(help="read, or write (rebuild/prune).")] = "read",
) -> None:
    """Request temporary MCP access to a production deployment (change-controlled, audited)."""
    if revoke:
        dep = _selected(env_file, "oa mcp gate --revoke")
        body = _admin_call(AdminClient(dep.url, dep.admin_key), "DELETE", "/grants")
        print(f"MCP production access revoked: {body['revoked']} live grant(s) on {dep.url}")
        return
    if scope not in ("read", "write"):
        raise typer.BadParameter("--scope is read or write")
    _, env = _selection(env_file)
    verdict = gate_rules.evaluate(env, datetime.now(UTC))
    if isinstance(verdict, gate_rules.Denied):
        print(verdict.message, file=sys.stderr)
        raise typer.Exit(1)
    dep = _selected(env_file, "oa mcp gate")
    requester = env.get("OA_MCP_PROD_REQUESTER") or getpass.getuser()
    grant_scope: Literal["read", "write"] = "write" if scope == "write" else "read"
    try:
        body = asyncio.run(
            AdminClient(dep.url, dep.admin_key).call(
                "POST",
                "/grants",
                json={
                    "ticket": verdict.ticket,
                    "reason": verdict.reason,
                    "requester": requester,
                    "scope": grant_scope,
                    "ttl_minutes": verdict.ttl_minutes,
                },
            )
        )
    except ApiError as exc:
        print(
            f"MCP production access denied: the deployment did not record the grant ({exc})", file=sys.stderr
        )
        raise typer.Exit(1) from None
    g = body["grant"]
    for line in gate_rules.approval_lines(
        g["ticket"], g["reason"], _parse(g["created_at"]), _parse(g["expires_at"])
    ):
        print(line)
    print(
        f"Scope: {g['scope']} (grant {g['id']}, requester {g['requester']}); revoke with `oa mcp gate --revoke`"
    )


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _admin_call(client: AdminClient, method: str, path: str, **kw: Any) -> Any:
    try:
        return asyncio.run(client.call(method, path, **kw))
    except ApiError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


@app.command("audit")
def audit_trail(
    env_file: EnvFile = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    grants: Annotated[bool, typer.Option("--grants", help="List grants instead of calls.")] = False,
) -> None:
    """The MCP audit trail of the selected deployment (newest first)."""
    dep = _selected(env_file, "oa mcp audit")
    client = AdminClient(dep.url, dep.admin_key)
    console = Console()
    if grants:
        body = _admin_call(client, "GET", "/grants", params={"limit": limit})
        table = Table("id", "ticket", "scope", "requester", "expires at", "state", title="grants")
        for g in body["grants"]:
            state = "live" if g["live"] else ("revoked" if g["revoked_at"] else "expired")
            table.add_row(str(g["id"]), g["ticket"], g["scope"], g["requester"], g["expires_at"], state)
        console.print(table)
        return
    body = _admin_call(client, "GET", "/mcp-audit", params={"limit": limit})
    table = Table("at", "ticket", "tool", "args sha256", "outcome", title="MCP calls on this deployment")
    for e in body["entries"]:
        table.add_row(e["at"], e["ticket"] or "-", e["tool"], e["args_digest"][:12], e["outcome"])
    console.print(table)
