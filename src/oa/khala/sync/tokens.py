"""Connecting the sync server to the token verifier (`oa.khala.auth`) and its revocations."""

from __future__ import annotations

from oa.exceptions import TokenRejected
from oa.khala.auth.revocations import Revocation, RevocationList
from oa.khala.auth.verifier import SyncTokenVerifier
from oa.khala.sync.hub import Hub
from oa.khala.sync.principal import SyncPrincipal, TokenRefused, Verify


def verify_with(verifier: SyncTokenVerifier) -> Verify:
    async def verify(token: str, origin: str | None) -> SyncPrincipal:
        try:
            c = await verifier.verify(token, origin=origin)
        except TokenRejected as exc:
            code = "token_expired" if exc.code == "token_expired" else "unauthorized"
            raise TokenRefused(code, exc.message, reason=exc.code) from None
        return SyncPrincipal(c.user_id, c.org_id or None, c.scopes, float(c.expires_at), c.jti, c.sid)

    return verify


def close_revoked_sessions(revocations: RevocationList, hub: Hub) -> None:
    """Close live sockets whose token or session is revoked, as soon as the list hears of it."""

    def on_revoked(rev: Revocation) -> None:
        for session in list(hub.sessions):
            p = session.principal
            if p is None:
                continue
            if (rev.kind == "jti" and rev.value == p.jti) or (
                rev.kind == "sid" and rev.value == p.session_id
            ):
                session.revoke("token_revoked" if rev.kind == "jti" else "session_revoked")

    revocations.on_revoked(on_revoked)
