"""Who is on a socket, as the verified sync token says, and how tokens are checked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SyncPrincipal:
    user_id: str
    org_id: str | None
    scopes: frozenset[str]
    expires_at: float
    jti: str
    session_id: str | None = None


class TokenRefused(Exception):
    """A token the server will not accept; `code` is the protocol error code to send."""

    def __init__(self, code: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or code


# (token, Origin header or None) -> principal, or raise TokenRefused.
Verify = Callable[[str, str | None], Awaitable[SyncPrincipal]]
