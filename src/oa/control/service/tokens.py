"""Minting sync tokens and revoking them (by jti, by session, all of a user's sessions).

Every revocation lands in `control.revocations`, the feed sync servers poll; its entries
expire when no token they match can still be alive, so the feed stays small.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from oa.control.adapters import accounts_sql, tokens_sql
from oa.control.adapters.accounts_sql import SessionInfo
from oa.control.domain import tokens as domain
from oa.control.domain.scopes import narrow
from oa.control.service.issued_log import IssuedLog, IssuedRow
from oa.control.service.keyring import Keyring
from oa.control.settings import ControlSettings
from oa.exceptions import InvalidRequest, NotFound
from oa.store.database import Database


@dataclass(frozen=True)
class Minted:
    token: str
    jti: str
    kid: str
    audience: str
    scopes: list[str]
    issued_at: int
    expires_at: int

    def body(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "token_type": "Bearer",
            "expires_in": self.expires_at - self.issued_at,
            "issued_at": _iso(self.issued_at),
            "expires_at": _iso(self.expires_at),
            "scopes": self.scopes,
            "audience": self.audience,
            "kid": self.kid,
            "jti": self.jti,
        }


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class SyncTokens:
    def __init__(
        self, db: Database, keyring: Keyring, settings: ControlSettings, log: IssuedLog | None = None
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._settings = settings
        self._log = log or IssuedLog(db)

    def sign(
        self,
        session: SessionInfo,
        scopes: Sequence[str] | None = None,
        ttl_s: int | None = None,
        resource: str | None = None,
        now: int | None = None,
    ) -> Minted:
        """Build and sign the token (no I/O): the part `oa bench auth` measures."""
        ttl = domain.check_ttl(ttl_s, self._settings.default_ttl_s)
        audience = domain.audience_for(resource, self._settings.audiences)
        granted = narrow(scopes, session.sync_scopes)
        issued = int(time.time()) if now is None else now
        signer = self._keyring.signer()
        req = domain.TokenRequest(
            self._settings.issuer,
            audience,
            session.user_id,
            session.org_id,
            session.session_id,
            granted,
            ttl,
            uuid.uuid4().hex,
            issued,
        )
        token = signer.sign(domain.claims(req))
        return Minted(token, req.jti, signer.kid, audience, granted, issued, issued + ttl)

    async def mint(
        self,
        session: SessionInfo,
        scopes: Sequence[str] | None = None,
        ttl_s: int | None = None,
        resource: str | None = None,
    ) -> Minted:
        minted = self.sign(session, scopes, ttl_s, resource)
        await self._log.record(
            IssuedRow(
                minted.jti,
                session.session_id,
                session.user_id,
                minted.audience,
                minted.scopes,
                minted.kid,
                datetime.fromtimestamp(minted.issued_at, UTC),
                datetime.fromtimestamp(minted.expires_at, UTC),
            )
        )
        return minted

    def _session_horizon(self) -> datetime:
        """No token of a session revoked now can outlive this."""
        return datetime.now(UTC) + timedelta(seconds=domain.MAX_TTL_S + self._settings.verifier_leeway_s)

    async def revoke_jti(self, user_id: str | None, jti: str, reason: str = "revoked") -> bool:
        """Revoke one token. With `user_id`, only that user's token (else 404)."""
        async with self._db.transaction() as conn:
            row = await tokens_sql.issued(conn, jti)
            if row is None or (user_id is not None and row["user_id"] != user_id):
                raise NotFound(f"no token {jti} of yours was issued here")
            await tokens_sql.lock_revocations(conn)
            leeway = timedelta(seconds=self._settings.verifier_leeway_s)
            return await tokens_sql.insert_revocation(
                conn, "jti", jti, row["user_id"], reason, row["expires_at"] + leeway
            )

    async def revoke_sessions(self, user_id: str, session_id: str | None, reason: str) -> list[str]:
        """Revoke one session of the user (404 if not theirs and live) or all of them."""
        async with self._db.transaction() as conn:
            if session_id is not None and await accounts_sql.session_owner(conn, session_id) != user_id:
                raise NotFound(f"no session {session_id} of yours exists")
            revoked = await accounts_sql.revoke_sessions(conn, user_id, reason, session_id)
            await tokens_sql.lock_revocations(conn)
            horizon = self._session_horizon()
            for row in revoked:
                await tokens_sql.insert_revocation(conn, "sid", row["session_id"], user_id, reason, horizon)
            if session_id is not None and not revoked:
                # Already revoked: make sure the feed has it (idempotent).
                await tokens_sql.insert_revocation(conn, "sid", session_id, user_id, reason, horizon)
        return [r["session_id"] for r in revoked]

    async def revocations(self, since: int, limit: int) -> dict[str, Any]:
        if since < 0 or not 1 <= limit <= 10_000:
            raise InvalidRequest("since >= 0 and 1 <= limit <= 10000")
        rows = await tokens_sql.revocations_after(self._db.pool, since, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        # Never advance past what we returned: a row committing after our read has a larger id.
        cursor = rows[-1]["id"] if rows else since
        return {
            "revocations": [
                {"id": r["id"], "kind": r["kind"], "value": r["value"], "expires_at": int(r["expires_at"])}
                for r in rows
            ],
            "cursor": cursor,
            "more": more,
        }
