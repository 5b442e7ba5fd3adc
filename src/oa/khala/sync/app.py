"""The Khala sync server: WebSocket sessions, HTTP hydration, status. Reads only.

It connects to Postgres as `oa_khala_reader` (SELECT only), so even a bug here cannot
write a read model: the single-writer rule holds in the database, not just in the code.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Path, Query, Request, WebSocket
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect

from oa.http import create_app, json_response
from oa.khala.admin.api import admin_router
from oa.khala.admin.key import admin_key_required
from oa.khala.auth.revocations import RevocationList
from oa.khala.store import reader
from oa.khala.sync.bus_settings import BusSettings
from oa.khala.sync.hangup import TransportAbort, hang_up
from oa.khala.sync.hub import Hub
from oa.khala.sync.metrics import exposition
from oa.khala.sync.node import Node
from oa.khala.sync.principal import Verify
from oa.khala.sync.session import Session, SessionLimits
from oa.khala.sync.tokens import READER, close_revoked_sessions, for_sockets, topic_reader
from oa.khala.sync.web import install_web
from oa.khala.topics import TOPICS
from oa.store.database import with_user
from oa.store.privileges import GATE


def create_sync_app(
    reader_url: str,
    verify_token: Verify,
    limits: SessionLimits | None = None,
    revocations: RevocationList | None = None,
    admin_key: str | None = None,
    deployment_class: str = "dev",
    gate_url: str | None = None,
    node: Node | None = None,
    control_url: str | None = None,
    read_url: str | None = None,
    bus: BusSettings | None = None,
) -> FastAPI:
    """`verify_token` checks a token for any of Khala's resources (`principal` says what
    each means): the HTTP reads take both, the socket only `khala-sync` tokens.
    `limits` default to `SessionLimits()` (entry points read `OA_KHALA_*` into them).

    `revocations`, when given, is polled while the app runs and closes revoked sockets.
    `admin_key` opens the admin API (`/admin/v1`) and the operator endpoints (status, lag,
    metrics); without it they refuse everyone. `deployment_class` (dev or prod) is what
    the admin API reports, and what decides whether agents need a production-access grant.
    The admin API's grants, audit trail and requests go through their own pool as
    `oa_khala_gate` (`gate_url`; by default the reader's server and database as that role),
    which may only call the owner's functions (see `oa/store/privileges.py`).

    `node` names this process: in its Postgres connections' application_name (what
    `oa khala status` lists), in `/sync/v1/status` and in every metric's `node` label.
    `control_url` is where the dashboard signs in (its config.json).

    `read_url`, when given, is a streaming replica of `reader_url`'s database (as the same
    reader role; `OA_KHALA_READ_URL` for `oa khala serve`): journal reads, snapshots and live
    queries go there, and the node never serves a watermark the replica has not applied.
    The LISTEN for the projector's wake-up stays on the primary: NOTIFY does not reach a
    replica.

    `bus`, when given (`OA_KHALA_BUS=nats`), brings the projector's batches from NATS
    JetStream, published once by `oa khala relay`, instead of each node reading each batch
    from the primary (see `oa.khala.sync.bus` and `oa bench nodes`).
    """
    limits = limits or SessionLimits()
    named = node is not None
    node = node or Node(id=f"local-{os.getpid()}", url="")
    server_settings = {"application_name": node.application_name} if named else None
    gate_url = gate_url or with_user(reader_url, GATE)
    verify = for_sockets(verify_token)  # what the socket endpoint below uses
    operator = [Depends(admin_key_required(admin_key))]

    async def start(app: FastAPI) -> None:
        # With a replica, the primary's pool serves only the admin API and telling a lagging
        # replica from a rebuild; journal reads go to `read_pool`.
        if read_url is None:
            pool = await asyncpg.create_pool(
                reader_url, min_size=1, max_size=8, server_settings=server_settings
            )
            read_pool = None
        else:
            pool = await asyncpg.create_pool(
                reader_url, min_size=0, max_size=2, server_settings=server_settings
            )
            read_pool = await asyncpg.create_pool(
                read_url, min_size=1, max_size=8, server_settings=server_settings
            )
        app.state.gate_pool = await asyncpg.create_pool(gate_url, min_size=0, max_size=2)
        hub = Hub(
            reader_url,
            pool,
            max_queued_bytes=limits.max_server_queued_bytes,
            application_name=server_settings["application_name"] if server_settings else None,
            read_pool=read_pool,
            bus=bus,
        )
        await hub.start()
        app.state.hub = hub
        if revocations is not None:
            close_revoked_sessions(revocations, hub)
            await revocations.start()

    async def health(app: FastAPI) -> dict[str, Any]:
        await app.state.hub.pool.fetchval("SELECT 1")
        return {}

    async def stop(app: FastAPI) -> None:
        if revocations is not None:
            await revocations.stop()
        await app.state.hub.stop()
        await app.state.hub.pool.close()
        if app.state.hub.replica:
            await app.state.hub.primary_pool.close()
        await app.state.gate_pool.close()

    app = create_app(
        "Khala sync",
        "Read models over WebSockets and HTTP hydration.",
        start,
        stop,
        health=health,
        www_authenticate="Bearer",
    )
    app.state.node = node
    app.state.dashboard = {"control_url": control_url.rstrip("/") if control_url else None}
    app.include_router(admin_router(admin_key, deployment_class))
    app.add_middleware(TransportAbort)  # lets a socket that stopped reading be closed hard

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
        "/sync/v1/topics/{topic}/snapshot",
        dependencies=READER,
        summary="Hydrate a topic: a consistent snapshot at a watermark",
    )
    async def snapshot(
        request: Request,
        topic: Annotated[str, Path(max_length=100)],
        limit: Annotated[int, Query(ge=1, le=10000)] = 5000,
    ) -> Response:
        p = await topic_reader(verify_token, request, topic)
        hub: Hub = app.state.hub
        async with hub.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            head, rows = await reader.snapshot(conn, topic, p.user_id, p.org_id, limit)
        body = {
            "topic": topic,
            "watermark": head,
            "documents": [r.wire() for r in rows],
            "truncated": len(rows) == limit,
        }
        return json_response(body)

    @app.get(
        "/sync/v1/status",
        dependencies=operator,
        summary="Topic heads and live subscriptions per topic (operators: the admin key)",
    )
    async def status() -> Response:
        hub: Hub = app.state.hub
        body = {
            "topics": {t: {"head": hub.heads.get(t, 0), "subscribers": hub.subscribers(t)} for t in TOPICS},
            "sessions": len(hub.sessions),
            "live_queries": hub.queries.count,
            "batches_dispatched": hub.batches_dispatched,
            "node": {"id": node.id, "url": node.url, "pid": node.pid, "started_at": node.started_at},
            "bus": "nats" if bus is not None else "postgres",
            "bus_batches": hub.bus_batches,  # taken from the bus, not read from Postgres
            "read_replica": hub.replica,
        }
        return json_response(body)

    @app.get("/metrics", dependencies=operator, include_in_schema=False)
    async def metrics() -> Response:
        return Response(await exposition(app.state.hub, node), media_type=CONTENT_TYPE_LATEST)

    install_web(
        app, verify_token, operator
    )  # the dashboard, /client/khala.js, /sync/v1/lag, document history
    return app
