"""The Khala sync server: WebSocket sessions, HTTP hydration, status. Reads only.

It connects to Postgres as `oa_khala_reader` (SELECT only), so even a bug here cannot
write a read model: the single-writer rule holds in the database, not just in the code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import FastAPI, Header, Path, Query, Request, WebSocket
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect

import oa
from oa.khala.admin.api import AdminRefused, admin_router
from oa.khala.admin.api import error_response as admin_error
from oa.khala.auth.revocations import RevocationList
from oa.khala.store import reader
from oa.khala.sync.hangup import TransportAbort, hang_up
from oa.khala.sync.hub import Hub
from oa.khala.sync.principal import TokenRefused, Verify
from oa.khala.sync.session import Session, SessionLimits
from oa.khala.sync.tokens import close_revoked_sessions
from oa.khala.sync.web import install_web
from oa.khala.topics import TOPICS
from oa.store.database import with_user
from oa.store.privileges import GATE


def _error(status: int, code: str, message: str, **details: Any) -> Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_sync_app(
    reader_url: str,
    verify: Verify,
    limits: SessionLimits | None = None,
    revocations: RevocationList | None = None,
    admin_key: str | None = None,
    deployment_class: str = "dev",
    gate_url: str | None = None,
) -> FastAPI:
    """`limits` default to `SessionLimits.from_env()` (`OA_KHALA_MAX_QUEUED_BYTES`, ...).

    `revocations`, when given, is polled while the app runs and closes revoked sockets.

    `admin_key` opens the admin API (`/admin/v1`); `deployment_class` (dev or prod) is what
    it reports, and what decides whether agents need a production-access grant. The admin
    API's grants, audit trail and requests go through their own pool as `oa_khala_gate`
    (`gate_url`; by default the reader's server and database as that role), which may only
    call the owner's functions (see `oa/store/privileges.py`).
    """
    limits = limits or SessionLimits.from_env()
    gate_url = gate_url or with_user(reader_url, GATE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(reader_url, min_size=1, max_size=8)
        app.state.gate_pool = await asyncpg.create_pool(gate_url, min_size=0, max_size=2)
        hub = Hub(reader_url, pool, max_queued_bytes=limits.max_server_queued_bytes)
        await hub.start()
        app.state.hub = hub
        if revocations is not None:
            close_revoked_sessions(revocations, hub)
            await revocations.start()
        try:
            yield
        finally:
            if revocations is not None:
                await revocations.stop()
            await hub.stop()
            await pool.close()
            await app.state.gate_pool.close()

    app = FastAPI(
        title="Khala sync", version=oa.__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None
    )
    app.include_router(admin_router(admin_key, deployment_class))
    app.add_middleware(TransportAbort)  # lets a socket that stopped reading be closed hard

    @app.exception_handler(AdminRefused)
    async def admin_refused(_: Request, exc: AdminRefused) -> Response:
        return admin_error(exc)

    @app.websocket("/sync/v1/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        hub: Hub = app.state.hub

        async def send(data: bytes) -> None:
            await ws.send_text(data.decode("utf-8"))

        async def receive() -> str | bytes | None:
            try:
                msg = await ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return None
            if msg["type"] == "websocket.disconnect":
                return None
            return msg.get("text") or msg.get("bytes") or ""

        session = Session(hub, verify, send, receive, ws.headers.get("origin"), limits)
        try:
            await session.run()
        finally:
            code = 4000 if session.closing is not None else 1000
            await hang_up(ws, code, limits.write_timeout_s, stalled=session.stalled)

    @app.get(
        "/sync/v1/topics/{topic}/snapshot", summary="Hydrate a topic: a consistent snapshot at a watermark"
    )
    async def snapshot(
        request: Request,
        topic: Annotated[str, Path(max_length=100)],
        authorization: Annotated[str | None, Header()] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 5000,
    ) -> Response:
        if topic not in TOPICS:
            return _error(404, "not_found", f"unknown topic {topic!r}; known: {', '.join(TOPICS)}")
        if not authorization or not authorization.lower().startswith("bearer "):
            return _error(401, "unauthorized", "send Authorization: Bearer <sync token from control>")
        try:
            p = await verify(authorization[7:].strip(), request.headers.get("origin"))
        except TokenRefused as exc:
            return _error(401, exc.code, exc.message)
        if topic not in p.scopes:
            return _error(403, "forbidden_topic", f"your token does not grant {topic}", topic=topic)
        hub: Hub = app.state.hub
        async with hub.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            head, rows = await reader.snapshot(conn, topic, p.user_id, p.org_id, limit)
        body = {
            "topic": topic,
            "watermark": head,
            "documents": [r.wire() for r in rows],
            "truncated": len(rows) == limit,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/sync/v1/status", summary="Topic heads and live subscriptions per topic")
    async def status() -> Response:
        hub: Hub = app.state.hub
        body = {
            "topics": {t: {"head": hub.heads.get(t, 0), "subscribers": hub.subscribers(t)} for t in TOPICS},
            "sessions": len(hub.sessions),
            "batches_dispatched": hub.batches_dispatched,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        await app.state.hub.pool.fetchval("SELECT 1")
        return Response(orjson.dumps({"ok": True}), media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    install_web(app, verify)  # the dashboard, /client/khala.js, /sync/v1/lag, document history
    return app
