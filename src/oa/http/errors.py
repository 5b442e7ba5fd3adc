"""Every failure leaves as the error envelope `{"error": {code, message, details}}`.

This is the one place that writes it: `error_body` (bytes, for raw ASGI senders) and
`error_response` (a Starlette response) both start from an `OAError`. `install` adds the
handlers that turn whatever a route raises, and whatever the framework refuses (a
parameter that fails validation, an unknown path), into an `OAError`, never a stack
trace and never FastAPI's `{"detail": ...}` 422.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from oa.exceptions import InternalError, InvalidRequest, NotFound, OAError, RateLimited

log = logging.getLogger(__name__)


def error_body(err: OAError) -> bytes:
    return orjson.dumps(err.envelope())


def error_response(
    err: OAError, *, status: int | None = None, www_authenticate: str | None = None
) -> Response:
    """`status` overrides the error's own (405 is an `invalid_request` with its own status)."""
    headers = {}
    if isinstance(err, RateLimited) and "retry_after_s" in err.details:
        headers["Retry-After"] = str(err.details["retry_after_s"])
    if err.status == 401 and www_authenticate:
        headers["WWW-Authenticate"] = www_authenticate
    return Response(
        error_body(err), status_code=status or err.status, media_type="application/json", headers=headers
    )


def documented_errors(
    model: type[BaseModel], descriptions: Mapping[int, str]
) -> Callable[..., dict[int | str, dict[str, Any]]]:
    """An `error_responses(400, 401, ...)` for route decorators: OpenAPI entries that name
    the envelope model and what each status means in that service."""

    def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
        return {c: {"model": model, "description": descriptions[c]} for c in codes}

    return error_responses


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
    # "Input should be ..." reads as "<field> should be ..." after the field's name.
    msg = str(e.get("msg", "is invalid")).removeprefix("Input ")
    if kind and kind.endswith("_type"):
        return f"{msg}, got {_json_kind(e.get('input'))}"
    return msg


def _field(loc: tuple[Any, ...]) -> str:
    """`body.payload.x` -> `payload.x`; `("query", "limit")` -> `query parameter limit`."""
    if len(loc) >= 2 and loc[0] in ("query", "path", "header"):
        where = "query parameter" if loc[0] == "query" else loc[0]
        return f"{where} {'.'.join(str(p) for p in loc[1:])}"
    return ".".join(str(p) for p in loc if p != "body") or "body"


def validation_error(errors: list[Any]) -> InvalidRequest:
    """FastAPI's validation failures as one 400 that names each field and what it expects."""
    problems = []
    for e in errors[:20]:
        if e.get("type") == "json_invalid":
            where = [p for p in e.get("loc", ()) if isinstance(p, int)]
            reason = (e.get("ctx") or {}).get("error", "syntax error")
            at = f" at character {where[0]}" if where and "character" not in reason else ""
            message = f"the request body is not valid JSON ({reason}{at}); send a JSON object"
            return InvalidRequest(
                message, {"problems": [{"field": "body", "problem": reason, "type": "json_invalid"}]}
            )
        problems.append(
            {"field": _field(tuple(e.get("loc", ()))), "problem": _problem(e), "type": e.get("type")}
        )
    if problems and problems[0]["field"] == "body":
        if problems[0]["type"] == "missing":
            message = "the request needs a JSON object body; send one with Content-Type: application/json"
        else:
            message = f"the request body {problems[0]['problem']}"
    else:
        message = "invalid request: " + "; ".join(f"{p['field']} {p['problem']}" for p in problems[:5])
    return InvalidRequest(message, {"problems": problems})


def install(app: FastAPI, service: str, www_authenticate: str | None = None) -> None:
    """`service` names who failed in the 500 message; `www_authenticate` is sent with 401s."""

    def respond(err: OAError, status: int | None = None) -> Response:
        return error_response(err, status=status, www_authenticate=www_authenticate)

    @app.exception_handler(OAError)
    async def _oa(_: Request, exc: OAError) -> Response:
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return respond(validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return respond(NotFound(f"no such endpoint: {request.method} {request.url.path}"))
        if exc.status_code == 405:
            return respond(InvalidRequest(f"{request.method} is not allowed on {request.url.path}"), 405)
        return respond(InvalidRequest(str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return respond(InternalError(f"{service} failed unexpectedly; it was logged, retry later"))
