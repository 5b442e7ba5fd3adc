"""`oa runs append|show|stream`: the runtime API from a terminal, as the signed-in account.

`oa workers` (workers_cmd.py) shows workers with the same helpers: both kinds of stream are
paged with `after_seq` and followed over SSE.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from oa.cli.runtime_client import DeploymentClient, client, fail

app = typer.Typer(
    help="Append to, show and follow runs (as the account `oa login` signed in to).", no_args_is_help=True
)
console = Console()
User = Annotated[
    str | None,
    typer.Option("--user", help="Operators: act as user:ID (default: the account `oa login` signed in to)."),
]
RUNS = "/internal/v1/runs"


def events_table(c: DeploymentClient, base: str) -> Table:
    """Every event of a run or worker (`base` is its URL path), paged 1,000 at a time."""
    table = Table("seq", "type", "payload", "hash")
    after = 0
    while True:
        resp = c.get(f"{base}/events", params={"after_seq": after, "limit": 1000})
        if resp.status_code >= 400:
            fail(resp)
        page = resp.json()
        for ev in page["events"]:
            table.add_row(str(ev["seq"]), ev["event_type"], json.dumps(ev["payload"])[:60], ev["hash"][:12])
        if not page["events"]:
            return table
        after = page["next_after_seq"]


def follow(c: DeploymentClient, base: str, cursor: int) -> None:
    """Print a run's or worker's events live (SSE) until the server ends the stream."""
    with c.stream("GET", f"{base}/stream", params={"cursor": cursor}, timeout=None) as resp:
        if resp.status_code >= 400:
            resp.read()
            fail(resp)
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: {}":
                ev: dict[str, Any] = json.loads(line[6:])
                console.print(f"{ev['seq']:>6} {ev['event_type']:<22} {json.dumps(ev['payload'])[:80]}")


@app.command()
def append(
    run_id: str,
    event_type: str,
    payload: Annotated[str, typer.Option(help="JSON object.")] = "{}",
    key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    user: User = None,
) -> None:
    """Append one event to RUN_ID."""
    try:
        body_payload = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--payload is not JSON: {exc}") from None
    body = {"event_type": event_type, "payload": body_payload}
    if key:
        body["idempotency_key"] = key
    with client(user) as c:
        resp = c.post(f"{RUNS}/{run_id}/events", json=body)
    if resp.status_code >= 400:
        fail(resp)
    out = resp.json()
    ev = out["event"]
    console.print(f"{out['result']}: seq {ev['seq'] if ev else out['last_seq']}, status {out['status']}")


@app.command()
def show(run_id: str, user: User = None) -> None:
    """Show a run's snapshot and its events."""
    with client(user) as c:
        snap = c.get(f"{RUNS}/{run_id}/snapshot")
        if snap.status_code >= 400:
            fail(snap)
        s = snap.json()
        console.print(f"[bold]{run_id}[/] {s['status']}  last_seq {s['last_seq']}  owner {s['owner']}")
        console.print(events_table(c, f"{RUNS}/{run_id}"))


@app.command()
def stream(run_id: str, cursor: int = 0, user: User = None) -> None:
    """Follow a run's events live (SSE) until it finishes."""
    with client(user, timeout=None) as c:
        follow(c, f"{RUNS}/{run_id}", cursor)
