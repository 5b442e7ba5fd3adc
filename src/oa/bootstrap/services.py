"""The services, each built from its settings: runtime, control, Khala, the projector."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from oa.bootstrap.khala import khala_app, khala_server
from oa.bootstrap.servers import EmbeddedServer, embedded_server
from oa.control.service.container import build_control_app
from oa.control.settings import ControlSettings
from oa.runtime.projector.projector import Projector
from oa.runtime.service.container import build_runtime_app
from oa.runtime.settings import RuntimeSettings
from oa.store.database import with_user
from oa.store.privileges import WRITER

__all__ = [
    "control_app",
    "control_server",
    "khala_app",
    "khala_server",
    "projector",
    "runtime_app",
    "runtime_server",
]


def runtime_app(database_url: str, settings: RuntimeSettings, pool_size: int = 10) -> FastAPI:
    return build_runtime_app(database_url, settings, pool_size=pool_size)


def control_app(database_url: str, settings: ControlSettings, pool_size: int = 10) -> FastAPI:
    return build_control_app(database_url, settings, pool_size=pool_size)


def projector(database_url: str, **options: Any) -> Projector:
    """Khala's only writer, as the writer role (options: `idle_poll_s`, `batch_size`, ...)."""
    return Projector(with_user(database_url, WRITER), **options)


def runtime_server(
    database_url: str, settings: RuntimeSettings, host: str, port: int, pool_size: int = 10
) -> EmbeddedServer:
    return embedded_server(runtime_app(database_url, settings, pool_size), host, port)


def control_server(
    database_url: str, settings: ControlSettings, host: str, port: int, pool_size: int = 10
) -> EmbeddedServer:
    return embedded_server(control_app(database_url, settings, pool_size), host, port)
