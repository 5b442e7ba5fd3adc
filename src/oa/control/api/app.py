"""Control's ASGI app. `create_app` wires the service objects `start` puts on `app.state`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response

import oa
from oa.control.api import auth_routes, errors, sync_routes, wellknown
from oa.control.api.encode import json_response
from oa.control.settings import ControlSettings


def create_app(
    settings: ControlSettings, start: Callable[[FastAPI], Any], stop: Callable[[FastAPI], Any]
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start(app)
        try:
            yield
        finally:
            await stop(app)

    app = FastAPI(
        title="OpenAgents control",
        version=oa.__version__,
        description="Users, sessions and the sync-token authority. Errors use the envelope "
        '`{"error": {"code", "message", "details"}}`.',
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    # Browsers (the dashboard Khala serves) sign in here from another origin.
    cors = [
        o.strip().rstrip("/") for o in os.environ.get("OA_CONTROL_CORS_ORIGINS", "").split(",") if o.strip()
    ]
    if cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    errors.install(app)
    app.include_router(auth_routes.router)
    app.include_router(sync_routes.router)
    app.include_router(wellknown.router)

    @app.get("/healthz", tags=["ops"], summary="Liveness and database reachability")
    async def healthz() -> Response:
        await app.state.db.fetchval("SELECT 1")
        return json_response({"ok": True, "version": oa.__version__, "signing": app.state.keyring.mode})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path in schema.get("paths", {}).values():
                for op in path.values():
                    op.get("responses", {}).pop("422", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
