"""Refuse bodies over the configured size with 413, before anything reads them whole."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oa.exceptions import PayloadTooLarge
from oa.http.errors import error_body


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        too_large = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Stop feeding the app; whatever it answers is replaced by a 413.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if too_large:
                if not replaced:
                    replaced = True
                    await self._refuse(send)
                return
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if too_large and not replaced:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        err = PayloadTooLarge(
            f"request body is larger than {self.max_bytes} bytes; send smaller events or "
            "split the batch (the limit is OA_MAX_BODY_BYTES)",
            {"max_bytes": self.max_bytes},
        )
        body = error_body(err)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
