"""The FastAPI app every oa HTTP service starts from (runtime, control, Khala).

What each gets the same way: the error envelope for every failure (`errors.install`),
strict JSON bodies and query parameters on every route (`strict.StrictJSONRoute`), a
lifespan from `start(app)`/`stop(app)`, and an OpenAPI document without FastAPI's 422
(we answer validation failures with 400 and the envelope).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response

import oa
from oa.http import errors
from oa.http.strict import StrictJSONRoute

ENVELOPE_NOTE = 'Errors use the envelope `{"error": {"code", "message", "details"}}`.'


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def create_app(
    title: str,
    description: str,
    start: Callable[[FastAPI], Any] | None = None,
    stop: Callable[[FastAPI], Any] | None = None,
    *,
    health: Callable[[FastAPI], Awaitable[dict[str, Any]]] | None = None,
    www_authenticate: str | None = None,
) -> FastAPI:
    """`start`/`stop` open and close what the routes need (set on `app.state`); either may
    be None. The service's name for the 500 message is `title` without "OpenAgents ".

    `/healthz` answers `{"ok": true, "version"}` plus what `health(app)` returns; `health`
    is where a service proves its database answers (an exception there is a 500)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start is not None:
            await start(app)
        try:
            yield
        finally:
            if stop is not None:
                await stop(app)

    app = FastAPI(
        title=title,
        version=oa.__version__,
        description=f"{description} {ENVELOPE_NOTE}",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    # Every route, /healthz too: unknown or repeated query parameters are refused.
    app.router.route_class = StrictJSONRoute
    errors.install(app, title.removeprefix("OpenAgents "), www_authenticate)

    @app.get("/healthz", tags=["ops"], summary="Liveness and database reachability")
    async def healthz() -> Response:
        extra = await health(app) if health is not None else {}
        return json_response({"ok": True, "version": oa.__version__, **extra})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path in schema.get("paths", {}).values():
                for op in path.values():
                    op.get("responses", {}).pop("422", None)
                    for param in op.get("parameters", []):
                        _drop_null(param)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _drop_null(param: dict[str, Any]) -> None:
    """A query, path or header value cannot be JSON null (absent is `required: false`), so
    `anyOf: [T, null]` becomes `T`; fuzzers otherwise "negate" the null branch and send a
    valid string."""
    schema = param.get("schema", {})
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1 and len(kept) < len(branches):
            del schema["anyOf"]
            schema.update(kept[0])
