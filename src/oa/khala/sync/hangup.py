"""Closing a socket within a bounded time, whatever its peer does.

An ASGI app can only ask for a polite close, and a polite close waits for the peer: the
server (uvicorn, on asyncio or uvloop) writes the close frame behind everything still
buffered and `transport.close()` waits for that buffer to drain. A peer that stopped
reading never drains it, so its socket, buffers and task stayed forever (issue 10: ten
non-readers still connected after 100 s). The way out is `transport.abort()`, which the
ASGI interface does not offer; `TransportAbort` puts it into the scope as an extension.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

ABORT_EXTENSION = "oa.transport.abort"


class TransportAbort:
    """ASGI middleware: `scope["extensions"]["oa.transport.abort"]` aborts the connection.

    uvicorn hands every app its protocol's bound `send`, and each of its WebSocket
    protocols (websockets-sansio, wsproto, legacy websockets) keeps its asyncio transport
    as `.transport`; under another server the extension is simply absent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            transport: Any = getattr(getattr(send, "__self__", None), "transport", None)
            abort = getattr(transport, "abort", None)
            if callable(abort):
                scope.setdefault("extensions", {})[ABORT_EXTENSION] = abort
        await self.app(scope, receive, send)


def aborter(ws: WebSocket) -> Callable[[], None] | None:
    abort = (ws.scope.get("extensions") or {}).get(ABORT_EXTENSION)
    return abort if callable(abort) else None


async def hang_up(ws: WebSocket, code: int, grace_s: float, *, stalled: bool) -> None:
    """Close `ws` with `code`; abort it at once if `stalled`, else if the close frame is not
    taken within `grace_s`, else `grace_s` later unless the peer finished the handshake."""
    abort = aborter(ws)
    if stalled and abort is not None:
        abort()
        return
    if ws.application_state != WebSocketState.DISCONNECTED:
        try:
            await asyncio.wait_for(ws.close(code), grace_s)
        except Exception:  # timed out, or the peer is already gone
            if abort is not None:
                abort()
            return
    if abort is not None:
        # The close frame may still sit behind unread data: do not wait for it forever.
        # (Aborting a transport that already closed does nothing.)
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_later(grace_s, abort)
