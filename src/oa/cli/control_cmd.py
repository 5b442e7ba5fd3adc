"""`oa control`: operator commands for the auth authority (users, orgs, keys, revocation).

They work on the deployment's database directly (OA_DATABASE_URL or the embedded one), so
they also work while control is stopped; a running control picks key changes up within
its reload interval.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import asyncpg
import typer
import uvloop
from rich.console import Console
from rich.table import Table

from oa.control.domain.scopes import SYNC_SCOPES
from oa.control.service.accounts import DEFAULT_ORG, Accounts
from oa.control.service.keyring import Keyring
from oa.control.service.tokens import SyncTokens
from oa.control.settings import ControlSettings
from oa.deployment import LocalDeployment
from oa.exceptions import OAError
from oa.store.database import Database

app = typer.Typer(help="Control: users, orgs, signing keys, revocation.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
org_app = typer.Typer(help="Organizations.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(org_app, name="org")
console = Console()
T = TypeVar("T")


def _settings(dep: LocalDeployment) -> ControlSettings:
    issuer = (
        os.environ.get("OA_CONTROL_URL") or dep.read_env().get("OA_CONTROL_URL") or "http://127.0.0.1:8788"
    )
    return ControlSettings.from_env(os.environ, dep.home, issuer=issuer)


Create = Annotated[
    bool, typer.Option("--create", help="Create a new deployment in OA_HOME if there is none there.")
]


def _check_home(create: bool) -> LocalDeployment:
    dep = LocalDeployment.from_env()
    if not create and not os.environ.get("OA_DATABASE_URL") and not dep.exists():
        # Without this, a mistyped OA_HOME silently got a new embedded Postgres and the user
        # landed there, invisible to the deployment the person meant.
        console.print(
            f"[red]no deployment in {dep.home}[/] (no pgdata, no deployment.env). Start one there with "
            "`make run` (or `oa run`), point OA_HOME at the folder that holds yours, "
            "or pass --create to create a new one here."
        )
        raise typer.Exit(2)
    return dep


def _with_db(work: Callable[[Database, ControlSettings], Awaitable[T]], create: bool = False) -> T:
    from oa.cli.serve import prepare_database

    dep = _check_home(create)
    url = prepare_database(dep)
    settings = _settings(dep)

    async def go() -> T:
        db = await Database.connect(url, min_size=1, max_size=2)
        try:
            return await work(db, settings)
        finally:
            await db.close()

    try:
        return uvloop.run(go())
    except (OSError, asyncpg.PostgresError) as exc:
        console.print(
            f"[red]cannot reach the deployment's database[/] ({exc}); is `make run` up in {dep.home}?"
        )
        raise typer.Exit(2) from None
    except OAError as exc:
        console.print(f"[red]{exc.code}[/]: {exc.message}")
        raise typer.Exit(1) from None


def _scopes(value: str | None) -> list[str] | None:
    return None if value is None else [s.strip() for s in value.split(",") if s.strip()]


@org_app.command("add")
def org_add(name: str, create: Create = False) -> None:
    """Create an organization (no-op if it exists); print its id."""
    org_id = _with_db(lambda db, s: Accounts(db, s).add_org(name), create)
    print(org_id)


@user_app.command("add")
def user_add(
    email: str,
    password: Annotated[
        str | None, typer.Option(envvar="OA_CONTROL_PASSWORD", help="Asked for when not given.")
    ] = None,
    org: Annotated[str, typer.Option(help="Organization (created if new).")] = DEFAULT_ORG,
    role: Annotated[str, typer.Option(help="member, admin or owner.")] = "member",
    scopes: Annotated[
        str | None, typer.Option(help=f"Comma-separated sync scopes (default all: {', '.join(SYNC_SCOPES)}).")
    ] = None,
    create: Create = False,
) -> None:
    """Add a user who signs in with a password, as a member of an organization; print the id.

    Then `oa login` signs in as them, and what the CLI appends is theirs on the dashboard."""
    _check_home(create)  # before asking for a password
    if password is None:
        password = getpass.getpass(f"password for {email}: ")
    pw = password
    user_id = _with_db(lambda db, s: Accounts(db, s).add_user(email, pw, org, role, _scopes(scopes)), create)
    print(user_id)


@user_app.command("grant")
def user_grant(
    email: str,
    scopes: Annotated[str, typer.Option(help="Comma-separated sync scopes the user may see.")],
    org: Annotated[str, typer.Option(help="Organization.")] = DEFAULT_ORG,
) -> None:
    """Set the sync scopes a user may see in an organization."""
    _with_db(lambda db, s: Accounts(db, s).grant(email, org, _scopes(scopes) or []))


@user_app.command("revoke-sessions")
def user_revoke(email: str) -> None:
    """Revoke every session of a user (their live sync tokens die within seconds)."""

    async def work(db: Database, s: ControlSettings) -> list[str]:
        user_id = await db.fetchval("SELECT user_id FROM control.users WHERE lower(email) = lower($1)", email)
        if user_id is None:
            raise typer.BadParameter(f"no user with email {email}")
        return await SyncTokens(db, Keyring(db, s), s).revoke_sessions(user_id, None, "revoked by operator")

    revoked = _with_db(work)
    print(f"revoked {len(revoked)} session(s)")


@app.command("rotate-keys")
def rotate_keys(
    lead: Annotated[
        float | None,
        typer.Option(help="Seconds the new key is published before it signs (OA_CONTROL_ROTATION_LEAD_S)."),
    ] = None,
) -> None:
    """Publish a new signing key; the old ones stay published until their tokens expired."""

    async def work(db: Database, s: ControlSettings) -> Keyring:
        ring = Keyring(db, s)
        await ring.ensure_key()
        await ring.rotate(lead)
        return ring

    ring = _with_db(work)
    _print_keys(ring)


@app.command("keys")
def keys() -> None:
    """List signing keys and their schedule."""

    async def work(db: Database, s: ControlSettings) -> Keyring:
        ring = Keyring(db, s)
        await ring.reload()
        return ring

    _print_keys(_with_db(work))


def _print_keys(ring: Keyring) -> None:
    now = datetime.now(UTC)
    table = Table(title=f"signing keys ({now:%Y-%m-%d %H:%M:%S} UTC)")
    for col in ("kid", "published", "signs from", "leaves JWKS", "state"):
        table.add_column(col)
    current = ring.signer(now).kid if ring.records() else None
    for k in ring.records():
        state = "signing" if k.kid == current else ("published" if k.published(now) else "retired")
        if k.published(now) and k.activates_at > now:
            state = "published, not signing yet"
        table.add_row(
            k.kid,
            f"{k.not_before:%H:%M:%S}",
            f"{k.activates_at:%H:%M:%S}",
            f"{k.retire_after:%Y-%m-%d %H:%M:%S}" if k.retire_after else "-",
            state,
        )
    console.print(table)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(envvar="OA_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OA_CONTROL_PORT")] = 8788,
) -> None:
    """Serve only control (OA_DATABASE_URL or the embedded Postgres)."""
    from oa.cli.serve import control_server, prepare_database, serve_all

    dep = LocalDeployment.from_env()
    server = control_server(prepare_database(dep), dep, host, port)
    uvloop.run(
        serve_all([server], on_ready=lambda: print(f"control listening on http://{host}:{port}", flush=True))
    )


def operator_session(user_id: str, org: str | None) -> str:
    """A session token for a user, opened on the database (operators; no password)."""

    async def work(db: Database, s: ControlSettings) -> str:
        return (await Accounts(db, s).operator_session(user_id, org)).session_token

    return _with_db(work)
