"""Control's failures leave as the error envelope `{"error": {code, message, details}}`.

Control keeps its own copy of this small handler: it may not import runtime internals.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from oa.exceptions import InternalError, InvalidRequest, NotFound, OAError, RateLimited

log = logging.getLogger(__name__)


def envelope_response(err: OAError) -> Response:
    headers = {}
    if isinstance(err, RateLimited) and "retry_after_s" in err.details:
        headers["Retry-After"] = str(err.details["retry_after_s"])
    if err.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return Response(
        orjson.dumps(err.envelope()), status_code=err.status, media_type="application/json", headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(OAError)
    async def _oa(_: Request, exc: OAError) -> Response:
        return envelope_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        problems: list[dict[str, Any]] = []
        for e in list(exc.errors())[:20]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append({"field": loc, "problem": e.get("msg", "invalid"), "type": e.get("type")})
        text = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
        return envelope_response(InvalidRequest(f"invalid request: {text}", {"problems": problems}))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return envelope_response(NotFound(f"no such endpoint: {request.method} {request.url.path}"))
        resp = envelope_response(InvalidRequest(str(exc.detail)))
        resp.status_code = exc.status_code
        return resp

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return envelope_response(InternalError("control failed unexpectedly; it was logged, retry later"))
