"""Accounts: operators add orgs and users; users sign in and out; sessions authenticate.

Sign-in failures are counted per email in Postgres (so every control process shares the
count); past the limit the email is refused with 429 until the window moves on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from oa.control.adapters import accounts_sql as sql
from oa.control.adapters.accounts_sql import SessionInfo
from oa.control.domain import secrets as sec
from oa.control.domain.passwords import MIN_PASSWORD_CHARS, Passwords
from oa.control.domain.scopes import DEFAULT_MEMBER_SCOPES, validate_scopes
from oa.control.settings import ControlSettings
from oa.exceptions import Conflict, Forbidden, InvalidRequest, NotFound, RateLimited, Unauthorized
from oa.store.database import Database

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
DEFAULT_ORG = "default"


@dataclass(frozen=True)
class SignedIn:
    session_token: str
    session_id: str
    user_id: str
    org_id: str
    expires_at: datetime


def check_email(email: str) -> str:
    email = email.strip()
    if not EMAIL_RE.match(email):
        raise InvalidRequest(f"{email!r} is not an email address")
    return email


async def org_for(db: Database, principal: str, org: str) -> str:
    """The id of `org` (an id or a name) that `principal` may act for, by control's records.

    A `user:<id>` must be a member of it; other principals (services, workers) have no
    memberships, so the org must merely exist. This is the check behind a caller signature
    that carries an org (`oa token runtime --org`, `oa.runtime.signing`).
    """
    if not principal.startswith("user:"):
        org_id = await sql.org_by_id_or_name(db.pool, org)
        if org_id is None:
            raise NotFound(f"no org {org!r}; create it with: oa control org add NAME", {"org": org})
        return org_id
    user_id = principal[5:]
    async with db.pool.acquire() as conn:
        orgs = await sql.memberships(conn, user_id)
    for m in orgs:
        if org in (m["org_id"], m["name"]):
            return str(m["org_id"])
    names = [f"{m['name']} ({m['org_id']})" for m in orgs]
    raise Forbidden(
        f"user {user_id!r} is not a member of org {org!r}"
        + (f"; their orgs: {', '.join(names)}" if names else "; they belong to no org")
        + ". Add the membership with: oa control user grant EMAIL --org ORG --scopes ...",
        {"org": org, "user_id": user_id, "organizations": names},
    )


class Accounts:
    def __init__(self, db: Database, settings: ControlSettings) -> None:
        self._db = db
        self._settings = settings
        self.passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_kib)

    async def add_org(self, name: str) -> str:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidRequest("an org name is 1-100 characters")
        async with self._db.transaction() as conn:
            return await sql.insert_org(conn, sec.new_id("org"), name)

    async def add_user(
        self,
        email: str,
        password: str | None,
        org: str = DEFAULT_ORG,
        role: str = "member",
        scopes: Sequence[str] | None = None,
    ) -> str:
        """Create a user and make them a member of `org` (created if new)."""
        email = check_email(email)
        if password is not None and len(password) < MIN_PASSWORD_CHARS:
            raise InvalidRequest(f"a password has at least {MIN_PASSWORD_CHARS} characters")
        granted = validate_scopes(DEFAULT_MEMBER_SCOPES if scopes is None else scopes)
        hashed = await asyncio.to_thread(self.passwords.hash, password) if password else None
        user_id = sec.new_id("u")
        async with self._db.transaction() as conn:
            if not await sql.insert_user(conn, user_id, email, hashed):
                raise Conflict(f"a user with email {email} already exists", {"email": email})
            org_id = await sql.insert_org(conn, sec.new_id("org"), org)
            await sql.upsert_membership(conn, org_id, user_id, role, granted)
        return user_id

    async def grant(self, email: str, org: str, scopes: Sequence[str], role: str = "member") -> None:
        """Set what `email` may sync in `org` (joining it if needed)."""
        granted = validate_scopes(scopes)
        async with self._db.transaction() as conn:
            user = await sql.user_by_email(conn, email)
            if user is None:
                raise NotFound(f"no user with email {email}")
            org_id = await sql.insert_org(conn, sec.new_id("org"), org)
            await sql.upsert_membership(conn, org_id, user["user_id"], role, granted)

    async def sign_in(self, email: str, password: str, org: str | None = None) -> SignedIn:
        window = self._settings.sign_in_window_s
        async with self._db.pool.acquire() as conn:
            failures, wait = await sql.recent_failures(conn, email, window)
            if failures >= self._settings.sign_in_max_failures:
                raise RateLimited(
                    f"too many failed sign-ins for this email; retry in {int(wait) + 1} s",
                    {"retry_after_s": int(wait) + 1},
                )
            user = await sql.user_by_email(conn, email)
        stored = None if user is None or user["disabled_at"] is not None else user["password_hash"]
        ok = await asyncio.to_thread(self.passwords.verify, stored, password)
        if not ok or user is None:
            async with self._db.pool.acquire() as conn:
                await sql.record_failure(conn, email, window)
            raise Unauthorized("wrong email or password")
        user_id: str = user["user_id"]
        async with self._db.transaction() as conn:
            await sql.clear_failures(conn, email)
            if stored is not None and self.passwords.needs_rehash(stored):
                await sql.set_password(conn, user_id, await asyncio.to_thread(self.passwords.hash, password))
            return await self._open_session(conn, user_id, org)

    async def operator_session(self, user_id: str, org: str | None = None) -> SignedIn:
        """A session for a user without their password: for operators with database access
        (`oa token sync --user ID`), never reachable over HTTP. Membership is still checked."""
        async with self._db.transaction() as conn:
            if not await sql.memberships(conn, user_id):
                raise NotFound(
                    f"no user {user_id!r} with an organization; add one: oa control user add EMAIL"
                )
            return await self._open_session(conn, user_id, org)

    async def _open_session(self, conn: asyncpg.Connection, user_id: str, org: str | None) -> SignedIn:
        orgs = await sql.memberships(conn, user_id)
        chosen = [m for m in orgs if org is None or org in (m["org_id"], m["name"])]
        if not chosen:
            raise Unauthorized(
                "you are not a member of that organization" if org else "you belong to no organization",
                {"organizations": [m["name"] for m in orgs]},
            )
        token = sec.new_session_token()
        session_id = sec.new_id("s")
        expires = await sql.insert_session(
            conn,
            session_id,
            sec.token_hash(token),
            user_id,
            chosen[0]["org_id"],
            self._settings.session_ttl_s,
        )
        return SignedIn(token, session_id, user_id, chosen[0]["org_id"], expires)

    async def authenticate(self, bearer: str | None) -> SessionInfo:
        if not bearer:
            raise Unauthorized("sign in first: send `Authorization: Bearer <session token>`")
        if len(bearer) > 200 or not bearer.startswith(sec.SESSION_PREFIX):
            raise Unauthorized("that is not a control session token")
        session = await sql.live_session(self._db.pool, sec.token_hash(bearer))
        if session is None:
            raise Unauthorized("the session is unknown, expired or revoked; sign in again")
        return session
