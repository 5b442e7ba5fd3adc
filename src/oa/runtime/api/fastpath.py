"""The append endpoints without the framework's per-request machinery, for well-formed calls.

`POST /internal/v1/runs/{id}/events` and `.../events/batch` are the hot path. Routing,
dependency solving and middleware of the full app cost about 0.6 ms of CPU per request
(py-spy on `oa bench append`), more than the append itself. This ASGI layer serves a request
here only when it is well formed: signed, JSON, a valid run id, no query string, a body that
parses strictly and validates against the same pydantic models. Anything else is handed,
body included, to the full app, which answers it exactly as before (the error tests and the
schemathesis run go through both). Errors the append itself raises use the same envelope.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oa.exceptions import InternalError, OAError, Unauthorized
from oa.http.strict import is_json as _is_json
from oa.http.strict import loads_strict
from oa.runtime.api.encode import batch_json, outcome_json, plan_status
from oa.runtime.api.models import ID_PATTERN, AppendBatch, AppendEvent
from oa.runtime.domain.journal import AppendRequest
from oa.runtime.service.runs import RunService
from oa.runtime.signing import verify_caller

log = logging.getLogger(__name__)
_PATH = re.compile(r"^/internal/v1/runs/([^/]{1,128})/events(/batch)?$")
_RUN_ID = re.compile(ID_PATTERN)
_SIGNATURE = b"x-oa-runtime-signature"


class AppendFastPath:
    def __init__(self, app: ASGIApp, secret: bytes) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("query_string"):
            match = _PATH.match(scope["path"])
        if match is None or not _RUN_ID.match(match.group(1)):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        body, complete = await _read_body(receive)
        handled = False
        if complete and _is_json(headers.get(b"content-type", b"").decode("latin-1")):
            handled = await self._try(scope, send, match.group(1), match.group(2) is not None, headers, body)
        if not handled:
            await self.app(scope, _replay(body, complete, receive), send)

    async def _try(
        self, scope: Scope, send: Send, run_id: str, batch: bool, headers: dict[bytes, bytes], body: bytes
    ) -> bool:
        try:
            who = verify_caller(self.secret, headers.get(_SIGNATURE, b"").decode("latin-1"))
            parsed = loads_strict(body)
            events = (
                AppendBatch.model_validate(parsed).events if batch else [AppendEvent.model_validate(parsed)]
            )
        except (Unauthorized, ValueError, ValidationError):
            return False  # the full app gives the exact error
        runs: RunService = scope["app"].state.runs
        requests = [
            AppendRequest(e.event_type, e.payload, e.idempotency_key, e.expected_previous_seq) for e in events
        ]
        try:
            plan = await runs.append(who.principal, run_id, requests, who.org)
        except OAError as exc:
            await _respond(send, exc.status, exc.envelope())
            return True
        except Exception:
            log.exception("append failed")
            err = InternalError("the runtime failed unexpectedly; it was logged, retry later")
            await _respond(send, err.status, err.envelope())
            return True
        out = batch_json(run_id, plan) if batch else outcome_json(run_id, plan.outcomes[0])
        await _respond(send, plan_status(plan), out)
        return True


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if complete:
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}
        return await receive()

    return replayed


async def _respond(send: Send, status: int, body: Any) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
