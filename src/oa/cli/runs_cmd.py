"""`oa runs append|show|stream`: the runtime API from a terminal, signed as a user."""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from oa.deployment import LocalDeployment
from oa.runtime.signing import HEADER, load_or_create_secret, sign_caller

app = typer.Typer(help="Append to, show and follow runs.", no_args_is_help=True)
console = Console()
User = Annotated[str, typer.Option("--user", help="Act as user:ID.")]


def _client(user: str) -> httpx.Client:
    dep = LocalDeployment.from_env()
    token = sign_caller(load_or_create_secret(dep.caller_secret_file), f"user:{user}", 300)
    return httpx.Client(base_url=dep.runtime_url(), headers={HEADER: token}, timeout=30)


def _fail(resp: httpx.Response) -> None:
    try:
        err = resp.json()["error"]
        console.print(f"[red]{resp.status_code} {err['code']}[/]: {err['message']}")
    except Exception:
        console.print(f"[red]{resp.status_code}[/]: {resp.text[:500]}")
    raise typer.Exit(1)


@app.command()
def append(
    run_id: str,
    event_type: str,
    payload: Annotated[str, typer.Option(help="JSON object.")] = "{}",
    key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    user: User = "local",
) -> None:
    """Append one event to RUN_ID."""
    try:
        body_payload = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--payload is not JSON: {exc}") from None
    body = {"event_type": event_type, "payload": body_payload}
    if key:
        body["idempotency_key"] = key
    with _client(user) as c:
        resp = c.post(f"/internal/v1/runs/{run_id}/events", json=body)
    if resp.status_code >= 400:
        _fail(resp)
    out = resp.json()
    ev = out["event"]
    console.print(f"{out['result']}: seq {ev['seq'] if ev else out['last_seq']}, status {out['status']}")


@app.command()
def show(run_id: str, user: User = "local") -> None:
    """Show a run's snapshot and its events."""
    with _client(user) as c:
        snap = c.get(f"/internal/v1/runs/{run_id}/snapshot")
        if snap.status_code >= 400:
            _fail(snap)
        s = snap.json()
        console.print(f"[bold]{run_id}[/] {s['status']}  last_seq {s['last_seq']}  owner {s['owner']}")
        table = Table("seq", "type", "payload", "hash")
        after = 0
        while True:
            page = c.get(
                f"/internal/v1/runs/{run_id}/events", params={"after_seq": after, "limit": 1000}
            ).json()
            for ev in page["events"]:
                table.add_row(
                    str(ev["seq"]), ev["event_type"], json.dumps(ev["payload"])[:60], ev["hash"][:12]
                )
            if not page["events"]:
                break
            after = page["next_after_seq"]
    console.print(table)


@app.command()
def stream(run_id: str, cursor: int = 0, user: User = "local") -> None:
    """Follow a run's events live (SSE) until it finishes."""
    with (
        _client(user) as c,
        c.stream(
            "GET", f"/internal/v1/runs/{run_id}/stream", params={"cursor": cursor}, timeout=None
        ) as resp,
    ):
        if resp.status_code >= 400:
            resp.read()
            _fail(resp)
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: {}":
                ev = json.loads(line[6:])
                console.print(f"{ev['seq']:>6} {ev['event_type']:<22} {json.dumps(ev['payload'])[:80]}")
