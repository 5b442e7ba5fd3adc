"""`oa spend reconcile`: list reservations stuck in reconcile_required, and resolve them.

A reservation lands there when its deadline passed while it was still reserved: the
runtime cannot know whether the money moved, so a person (or a script that checked the
payment rail) decides: committed (with the real amount) or released.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from oa.cli.runtime_client import client, fail

app = typer.Typer(help="Spend authorizations and reservations.", no_args_is_help=True)
console = Console()
User = Annotated[
    str | None,
    typer.Option("--user", help="Act as user:ID or a full principal (default: `oa login`'s account)."),
]


@app.command()
def reconcile(
    resolve: Annotated[str | None, typer.Option(help="Reservation id to resolve.")] = None,
    outcome: Annotated[str | None, typer.Option("--as", help="committed or released")] = None,
    amount: Annotated[
        int | None, typer.Option(min=0, help="Sats actually spent (with --as committed).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept on the reservation).")] = None,
    authorization: Annotated[str | None, typer.Option(help="Only this authorization.")] = None,
    user: User = None,
) -> None:
    """List reservations needing reconciliation, or resolve one with --resolve ID --as OUTCOME."""
    with client(user) as c:
        if resolve is not None:
            if outcome not in ("committed", "released"):
                raise typer.BadParameter("--as must be committed or released", param_hint="--as")
            body: dict[str, object] = {"outcome": outcome}
            if amount is not None:
                body["amount_sats"] = amount
            if reason:
                body["reason"] = reason
            r = c.post(f"/internal/v1/spend/reservations/{resolve}/resolve", json=body)
            if r.status_code >= 400:
                fail(r)
            rsv = r.json()["reservation"]
            replay = " (already resolved)" if r.json()["idempotentReplay"] else ""
            console.print(
                f"{rsv['reservation_id']}: {rsv['state']}{replay}, committed {rsv['committed_sats']}"
            )
            return
        params: dict[str, str | int] = {"state": "reconcile_required", "limit": 1000}
        if authorization:
            params["authorization_id"] = authorization
        r = c.get("/internal/v1/spend/reservations", params=params)
        if r.status_code >= 400:
            fail(r)
        rows = r.json()["reservations"]
    table = Table(title="reconcile_required")
    table.add_column("reservation", no_wrap=True, min_width=36)  # whole: operators copy it
    for name in ("authorization", "run", "tool call", "sats", "deadline"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(
            row["reservation_id"], row["authorization_id"], row["run_id"], row["tool_call_id"],
            str(row["amount_sats"]), row["deadline_at"] or "",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{len(rows)} to reconcile; resolve with: oa spend reconcile --resolve ID --as committed|released"
    )
