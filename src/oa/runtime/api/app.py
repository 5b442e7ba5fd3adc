"""The runtime's ASGI app. `create_app` wires the service objects it is handed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

import oa
from oa.runtime.api import errors, policy, replay, runs, spend, workers
from oa.runtime.api.encode import json_response
from oa.runtime.api.fastpath import AppendFastPath
from oa.runtime.api.jsonbody import StrictJSONRoute
from oa.runtime.api.limits import BodyLimit
from oa.runtime.settings import RuntimeSettings


def create_app(
    settings: RuntimeSettings,
    start: Callable[[FastAPI], Any],
    stop: Callable[[FastAPI], Any],
) -> FastAPI:
    """`start(app)`/`stop(app)` open and close what the routes need (set on `app.state`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start(app)
        try:
            yield
        finally:
            await stop(app)

    app = FastAPI(
        title="OpenAgents runtime",
        version=oa.__version__,
        description="The authority for runs and their events. Errors use the envelope "
        '`{"error": {"code", "message", "details"}}`.',
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime_settings = settings
    app.router.route_class = StrictJSONRoute  # /healthz too: unknown query parameters are refused
    errors.install(app)
    app.include_router(runs.router)
    app.include_router(workers.router)
    app.include_router(policy.router)
    app.include_router(spend.router)
    app.include_router(replay.router)

    @app.get("/healthz", tags=["ops"], summary="Liveness and database reachability")
    async def healthz() -> Response:
        await app.state.db.fetchval("SELECT 1")
        return json_response({"ok": True, "version": oa.__version__})

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            # We answer validation failures with 400 + the envelope, never FastAPI's 422.
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
    # Added first, so it sits inside the body limit: oversized bodies never reach it.
    app.add_middleware(AppendFastPath, secret=settings.caller_secret)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
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
