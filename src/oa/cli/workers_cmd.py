"""`oa workers list|show|stream`: Codex workers from a terminal, as the signed-in account."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from oa.cli.runs_cmd import User, events_table, follow
from oa.cli.runtime_client import client, fail

app = typer.Typer(help="List, show and follow Codex workers.", no_args_is_help=True)
console = Console()
WORKERS = "/internal/v1/codex/workers"


@app.command("list")
def list_workers(
    status: Annotated[str | None, typer.Option(help="Only workers in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    user: User = None,
) -> None:
    """Your workers with their status and heartbeat freshness."""
    params: dict[str, str | int] = {"limit": limit, **({"status": status} if status else {})}
    with client(user) as c:
        resp = c.get(WORKERS, params=params)
    if resp.status_code >= 400:
        fail(resp)
    workers = resp.json()["workers"]
    if not workers:
        console.print(
            "no workers yet: a Codex worker host registers one with POST /internal/v1/codex/workers"
        )
        return
    table = Table("worker", "status", "heartbeat", "age s", "run", "workspace", "last seq")
    for w in workers:
        age = w["heartbeat_age_ms"]
        table.add_row(
            w["worker_id"], w["status"], w["heartbeat_state"], "-" if age is None else f"{age / 1000:.1f}",
            w["run_id"] or "-", w["workspace_ref"] or "-", str(w["last_seq"]),
        )  # fmt: skip
    console.print(table)


@app.command()
def show(worker_id: str, user: User = None) -> None:
    """Show a worker's snapshot and its events."""
    with client(user) as c:
        snap = c.get(f"{WORKERS}/{worker_id}/snapshot")
        if snap.status_code >= 400:
            fail(snap)
        w = snap.json()
        console.print(
            f"[bold]{worker_id}[/] {w['status']}  heartbeat {w['heartbeat_state']}  "
            f"last_seq {w['last_seq']}  owner {w['owner']}"
        )
        console.print(events_table(c, f"{WORKERS}/{worker_id}"))


@app.command()
def stream(worker_id: str, cursor: int = 0, user: User = None) -> None:
    """Follow a worker's events live (SSE) until Ctrl-C."""
    with client(user, timeout=None) as c:
        follow(c, f"{WORKERS}/{worker_id}", cursor)
