"""Who the CLI acts as: the control account `oa login` signed in to, or an operator's `--user`.

The session lives in `<OA_HOME>/session.json` (0600): control's URL, the session token, the
user and org ids. Runs appended through the CLI are then owned by `user:<control user id>`,
the same identity the dashboard signs in as, so what you append is what you see.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import typer

from oa.deployment import LocalDeployment


@dataclass(frozen=True)
class Session:
    control_url: str
    session_token: str
    session_id: str
    user_id: str
    org_id: str
    email: str
    expires_at: str

    def expired(self) -> bool:
        return datetime.fromisoformat(self.expires_at) <= datetime.now(UTC)


@dataclass(frozen=True)
class Identity:
    """A runtime principal (`user:<id>`) and the org it acts in (None: not known)."""

    principal: str
    org: str | None
    session: Session | None = None


def session_file(dep: LocalDeployment) -> Path:
    return dep.home / "session.json"


def save_session(dep: LocalDeployment, session: Session) -> Path:
    path = session_file(dep)
    dep.home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(session), f)
    tmp.replace(path)
    return path


def load_session(dep: LocalDeployment) -> Session | None:
    path = session_file(dep)
    if not path.exists():
        return None
    try:
        return Session(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        raise typer.BadParameter(f"{path} is not a session file; sign in again with `oa login`") from None


def signed_in(dep: LocalDeployment | None = None) -> Session:
    """The live session, or a clear error saying how to get one."""
    dep = dep or LocalDeployment.from_env()
    session = load_session(dep)
    if session is None:
        raise typer.BadParameter(
            f"not signed in ({session_file(dep)} is missing): run `oa login` "
            "(create the account first with `oa control user add EMAIL`), or, as an operator, give --user ID"
        )
    if session.expired():
        raise typer.BadParameter(f"your session expired at {session.expires_at}: run `oa login` again")
    return session


def acting_as(user: str | None, org: str | None = None) -> Identity:
    """`--user ID` (operators: any user or a full principal), else the signed-in account."""
    if user is not None:
        return Identity(user if ":" in user else f"user:{user}", org)
    session = signed_in()
    if org is not None and org != session.org_id:
        raise typer.BadParameter(
            f"you are signed in to org {session.org_id}; to act in {org}, run `oa login --org {org}`"
        )
    return Identity(f"user:{session.user_id}", session.org_id, session)
