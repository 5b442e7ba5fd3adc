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


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def _json_kind(value: Any) -> str:
    for kind, name in _JSON_NAMES.items():
        if type(value) is kind:
            return name
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, bytes | bytearray):
        return "raw bytes"
    return type(value).__name__


def _problem(e: dict[str, Any]) -> str:
    """Pydantic's message, reworded where it would not tell a JSON client what to fix."""
    kind = e.get("type")
    if kind == "extra_forbidden":
        return "is not a known field; remove it (check its spelling)"
    if kind == "missing":
        return "is required"
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return f"must be a JSON object, got {_json_kind(e.get('input'))}"
    if kind == "string_pattern_mismatch" and "\\x00" in str((e.get("ctx") or {}).get("pattern")):
        return "must not contain NUL (\\u0000)"
    if kind and kind.endswith("_type"):
        return f"{e.get('msg', 'has the wrong type')}, got {_json_kind(e.get('input'))}"
    return str(e.get("msg", "invalid"))


def _validation_message(errors: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    problems = []
    for e in errors[:20]:
        if e.get("type") == "json_invalid":
            where = [p for p in e.get("loc", ()) if isinstance(p, int)]
            reason = (e.get("ctx") or {}).get("error", "syntax error")
            at = f" at character {where[0]}" if where and "character" not in reason else ""
            message = f"the request body is not valid JSON ({reason}{at}); send a JSON object"
            return message, [{"field": "body", "problem": reason, "type": "json_invalid"}]
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append({"field": loc, "problem": _problem(e), "type": e.get("type")})
    if problems and problems[0]["field"] == "body":
        if problems[0]["type"] == "missing":
            return (
                "the request needs a JSON object body; send one with Content-Type: application/json",
                problems,
            )
        return f"the request body {problems[0]['problem']}", problems
    text = "; ".join(f"{p['field']} {p['problem']}" for p in problems[:5])
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
