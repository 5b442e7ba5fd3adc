"""`oa khala ...`: serve, project, status, rebuild, audit, watch."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import orjson
import typer
import uvloop
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from oa.deployment import LocalDeployment, port_open
from oa.khala.settings import KhalaSettings
from oa.khala.store import reader
from oa.khala.sync.bus_settings import BusSettings
from oa.khala.sync.node import Node
from oa.khala.topics import TOPICS
from oa.runtime.projector.projector import Projector, lag
from oa.runtime.projector.rebuild import audit as run_audit
from oa.runtime.projector.rebuild import rebuild as run_rebuild
from oa.store.database import with_user

app = typer.Typer(
    help="Khala: the sync layer (derived read models, live subscriptions).", no_args_is_help=True
)
console = Console()

WRITER_ROLE = "oa_khala_writer"
READER_ROLE = "oa_khala_reader"


def database_url() -> str:
    from oa.cli.serve import database_url as deployment_database

    return deployment_database(LocalDeployment.from_env())


def khala_settings(database_url: str, **flags: object) -> KhalaSettings:
    """KhalaSettings from the environment (README: Configuration) and the command's flags
    (those not None win); a bad value exits saying which."""
    overrides = {k: v for k, v in flags.items() if v is not None}
    try:
        return KhalaSettings.from_env(
            os.environ, database_url=database_url, home=LocalDeployment.from_env().home, **overrides
        )
    except ValueError as exc:
        raise SystemExit(f"oa khala serve: {exc}") from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="OA_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OA_KHALA_PORT")] = 8789,
    workers: Annotated[
        int,
        typer.Option(min=1, max=64, help="Processes sharing the port (SO_REUSEPORT), each with its own hub."),
    ] = 1,
    node_id: Annotated[
        str | None,
        typer.Option(
            envvar="OA_KHALA_NODE_ID",
            help="This node's name in `oa khala status` and the metrics (default <host>-<pid>); "
            "with --workers each process is <id>.<n>.",
        ),
    ] = None,
    node_port: Annotated[
        int,
        typer.Option(
            help="With --workers: process n also listens on NODE_PORT+n (its metrics, its status); "
            "0 = any free port."
        ),
    ] = 0,
) -> None:
    """Serve only the sync server (the projector runs inside the runtime, or `oa khala project`)."""
    from oa.bootstrap.khala_processes import KhalaProcesses, serve_node
    from oa.bootstrap.servers import serve_all
    from oa.cli.serve import pick_port

    if workers > 1 and port == 0:
        port = pick_port(host, 0)
    settings = khala_settings(
        database_url(), host=host, port=port, workers=workers, node_id=node_id, node_port=node_port
    )
    if workers == 1:

        def listening(node: Node) -> None:
            print(f"khala listening on {node.url} (node {node.id}, pid {node.pid})", flush=True)

        uvloop.run(serve_node(settings, 1, listening))
        return

    processes = KhalaProcesses(
        settings, report=lambda line: console.print(f"[yellow]{line}[/]", soft_wrap=True)
    )

    async def ready() -> None:
        nodes = await processes.wait_ready()
        print(f"khala listening on {settings.url} ({len(nodes)} processes)", flush=True)
        for n in nodes:
            print(f"  node {n['id']} pid {n['pid']} at {n['url']}", flush=True)

    async def main() -> None:
        processes.start()
        try:
            await serve_all([], on_ready=ready, companion=processes.watch())
        finally:
            await processes.stop()

    uvloop.run(main())


@app.command()
def relay() -> None:
    """Publish each committed batch to NATS JetStream once, for nodes with OA_KHALA_BUS=nats.

    Run one (or two: JetStream drops a batch published twice). `OA_KHALA_NATS_URL` and
    `OA_KHALA_BUS_SUBJECT` as for the nodes.
    """
    from oa.khala.sync.bus import Relay

    try:
        settings = BusSettings.from_env({**os.environ, "OA_KHALA_BUS": "nats"})
    except ValueError as exc:
        raise SystemExit(f"oa khala relay: {exc}") from None
    assert settings is not None  # OA_KHALA_BUS=nats always gives one
    relay = Relay(with_user(database_url(), READER_ROLE), settings.url, settings.subject)
    uvloop.run(relay.run(ready=lambda: print(f"khala relay publishing to {settings.subject}", flush=True)))


@app.command()
def project() -> None:
    """Run only the projector (it waits as a standby while another one leads)."""

    async def main() -> None:
        projector = Projector(with_user(database_url(), WRITER_ROLE))
        projector.start()
        print("projector started", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


@app.command()
def status() -> None:
    """The Khala nodes that are up, projector lag per projection (events and seconds), and
    topic heads."""

    async def main() -> None:
        url = database_url()
        console.print(await _nodes_table(url))
        conn = await asyncpg.connect(with_user(url, WRITER_ROLE))
        try:
            table = Table(
                "projection",
                "version",
                "state",
                "position",
                "events behind",
                "seconds behind",
                "error",
                title="projector",
            )
            for name, row in (await lag(conn)).items():
                secs = row["seconds_behind"]
                state = str(row["state"])
                if state == "catching_up":  # catching up N/M: the build's position / journal head
                    state = f"catching up {row['build_position']}/{row['journal_head']}"
                table.add_row(
                    name,
                    f"v{row['version']}"
                    + (
                        f" (stored v{row['stored_version']})"
                        if row["stored_version"] not in (None, row["version"])
                        else ""
                    ),
                    state,
                    str(row["position"]),
                    str(row["events_behind"]),
                    f"{secs:.2f}" if isinstance(secs, float) else "-",
                    str(row["error"] or ""),
                )
            console.print(table)
            t2 = Table("topic", "head watermark", "retention floor", title="topics")
            for topic, (head, floor) in sorted((await reader.heads(conn)).items()):
                t2.add_row(topic, str(head), str(floor))
            console.print(t2)
        finally:
            await conn.close()

    uvloop.run(main())


async def _nodes_table(url: str) -> Table:
    """Every node connected to this database (pg_stat_activity, as the nodes' own role), with
    its pid and subscribers from its own `/sync/v1/status` when the admin key is at hand."""
    import httpx

    from oa.khala.store.nodes import live_nodes

    conn = await asyncpg.connect(with_user(url, READER_ROLE))
    try:
        seen = await live_nodes(conn)
    finally:
        await conn.close()
    dep = LocalDeployment.from_env()
    key = os.environ.get("KHALA_SELF_HOSTED_ADMIN_KEY") or dep.read_env().get("KHALA_SELF_HOSTED_ADMIN_KEY")

    async def ask(client: httpx.AsyncClient, node_url: str) -> dict[str, Any]:
        if not key:
            return {}
        try:
            resp = await client.get(f"{node_url}/sync/v1/status", headers={"Authorization": f"Bearer {key}"})
            return dict(resp.json()) if resp.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return {}

    async with httpx.AsyncClient(timeout=2.0) as client:
        answers = await asyncio.gather(*(ask(client, n.url) for n in seen))
    table = Table(
        "node", "url", "pid", "since", "sockets", "live queries", "pg connections", title="khala nodes"
    )
    for n, a in zip(seen, answers, strict=True):
        node = a.get("node") or {}
        table.add_row(
            n.node_id,
            n.url,
            str(node.get("pid", "-")),
            n.since.astimezone().strftime("%Y-%m-%d %H:%M:%S") if n.since else "-",
            str(a.get("sessions", "-")),
            str(a.get("live_queries", "-")),
            str(n.connections),
        )
    table.caption = f"{len(seen)} up" + (
        "" if key else " (set KHALA_SELF_HOSTED_ADMIN_KEY for pid and sockets)"
    )
    return table


def _progress(label: str) -> Progress:
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )


@app.command()
def rebuild(batch: Annotated[int, typer.Option(help="Events per transaction.")] = 5000) -> None:
    """Build a new generation beside the live one, check parity, switch atomically, drop the old."""

    async def main() -> None:
        conn = await asyncpg.connect(with_user(database_url(), WRITER_ROLE))
        try:
            with _progress("rebuilding") as bar:
                task = bar.add_task("fold", total=None)
                report = await run_rebuild(
                    conn, lambda done, head: bar.update(task, completed=done, total=head), batch
                )
        finally:
            await conn.close()
        console.print(
            f"rebuilt {report.documents} documents from {report.events} events; drift repaired: {len(report.drift)}"
        )
        for key in report.drift[:20]:
            console.print(f"  drift: {key}")

    uvloop.run(main())


@app.command()
def audit() -> None:
    """Compare every live document with a fresh fold of the journal; report drift by key."""

    async def main() -> int:
        conn = await asyncpg.connect(with_user(database_url(), WRITER_ROLE))
        try:
            with _progress("auditing") as bar:
                task = bar.add_task("fold", total=None)
                report = await run_audit(
                    conn, lambda done, head: bar.update(task, completed=done, total=head)
                )
        finally:
            await conn.close()
        console.print(
            f"audited {report.documents} documents against {report.events} events: {len(report.drift)} drifted"
        )
        for key in report.drift[:50]:
            console.print(f"  drift: {key}")
        return 1 if report.drift else 0

    raise typer.Exit(uvloop.run(main()))


def live_scope(
    doc: str | None, run: str | None, where: list[str], limit: int | None
) -> dict[str, Any] | None:
    """The live-query scope the watch flags name (None: the whole topic)."""
    if sum(x is not None for x in (doc, run)) + bool(where or limit is not None) > 1:
        raise typer.BadParameter("use one of --doc, --run, or --where/--limit (a list)")
    if doc is not None:
        return {"doc_key": doc}
    if run is not None:
        return {"stream": run}
    if not where and limit is None:
        return None
    filters: dict[str, str] = {}
    for item in where:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--where takes FIELD=VALUE, not {item!r}")
        filters[name] = value
    return {"where": filters, "limit": 50 if limit is None else limit}


@app.command()
def watch(
    topic: Annotated[str, typer.Argument(help=f"One of: {', '.join(TOPICS)}")],
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding a sync token (else OA_SYNC_TOKEN, else `oa login`'s account)."),
    ] = None,
    doc: Annotated[str | None, typer.Option("--doc", help="Watch one document (its doc key).")] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Watch every document of one run (or worker) in the topic.")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Watch a list: FIELD=VALUE equality filter (repeatable)."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Watch a list of at most N documents.")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON line per applied change: sub, op, doc_key, doc_version, payload."
        ),
    ] = False,
) -> None:
    """Print live updates of a topic (hydrates first, then follows), or of a live query
    (--doc, --run, --where/--limit): only what that scope matches."""
    from oa.cli.identity import acting_as
    from oa.cli.runtime_client import control, fail
    from oa.khala.client import KhalaClient

    if topic not in TOPICS:
        raise typer.BadParameter(f"unknown topic; use one of {', '.join(TOPICS)}")
    scope = live_scope(doc, run, where or [], limit)
    dep = LocalDeployment.from_env()
    endpoint = dep.endpoint("KHALA_URL", "KHALA_SELF_HOSTED_URL", "OA_KHALA_URL")
    if not port_open(endpoint.url):
        raise SystemExit(dep.unreachable("Khala", endpoint))

    async def token() -> str:
        if token_file is not None:
            return token_file.read_text().strip()
        value = os.environ.get("OA_SYNC_TOKEN")
        if value:
            return value
        # The signed-in account (`oa login`): a fresh token from control at every (re)connect.
        session = acting_as(None).session
        assert session is not None
        with control(session.control_url, session.session_token) as c:
            resp = c.post("/api/sync/token")
        if resp.status_code >= 400:
            fail(resp)
        return str(resp.json()["token"])

    def show(key: str, payload: dict[str, object] | None) -> None:
        console.print(f"[bold]{key}[/] {payload}")

    def show_change(change: dict[str, Any]) -> None:
        if as_json:
            print(orjson.dumps(change).decode(), flush=True)
        else:
            console.print(
                f"[bold]{change['op']} {change['doc_key']}[/] v{change['doc_version']} {change['payload']}"
            )

    async def main() -> None:
        if scope is None:
            async with KhalaClient(endpoint.url, token, [topic], on_change=show):
                await asyncio.Event().wait()
            return
        async with KhalaClient(endpoint.url, token, []) as kc:
            view = kc.watch("watch", topic, scope)
            view.on_change(show_change)
            while True:  # a refused scope is a clear error, not a silent wait
                await asyncio.sleep(0.1)
                if view.errors and view.errors[-1].get("code") != "stale_cursor":
                    err = view.errors[-1]
                    raise SystemExit(f"{err.get('code')}: {err.get('message')}")

    uvloop.run(main())
