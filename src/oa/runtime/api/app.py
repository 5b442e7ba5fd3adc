"""The runtime's ASGI app. `create_app` wires the service objects it is handed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from oa.http import create_app as create_http_app
from oa.http.limits import BodyLimit
from oa.runtime.api import policy, replay, runs, spend, workers
from oa.runtime.api.fastpath import AppendFastPath
from oa.runtime.settings import RuntimeSettings


def create_app(
    settings: RuntimeSettings,
    start: Callable[[FastAPI], Any],
    stop: Callable[[FastAPI], Any],
) -> FastAPI:
    """`start(app)`/`stop(app)` open and close what the routes need (set on `app.state`)."""
    app = create_http_app(
        "OpenAgents runtime", "The authority for runs and their events.", start, stop, health=_database
    )
    app.state.runtime_settings = settings
    app.include_router(runs.router)
    app.include_router(workers.router)
    app.include_router(policy.router)
    app.include_router(spend.router)
    app.include_router(replay.router)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # Added first, so it sits inside the body limit: oversized bodies never reach it.
    app.add_middleware(AppendFastPath, secret=settings.caller_secret)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


async def _database(app: FastAPI) -> dict[str, Any]:
    await app.state.db.fetchval("SELECT 1")
    return {}
