"""What the server commands share at their entry point: ports, the database URL, settings
from the environment. The servers themselves are built by the composition root
(`oa.bootstrap`)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from oa.bootstrap import services
from oa.bootstrap.servers import WS_IMPL, EmbeddedServer, embedded_server, serve_all
from oa.control.settings import ControlSettings
from oa.deployment import LocalDeployment
from oa.runtime.settings import RuntimeSettings
from oa.runtime.signing import load_or_create_secret
from oa.store import migrate, resolve_database_url


@dataclass
class Listening:
    name: str
    url: str


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(host: str, wanted: int) -> int:
    if wanted and port_free(host, wanted):
        return wanted
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def database_url(dep: LocalDeployment) -> str:
    """OA_DATABASE_URL, else the running deployment's database (its deployment.env), else the
    embedded one in this home: a CLI command must reach the database `oa run` serves from."""
    running = dep.read_env().get("OA_DATABASE_URL") if dep.stale_reason() is None else None
    return os.environ.get("OA_DATABASE_URL") or running or resolve_database_url(dep.home)


def prepare_database(dep: LocalDeployment) -> str:
    url = database_url(dep)
    migrate(url)
    return url


def runtime_settings(dep: LocalDeployment) -> RuntimeSettings:
    """The runtime's settings from the environment (the caller secret: OA_RUNTIME_CALLER_SECRET,
    else the deployment's file)."""
    secret_env = os.environ.get("OA_RUNTIME_CALLER_SECRET")
    secret = secret_env.encode() if secret_env else load_or_create_secret(dep.caller_secret_file)
    return RuntimeSettings.from_env(os.environ, secret)


def runtime_server(
    url: str, dep: LocalDeployment, host: str, port: int, pool_size: int = 10
) -> EmbeddedServer:
    return services.runtime_server(url, runtime_settings(dep), host, port, pool_size)


def control_server(
    url: str,
    dep: LocalDeployment,
    host: str,
    port: int,
    pool_size: int = 10,
    cors_origins: tuple[str, ...] = (),
) -> EmbeddedServer:
    """Control (auth authority) on its own port; its issuer is its own URL unless
    OA_CONTROL_ISSUER says otherwise."""
    settings = ControlSettings.from_env(os.environ, dep.home, f"http://{host}:{port}", cors_origins)
    return services.control_server(url, settings, host, port, pool_size)


__all__ = [
    "WS_IMPL",
    "EmbeddedServer",
    "Listening",
    "control_server",
    "database_url",
    "embedded_server",
    "pick_port",
    "prepare_database",
    "runtime_server",
    "serve_all",
]
