"""Khala's part of the root, importing nothing of the runtime or control: a Khala process
(`khala_processes`) loads only this, and starts that much faster."""

from __future__ import annotations

from fastapi import FastAPI

from oa.bootstrap.servers import EmbeddedServer, embedded_server
from oa.khala.settings import KhalaSettings
from oa.khala.sync.app import create_sync_app
from oa.khala.sync.config import verifier_for
from oa.khala.sync.node import Node
from oa.khala.sync.tokens import verify_with
from oa.store.database import with_user
from oa.store.privileges import READER


def khala_app(settings: KhalaSettings, node: Node | None = None) -> FastAPI:
    """The sync server, connected as the SELECT-only role; `node` names this process (its
    Postgres application_name, its metrics), None for an unnamed one (tests)."""
    setup = verifier_for(settings)
    app = create_sync_app(
        with_user(settings.database_url, READER),
        verify_with(setup.verifier),
        settings.limits,
        revocations=setup.revocations,
        admin_key=settings.admin_key,
        deployment_class=settings.deployment_class,
        node=node,
        control_url=settings.control_url,
        # A streaming replica to read from, as the same SELECT-only role (OA_KHALA_READ_URL).
        read_url=with_user(settings.read_url, READER) if settings.read_url else None,
        bus=settings.bus,  # OA_KHALA_BUS=nats: batches from `oa khala relay`
    )
    app.state.dashboard["sync_urls"] = list(settings.sync_urls)  # the dashboard fails over between them
    return app


def khala_server(settings: KhalaSettings, node: Node | None = None) -> EmbeddedServer:
    # No permessage-deflate: compressing the same update once per subscriber was the
    # largest cost of fan-out (bench/sync.py profiles), and its zlib state per socket the
    # largest part of an idle subscription's memory.
    app = khala_app(settings, node)
    return embedded_server(
        app, settings.host, settings.port, ws_max_size=1 << 20, ws_per_message_deflate=False
    )
