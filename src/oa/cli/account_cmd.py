"""`oa login`, `oa logout`, `oa whoami`, `oa token sync`: one identity from the CLI to the dashboard.

`oa login` signs in to control (the running deployment's, from `.oa/deployment.env`) and keeps
the session in `.oa/session.json`; every command that acts as a user then defaults to it.
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.console import Console

from oa.cli import control_cmd
from oa.cli.identity import Session, acting_as, load_session, save_session, session_file
from oa.cli.runtime_client import control, fail
from oa.deployment import LocalDeployment

console = Console(stderr=True)


def login(
    email: Annotated[
        str | None, typer.Option(help="Your control account (asked for when not given).")
    ] = None,
    password: Annotated[
        str | None, typer.Option(envvar="OA_CONTROL_PASSWORD", help="Asked for when not given.")
    ] = None,
    org: Annotated[
        str | None, typer.Option(help="Organization (name or id) when you are in several.")
    ] = None,
) -> None:
    """Sign in to the local deployment's control; later commands act as this account."""
    dep = LocalDeployment.from_env()
    if email is None:
        email = typer.prompt("email")
    if password is None:
        password = getpass.getpass(f"password for {email}: ")
    with control() as c:
        body = {"email": email, "password": password, **({"org": org} if org else {})}
        resp = c.post("/api/auth/sign-in", json=body)
        if resp.status_code >= 400:
            if resp.status_code == 401:
                console.print("(no account yet? create it with `oa control user add EMAIL`)")
            fail(resp)
        s = resp.json()
        url = str(c.base_url).rstrip("/")
    session = Session(
        url, s["session_token"], s["session_id"], s["user_id"], s["org_id"], email, s["expires_at"]
    )
    path = save_session(dep, session)
    console.print(f"signed in as {email} (user:{session.user_id}, org {session.org_id}); session in {path}")


def logout() -> None:
    """Sign out (control revokes the session) and forget it."""
    dep = LocalDeployment.from_env()
    session = load_session(dep)
    if session is None:
        console.print("not signed in")
        return
    with control(session.control_url, session.session_token) as c:
        c.post("/api/auth/sign-out")  # an expired session is gone either way
    session_file(dep).unlink(missing_ok=True)
    console.print(f"signed out {session.email}")


def whoami() -> None:
    """Who the CLI acts as."""
    who = acting_as(None)
    assert who.session is not None
    print(f"{who.session.email} {who.principal} org {who.org}")


def token_sync(
    user: Annotated[
        str | None,
        typer.Option(help="Operators: mint for this control user id (default: `oa login`'s account)."),
    ] = None,
    org: Annotated[str | None, typer.Option(help="Organization (name or id) the token is for.")] = None,
    ttl: Annotated[int, typer.Option(min=60, max=900, help="Seconds the token lives.")] = 300,
) -> None:
    """Print a short-lived sync token (ES256, from control) for the local deployment's Khala."""
    if user is None:
        session = acting_as(None, org).session
        assert session is not None
        url, bearer = session.control_url, session.session_token
    else:
        url, bearer = None, control_cmd.operator_session(user, org)
    with control(url, bearer) as c:  # minted by the running control: its issuer, its keys
        resp = c.post("/api/sync/token", json={"ttl_seconds": ttl})
    if resp.status_code >= 400:
        fail(resp)
    print(resp.json()["token"])
