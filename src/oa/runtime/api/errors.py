"""Every failure leaves as the error envelope, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from oa.exceptions import InternalError, InvalidRequest, NotFound, OAError
from oa.runtime.api.models import ErrorEnvelope

log = logging.getLogger(__name__)

_DESCRIPTIONS = {
    400: "invalid_request: the body, a parameter or a header is wrong; the message says which",
    401: "unauthorized: missing, forged or expired X-OA-RUNTIME-SIGNATURE",
    403: "forbidden: the resource belongs to another principal",
    404: "not_found",
    409: "conflict: invalid transition, seq mismatch or idempotency conflict",
    410: "stale_cursor: the cursor is older than the stream keeps",
    413: "invalid_request: the body is larger than the configured limit",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[c]} for c in codes}


def envelope_response(err: OAError, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(err.envelope()), status_code=err.status, media_type="application/json", headers=headers
    )


def _validation_message(errors: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    problems = []
    for e in errors[:20]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append({"field": loc, "problem": e.get("msg", "invalid"), "type": e.get("type")})
    if any(p["type"] == "json_invalid" for p in problems):
        return "the request body is not valid JSON; send a JSON object", problems
    text = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
    return f"invalid request: {text}", problems


def install(app: FastAPI) -> None:
    @app.exception_handler(OAError)
    async def _oa(_: Request, exc: OAError) -> Response:
        return envelope_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        message, problems = _validation_message(list(exc.errors()))
        return envelope_response(InvalidRequest(message, {"problems": problems}))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return envelope_response(NotFound(f"no such endpoint: {request.method} {request.url.path}"))
        if exc.status_code == 405:
            err = InvalidRequest(f"{request.method} is not allowed on {request.url.path}")
            resp = envelope_response(err)
            resp.status_code = 405
            return resp
        err = InvalidRequest(str(exc.detail))
        resp = envelope_response(err)
        resp.status_code = exc.status_code
        return resp

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return envelope_response(InternalError("the runtime failed unexpectedly; it was logged, retry later"))
