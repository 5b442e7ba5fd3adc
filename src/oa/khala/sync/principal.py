"""Who is on a socket (or behind an HTTP read), as the verified sync token says.

The resources control mints tokens for, and what each lets its holder do here (control's
`oa.control.domain.tokens.DEFAULT_AUDIENCES` names the same two; a test holds them equal):

* `khala-sync` (audience `oa-khala-sync`, the default): everything a client of Khala does,
  the live socket (`/sync/v1/ws`) and the HTTP reads it hydrates with (snapshot, document
  history), so one token serves "snapshot, then subscribe".
* `khala-http` (audience `oa-khala-http`): the HTTP reads only. For a holder that should
  never keep a live socket (a server-side renderer, a script); the socket refuses it.

Both carry the same scopes and per-document rules; the audience narrows only the transport.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

SYNC_AUDIENCE = "oa-khala-sync"
HTTP_AUDIENCE = "oa-khala-http"
# What each entry point accepts.
SOCKET_AUDIENCES = frozenset({SYNC_AUDIENCE})
HTTP_AUDIENCES = frozenset({SYNC_AUDIENCE, HTTP_AUDIENCE})


@dataclass(frozen=True)
class SyncPrincipal:
    user_id: str
    org_id: str | None
    scopes: frozenset[str]
    expires_at: float
    jti: str
    session_id: str | None = None
    audience: str = SYNC_AUDIENCE


class TokenRefused(Exception):
    """A token the server will not accept; `code` is the protocol error code to send."""

    def __init__(self, code: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or code


# (token, Origin header or None) -> principal, or raise TokenRefused.
Verify = Callable[[str, str | None], Awaitable[SyncPrincipal]]
