"""Strict JSON request bodies: what we accept is exactly what canonical JSON can hash.

FastAPI parses bodies with the stdlib, which takes `NaN`, `Infinity` and `1e999` (not JSON;
canonical JSON would silently store them as `null`) and lone surrogate escapes (no UTF-8
form; Postgres refuses them later, as a 500). Bodies here are parsed by orjson, which
refuses all of those, so they become a 400 that names the problem. orjson turns integers
beyond 64 bits into floats, losing digits, so a body with a long digit run is re-read by
the stdlib with a range check on every integer. A body sent without a JSON content type is
refused with a message that says which header to send, instead of a confusing type error,
and an unknown query parameter is refused rather than ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import Field
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from oa.exceptions import InvalidRequest

# For string fields that reach Postgres text, which cannot hold NUL: the validation handler
# words a mismatch as "must not contain NUL" (`oa.http.errors`).
NoNul = Field(pattern=r"^[^\x00]*$")

# An integer literal of 19+ digits may be outside [-2**63, 2**64 - 1] (what canonical JSON
# can carry); shorter ones never are, so only those bodies pay for the second parse.
_LONG_DIGITS = re.compile(rb"\d{19,}")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _checked_int(text: str) -> int:
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"integer {text[:24]}... is beyond 64 bits; send big numbers as strings")
    return value


def loads_strict(body: bytes) -> Any:
    """Parse a request body; raise `json.JSONDecodeError` with a message a caller can act on."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = f"{exc.msg.split(':')[0]} at character {exc.pos}"
        at = exc.doc[exc.pos : exc.pos + 9]
        if at.startswith(("NaN", "Infinity", "-Infinity")) or "infinity" in exc.msg:
            reason += "; NaN and Infinity are not JSON, send finite numbers"
        raise json.JSONDecodeError(reason, exc.doc, exc.pos) from None
    if _LONG_DIGITS.search(body):
        try:
            value = json.loads(body, parse_int=_checked_int)
        except ValueError as exc:
            raise json.JSONDecodeError(str(exc), body.decode("utf-8", "replace"), 0) from None
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _refuse_odd_query(request: Request, known: list[str]) -> None:
    unknown = [k for k in request.query_params if k not in known]
    if unknown:
        # A misspelt parameter (`?after=` for `?after_seq=`) would otherwise be
        # ignored silently and the caller would get a different answer than asked.
        takes = ", ".join(known) if known else "no query parameters"
        raise InvalidRequest(
            f"unknown query parameter {unknown[0]!r}; this endpoint takes {takes}",
            {"unknown": unknown[:10], "allowed": known},
        )
    repeated = sorted({k for k in request.query_params if len(request.query_params.getlist(k)) > 1})
    if repeated:
        # Every parameter here is a single value; silently taking the last of several
        # (what the framework does) would answer a question nobody asked.
        raise InvalidRequest(
            f"query parameter {repeated[0]!r} is given more than once; give it once",
            {"repeated": repeated[:10]},
        )


def _refuse_nul(request: Request) -> None:
    """Postgres text cannot hold NUL: a parameter with one would fail in the database (a
    500) instead of being refused here with its name."""
    for where, items in (
        ("query parameter", request.query_params.multi_items()),
        ("path parameter", list(request.path_params.items())),
    ):
        for name, value in items:
            if isinstance(value, str) and "\x00" in value:
                raise InvalidRequest(
                    f"{where} {name} must not contain NUL (\\u0000)", {"field": name, "where": where}
                )


async def _refuse_non_json_body(request: Request) -> None:
    content_type = request.headers.get("content-type")
    try:
        body = await request.body()
    except ClientDisconnect:
        # The client left, or BodyLimit cut the body off (it answers 413 itself).
        raise InvalidRequest("the request body ended early; send it whole") from None
    if body and not is_json(content_type):
        raise InvalidRequest(
            f"send the body as JSON with the header Content-Type: application/json "
            f"(got {content_type or 'no Content-Type'})",
            {"header": "Content-Type", "expected": "application/json"},
        )


class StrictJSONRoute(APIRoute):
    """A route that parses JSON strictly, insists on a JSON content type for bodies, and
    refuses unknown, repeated or NUL-carrying parameters."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None
        known_query = sorted(_query_names(self.dependant))

        async def strict_handler(request: Request) -> Response:
            request = StrictJSONRequest(request.scope, request.receive)
            _refuse_odd_query(request, known_query)
            _refuse_nul(request)
            if takes_body:
                await _refuse_non_json_body(request)
            return await handler(request)

        return strict_handler
