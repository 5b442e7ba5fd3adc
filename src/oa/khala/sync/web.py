"""What the dashboard needs from the sync server beyond the protocol: the static files
(the browser client and the dashboard), its config, projector lag and a document's history.

Kept out of `app.py` so the sync server's hot paths stay small; `install_web` adds these
routes to an app `create_sync_app` built. Everything here reads, as the SELECT-only role.

Lag: the reader role may read only the `khala` schema, so the runtime's journal head is
read when the database allows it and reported as `null` otherwise; what is always known
is each projection's position, when it last moved and its last error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Path, Query, Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from oa.http import json_response
from oa.khala.store import reader
from oa.khala.sync.hub import Hub
from oa.khala.sync.principal import Verify
from oa.khala.sync.tokens import READER, topic_reader
from oa.khala.topics import dashboard_config as topics_config

WEB_DIR = FsPath(__file__).resolve().parent.parent / "web"
NO_CACHE = {"Cache-Control": "no-cache"}


def _json(body: Any) -> Response:
    return json_response(body, headers=NO_CACHE)


def dashboard_config(app: FastAPI) -> dict[str, Any]:
    """Control's URL (where the page signs in), the Khala nodes the page may connect to and
    the token timings the page uses.

    `sync_urls` lists the Khala nodes over one database (KhalaSettings.sync_urls,
    OA_KHALA_URLS): the page rotates through them when its node dies. Empty: only the
    page's own origin.
    `app.state.dashboard` (a dict: `create_sync_app` puts its `control_url` there, the
    composition root its `sync_urls`) overrides."""
    overrides: dict[str, Any] = getattr(app.state, "dashboard", None) or {}
    return {
        "control_url": None,
        "sync_urls": [],
        "token_ttl_s": 300,
        "refresh_before_s": 30,
        **topics_config(),  # topics, live topics and document prefixes, from the proto catalog
        **overrides,
    }


async def projector_lag(pool: asyncpg.Pool) -> dict[str, Any]:
    async with pool.acquire() as conn:
        rows = await reader.live_checkpoints(conn)
        errors = await reader.recent_errors(conn, 20)
        try:
            head: int | None = await conn.fetchval("SELECT position FROM runtime.journal_head WHERE id = 1")
        except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedTableError):
            head = None
    return {
        "at_ms": int(time.time() * 1000),
        "journal_head": head,
        "projections": {
            r["projection"]: {
                "position": r["position"],
                "events_behind": None if head is None else max(0, head - r["position"]),
                "seconds_since_update": round(float(r["idle_s"]), 3),
                "failed_at_position": r["failed_at_position"],
                "error": r["error"],
            }
            for r in rows
        },
        "errors": [
            {
                "id": e["id"],
                "at": e["at"].isoformat(),
                "source": e["source"],
                "projection": e["projection"],
                "position": e["position"],
                "message": e["message"],
            }
            for e in errors
        ],
    }


def install_web(app: FastAPI, verify: Verify, operator: Sequence[Any]) -> None:
    """Add the dashboard, the browser client, `/sync/v1/lag` and document history to `app`.

    `operator` is the dependency list that admits operators only (the admin key)."""

    @app.get("/client/khala.js", include_in_schema=False)
    async def client_js() -> FileResponse:
        return FileResponse(WEB_DIR / "khala.js", media_type="text/javascript", headers=NO_CACHE)

    @app.get("/client/live.js", include_in_schema=False)
    async def client_live_js() -> FileResponse:  # live queries and deltas, imported by khala.js
        return FileResponse(WEB_DIR / "live.js", media_type="text/javascript", headers=NO_CACHE)

    # The client's vendored libraries (fast-json-patch, MIT: JSON Patch for deltas), imported
    # by khala.js by relative path, so `/client/khala.js` works from any page or origin.
    app.mount("/client/vendor", StaticFiles(directory=WEB_DIR / "vendor"), name="client-vendor")

    @app.get("/dashboard/config.json", include_in_schema=False)
    async def config() -> Response:
        return _json(dashboard_config(app))

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard_root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    @app.get(
        "/sync/v1/lag",
        dependencies=list(operator),
        summary="Projector positions, lag behind the runtime journal, recent errors (operators: the admin key)",
    )
    async def lag() -> Response:
        # Operators only: error messages name runs and workers of every tenant.
        hub: Hub = app.state.hub
        return _json(await projector_lag(hub.pool))

    @app.get(
        "/sync/v1/topics/{topic}/documents/{doc_key:path}/history",
        dependencies=READER,
        summary="A document's changes still in the stream journal (newest first)",
    )
    async def history(
        request: Request,
        topic: Annotated[str, Path(max_length=100)],
        doc_key: Annotated[str, Path(max_length=300)],
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Response:
        who = await topic_reader(verify, request, topic)
        hub: Hub = app.state.hub
        rows = await reader.document_history(hub.pool, topic, doc_key, limit)
        # Someone else's document answers exactly as one that never existed (no changes):
        # a different answer would tell any caller which keys exist.
        visible = [(r, at) for r, at in rows if r.visible_to(who.user_id, who.org_id)]
        body = {
            "topic": topic,
            "doc_key": doc_key,
            "changes": [{**r.wire(), "committed_at": at.isoformat()} for r, at in visible],
        }
        return _json(body)

    app.mount("/dashboard", StaticFiles(directory=WEB_DIR / "dashboard", html=True), name="dashboard")
