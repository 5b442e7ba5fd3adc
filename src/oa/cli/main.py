"""`oa`: run the system, migrate, mint caller tokens, poke at runs, run benchmarks."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvloop
from rich.console import Console
from rich.table import Table

from oa.bootstrap import services
from oa.bootstrap.khala_processes import KhalaProcesses, prespawn
from oa.cli import (
    account_cmd,
    bench_cmd,
    control_cmd,
    khala_cmd,
    mcp_cmd,
    replay_cmd,
    runs_cmd,
    spend_cmd,
    workers_cmd,
)
from oa.cli.identity import Identity, acting_as
from oa.cli.idle import stop_when_idle
from oa.cli.runtime_client import sign_as
from oa.cli.serve import (
    Listening,
    control_server,
    pick_port,
    prepare_database,
    runtime_server,
    serve_all,
)
from oa.deployment import DeploymentRunning, LocalDeployment
from oa.runtime.signing import load_or_create_secret

app = typer.Typer(
    help="OpenAgents: runtime (authority), Khala sync, control, agent mode.", no_args_is_help=True
)
token_app = typer.Typer(help="Mint short-lived tokens for the local deployment.", no_args_is_help=True)
serve_app = typer.Typer(
    help="Run one server in the foreground (for tests and operators).", no_args_is_help=True
)
app.add_typer(token_app, name="token")
app.add_typer(serve_app, name="serve")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(runs_cmd.app, name="runs")
app.add_typer(workers_cmd.app, name="workers")
app.command("login")(account_cmd.login)
app.command("logout")(account_cmd.logout)
app.command("whoami")(account_cmd.whoami)
token_app.command("sync")(account_cmd.token_sync)
app.add_typer(khala_cmd.app, name="khala")
app.add_typer(control_cmd.app, name="control")
app.add_typer(mcp_cmd.app, name="mcp")
app.add_typer(spend_cmd.app, name="spend")
app.add_typer(replay_cmd.app, name="replay")
console = Console()

Host = Annotated[str, typer.Option(envvar="OA_HOST", help="Interface to bind.")]


@app.command()
def run(
    host: Host = "127.0.0.1",
    runtime_port: Annotated[int, typer.Option(envvar="OA_RUNTIME_PORT")] = 8787,
    control_port: Annotated[int, typer.Option(envvar="OA_CONTROL_PORT")] = 8788,
    khala_port: Annotated[int, typer.Option(envvar="OA_KHALA_PORT")] = 8789,
    khala_workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            envvar="OA_KHALA_WORKERS",
            help="Khala processes sharing its port (each its own process, apart from the runtime's).",
        ),
    ] = 1,
    idle_exit_s: Annotated[
        float, typer.Option(hidden=True, help="Stop after this long without an agent holding --idle-lock.")
    ] = 0,
    idle_lock: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Start the whole system on the embedded Postgres (or OA_DATABASE_URL) until Ctrl-C.

    One deployment per OA_HOME: a second `oa run` there refuses, naming the first one."""
    dep = LocalDeployment.from_env()
    try:
        with dep.claim():
            idle = (idle_lock, idle_exit_s) if idle_lock is not None and idle_exit_s > 0 else None
            _run(dep, host, runtime_port, control_port, khala_port, khala_workers, idle)
    except DeploymentRunning as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


def _run(
    dep: LocalDeployment,
    host: str,
    runtime_port: int,
    control_port: int,
    khala_port: int,
    khala_workers: int = 1,
    idle: tuple[Path, float] | None = None,
) -> None:
    """Runtime, control and the projector in this process's loop; Khala in `khala_workers`
    processes of its own on one port (`oa.bootstrap.khala_processes`): a deep replay by a
    few clients no longer slows the runtime's appends, and a Khala process that dies is
    restarted while the runtime keeps serving."""
    early = prespawn(khala_workers)  # they import while Postgres starts
    with console.status("starting Postgres and applying migrations"):
        url = prepare_database(dep)
    port = pick_port(host, runtime_port)
    runtime = runtime_server(url, dep, host, port)
    listening = [Listening("runtime /internal/v1", f"http://{host}:{port}")]
    cport = pick_port(host, control_port if control_port != port else 0)
    kport = pick_port(host, khala_port if khala_port not in (port, cport) else 0)
    taken = [
        f"{name} port {wanted} is taken (another program or deployment): using {got}"
        for name, wanted, got in (("runtime", runtime_port, port), ("control", control_port, cport),
                                  ("khala", khala_port, kport))
        if wanted and wanted != got
    ]  # fmt: skip
    # The dashboard Khala serves signs in to this control from Khala's origin (CORS).
    origins = [f"http://{host}:{kport}"] + ([f"http://localhost:{kport}"] if host == "127.0.0.1" else [])
    control_url = f"http://{host}:{cport}"
    control = control_server(url, dep, host, cport, cors_origins=tuple(origins))
    listening.append(Listening("control /api (auth, sync tokens, JWKS)", control_url))
    khala_url = f"http://{host}:{kport}"
    admin_key = load_or_create_secret(dep.home / "khala-admin.key").decode()
    # Control's URL reaches Khala (its JWKS, its revocations, the dashboard's config.json)
    # as a setting, never through this process's environment.
    khala_settings = khala_cmd.khala_settings(
        url, host=host, port=kport, workers=khala_workers, control_url=control_url, admin_key=admin_key
    )
    listening.append(Listening("khala sync (WebSocket /sync/v1/ws)", khala_url))
    listening.append(Listening("dashboard", f"{khala_url}/dashboard/"))

    def ready() -> None:
        table = Table(title="OpenAgents is running (Ctrl-C stops it)")
        table.add_column("what")
        table.add_column("where")
        for item in listening:
            table.add_row(item.name, item.url)
        table.add_row("OpenAPI", f"{listening[0].url}/openapi.json")
        table.add_row(
            "Postgres",
            url if os.environ.get("OA_DATABASE_URL") else f"embedded, data in {dep.home / 'pgdata'}",
        )
        table.add_row("clients read", str(dep.env_file))
        console.print(table)
        for line in taken:
            console.print(f"[yellow]note[/]: {line}; clients find it in {dep.env_file}")
        console.print(
            "next: [bold]oa control user add EMAIL[/], [bold]oa login --email EMAIL[/], "
            f"then open [bold]{khala_url}/dashboard/[/] (README: Using it)"
        )
        # The banner is out before deployment.env appears: the file is what clients (and
        # tests) wait for, so whatever it names has already been said on the terminal.
        sys.stdout.flush()
        dep.write_env(
            {
                "OA_RUNTIME_URL": listening[0].url,
                "OA_CONTROL_URL": control_url,
                "OA_KHALA_URL": khala_url,
                "KHALA_SELF_HOSTED_URL": khala_url,
                "KHALA_SELF_HOSTED_ADMIN_KEY": admin_key,
                "OA_DATABASE_URL": url,
                "OA_HOME": str(dep.home),
                "OA_PID": str(os.getpid()),
            }
        )

    async def everything() -> None:
        khala = KhalaProcesses(
            khala_settings,
            prespawned=early,
            report=lambda line: console.print(f"[yellow]{line}[/]", soft_wrap=True),
        )
        khala.start()  # first: its processes import and bind while this one starts the rest
        # The projector (Khala's only writer) runs beside the servers; it holds a leader
        # lock, so a second `oa run` on the same database waits as a standby.
        projector = services.projector(url)
        projector.start()
        watcher = asyncio.create_task(stop_when_idle(*idle)) if idle else None

        async def all_ready() -> None:
            await khala.wait_ready()
            ready()

        try:
            await serve_all([runtime, control], on_ready=all_ready, companion=khala.watch())
        finally:
            if watcher is not None:
                watcher.cancel()
            await khala.stop()
            await projector.stop()

    uvloop.run(everything())


@app.command()
def migrate() -> None:
    """Apply pending migrations (forward-only; safe to run twice or concurrently)."""
    from oa.store.migrator import current_revision

    dep = LocalDeployment.from_env()
    url = prepare_database(dep)
    console.print(f"schema at [bold]{current_revision(url)}[/]")


@serve_app.command("runtime")
def serve_runtime(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OA_RUNTIME_PORT")] = 8787,
    pool_size: Annotated[int, typer.Option(help="Postgres pool size.")] = 10,
    skip_migrate: Annotated[bool, typer.Option(help="Assume the schema is at head.")] = False,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Processes sharing the port.")] = 1,
    reuse_port: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Serve only the runtime API (OA_DATABASE_URL or the embedded Postgres)."""
    dep = LocalDeployment.from_env()
    if skip_migrate:
        from oa.store import resolve_database_url

        url = resolve_database_url(dep.home)
    else:
        url = prepare_database(dep)
    if workers > 1:
        _serve_workers(workers, host, port, pool_size)
        return
    server = runtime_server(url, dep, host, port, pool_size=pool_size)
    server.reuse_port = reuse_port
    uvloop.run(
        serve_all([server], on_ready=lambda: print(f"runtime listening on http://{host}:{port}", flush=True))
    )


def _serve_workers(workers: int, host: str, port: int, pool_size: int) -> None:
    """Start `workers` runtime processes on one port (SO_REUSEPORT) and wait for them."""
    import signal
    import subprocess

    cmd = [sys.executable, "-m", "oa.cli.main", "serve", "runtime", "--host", host, "--port", str(port)]
    cmd += ["--pool-size", str(pool_size), "--skip-migrate", "--reuse-port"]
    children = [subprocess.Popen(cmd) for _ in range(workers)]

    def forward(sig: int, _frame: object) -> None:
        for c in children:
            c.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [c.wait() for c in children]
    raise SystemExit(max(codes))


@token_app.command("runtime")
def token_runtime(
    user: Annotated[
        str | None,
        typer.Option(help="Operators: user id, the principal becomes user:ID (default: oa login's)."),
    ] = None,
    principal: Annotated[str | None, typer.Option(help="A full principal, e.g. service:codex.")] = None,
    ttl: Annotated[int, typer.Option(min=1, max=900, help="Seconds the signature lives.")] = 300,
    org: Annotated[
        str | None,
        typer.Option(help="Act for this org (id or name); checked against control's memberships."),
    ] = None,
) -> None:
    """Print a short-lived X-OA-RUNTIME-SIGNATURE for the local deployment (default: as the
    account `oa login` signed in to, in its org; --user/--principal are for operators, and
    their --org is checked against control's memberships)."""
    if user is not None and principal is not None:
        raise typer.BadParameter("give at most one of --user or --principal")
    operator = principal or user
    if operator is None:
        who = acting_as(None, org)
    else:
        who = acting_as(operator)
        if org is not None:
            who = Identity(who.principal, _org_for(who.principal, org))
    print(sign_as(who, ttl))


def _org_for(principal: str, org: str) -> str:
    """The org id `principal` may act for, as control's memberships say (else exit 1)."""
    from oa.control.service.accounts import org_for
    from oa.exceptions import OAError
    from oa.store.database import Database

    url = prepare_database(LocalDeployment.from_env())

    async def check() -> str:
        db = await Database.connect(url, min_size=1, max_size=1)
        try:
            return await org_for(db, principal, org)
        finally:
            await db.close()

    try:
        return uvloop.run(check())
    except OAError as exc:
        Console(stderr=True).print(f"[red]refused ({exc.code}):[/] {exc.message}")
        raise typer.Exit(1) from None


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
