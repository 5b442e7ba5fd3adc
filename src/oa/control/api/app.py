"""Control's ASGI app. `create_app` wires the service objects `start` puts on `app.state`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from oa.control.api import auth_routes, sync_routes, wellknown
from oa.control.settings import ControlSettings
from oa.http import create_app as create_http_app


def create_app(
    settings: ControlSettings, start: Callable[[FastAPI], Any], stop: Callable[[FastAPI], Any]
) -> FastAPI:
    app = create_http_app(
        "OpenAgents control",
        "Users, sessions and the sync-token authority.",
        start,
        stop,
        health=_health,
        www_authenticate="Bearer",
    )
    app.state.settings = settings
    # Browsers (the dashboard Khala serves) sign in here from another origin.
    cors = list(settings.cors_origins)
    if cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.include_router(auth_routes.router)
    app.include_router(sync_routes.router)
    app.include_router(wellknown.router)

    return app


async def _health(app: FastAPI) -> dict[str, Any]:
    await app.state.db.fetchval("SELECT 1")
    return {"signing": app.state.keyring.mode}
