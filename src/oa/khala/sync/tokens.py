"""Connecting the sync server to the token verifier (`oa.khala.auth`) and its revocations."""

from __future__ import annotations

from fastapi import Security
from fastapi.security import HTTPBearer
from starlette.requests import Request

from oa.exceptions import ForbiddenTopic, NotFound, TokenExpired, TokenRejected, Unauthorized
from oa.khala.auth.revocations import Revocation, RevocationList
from oa.khala.auth.verifier import SyncTokenVerifier
from oa.khala.sync.hub import Hub
from oa.khala.sync.principal import SOCKET_AUDIENCES, SyncPrincipal, TokenRefused, Verify
from oa.khala.topics import TOPICS

# Documents the sync token in OpenAPI; `topic_reader` does the checking (auto_error off).
SYNC_BEARER = HTTPBearer(
    auto_error=False, scheme_name="syncToken", description="A sync token from control (either resource)."
)
READER = [Security(SYNC_BEARER)]


def verify_with(verifier: SyncTokenVerifier) -> Verify:
    async def verify(token: str, origin: str | None) -> SyncPrincipal:
        try:
            c = await verifier.verify(token, origin=origin)
        except TokenRejected as exc:
            code = "token_expired" if exc.code == "token_expired" else "unauthorized"
            raise TokenRefused(code, exc.message, reason=exc.code) from None
        return SyncPrincipal(
            c.user_id, c.org_id or None, c.scopes, float(c.expires_at), c.jti, c.sid, c.audience
        )

    return verify


def for_sockets(verify: Verify) -> Verify:
    """`verify`, refusing tokens minted for HTTP reads only (see `principal`'s resources)."""

    async def verify_socket(token: str, origin: str | None) -> SyncPrincipal:
        p = await verify(token, origin)
        if p.audience not in SOCKET_AUDIENCES:
            raise TokenRefused(
                "unauthorized",
                f"this token is for {p.audience!r} (HTTP reads only); a socket needs a token "
                "minted for resource khala-sync",
                reason="wrong_audience",
            )
        return p

    return verify_socket


async def topic_reader(verify: Verify, request: Request, topic: str) -> SyncPrincipal:
    """The caller of an HTTP read of `topic`: a known topic, a valid `Authorization: Bearer
    <sync token>` (either resource), and the topic among the token's scopes."""
    if topic not in TOPICS:
        raise NotFound(f"unknown topic {topic!r}; known: {', '.join(TOPICS)}")
    who = await _bearer(verify, request)
    if topic not in who.scopes:
        raise ForbiddenTopic(f"your token does not grant {topic}", {"topic": topic})
    return who


async def _bearer(verify: Verify, request: Request) -> SyncPrincipal:
    authorization = request.headers.get("authorization")
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send Authorization: Bearer <sync token from control>")
    try:
        return await verify(authorization[7:].strip(), request.headers.get("origin"))
    except TokenRefused as exc:
        if exc.code == "token_expired":
            raise TokenExpired(exc.message) from None
        raise Unauthorized(exc.message, {"reason": exc.reason}) from None


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
