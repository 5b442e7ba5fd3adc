"""Khala's settings, beside `RuntimeSettings` and `ControlSettings`: read once from the
environment at an entry point (`KhalaSettings.from_env`), then passed as an argument to
the composition root (`oa.bootstrap`) and, pickled, to each Khala process it starts.

Nothing below the entry points reads `os.environ`: a test or a benchmark builds the same
server from a `KhalaSettings` it writes itself.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from oa.khala.sync.bus_settings import BusSettings
from oa.khala.sync.session import SessionLimits

DEPLOYMENT_CLASSES = ("dev", "prod")
# Postgres keeps 63 bytes of `application_name`; ours is `oa-khala:<node id>:<url>` (`nodes`).
NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,24}")


def default_node_id() -> str:
    """`<short host name>-<pid>`: unique among the processes of a fleet, and short."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname().split(".")[0])[:12] or "host"
    return f"{host}-{os.getpid()}"


def sync_urls_from(value: str) -> tuple[str, ...]:
    """OA_KHALA_URLS: the Khala nodes over one database, comma-separated base URLs. The
    dashboard's client rotates through them when its node dies (its config's `sync_urls`)."""
    urls = tuple(u.strip().rstrip("/") for u in value.split(",") if u.strip())
    bad = [u for u in urls if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", u)]
    if bad:
        raise ValueError(
            f"OA_KHALA_URLS={value!r}: {bad[0]!r} is not an http(s) base URL; "
            "list every node as http://host:port, comma-separated"
        )
    return urls


@dataclass(frozen=True)
class KhalaSettings:
    """What one Khala node (one or several processes on one port) is built from.

    * `database_url`: the primary (the owner's URL; the server connects as the SELECT-only
      `oa_khala_reader` role on it). `read_url`: a streaming replica to read the journal and
      documents from (`OA_KHALA_READ_URL`); the wake-up still comes from the primary.
    * `bus`: the NATS JetStream bus the projector's batches come over (`OA_KHALA_BUS=nats`,
      published by `oa khala relay`); None: each node reads them from Postgres.
    * `control_url`: control's base URL: its JWKS, its revocation feed, and where the
      dashboard signs in. `token_issuer`: the exact `iss` accepted (default: control's URL).
      `jwks_file`: verify against a fixed JWKS instead (offline, tests, benchmarks).
    * `admin_key`: opens `/admin/v1` and the operator endpoints (status, lag, metrics).
    * `node_id`: this process's name in `oa khala status` and the metrics' `node` label
      (default `<host>-<pid>`, decided in the process itself). With `workers` > 1 each
      process gets `<node_id>.<n>` and also listens on a port of its own (`node_port`, 0 =
      any free one) so its metrics and status can be reached one process at a time.
    * `sync_urls`: every node of the fleet, for the dashboard's client to fail over between
      (served in its config.json); empty: the page's own origin only.
    """

    database_url: str
    control_url: str | None = None
    token_issuer: str | None = None
    jwks_file: Path | None = None
    control_service_token: str | None = None
    allowed_origins: frozenset[str] | None = None
    admin_key: str | None = None
    deployment_class: str = "dev"
    limits: SessionLimits = field(default_factory=SessionLimits)
    host: str = "127.0.0.1"
    port: int = 8789
    workers: int = 1
    node_id: str | None = None
    node_port: int = 0
    read_url: str | None = None
    bus: BusSettings | None = None
    sync_urls: tuple[str, ...] = ()  # every node the dashboard may connect to (OA_KHALA_URLS)

    def __post_init__(self) -> None:
        if self.deployment_class not in DEPLOYMENT_CLASSES:
            raise ValueError(
                f"KHALA_DEPLOYMENT_CLASS={self.deployment_class!r}: use one of {', '.join(DEPLOYMENT_CLASSES)}"
            )
        if self.node_id is not None and not NODE_ID.fullmatch(self.node_id):
            raise ValueError(
                f"node id {self.node_id!r}: use 1-24 letters, digits, '.', '_' or '-' "
                "(it is part of the Postgres application_name, which holds 63 bytes)"
            )
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers={self.workers}: use 1..64 processes")
        if not self.control_url and not self.token_issuer:
            raise ValueError(
                "Khala needs OA_CONTROL_URL (or OA_SYNC_TOKEN_ISSUER with OA_KHALA_JWKS_FILE) to verify tokens"
            )

    @property
    def url(self) -> str:
        """The shared port's URL (what clients are given)."""
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, database_url: str, home: Path, **overrides: object
    ) -> KhalaSettings:
        """The variables `oa khala serve` documents (README: Configuration); `overrides`
        (the CLI's flags) win. Raises ValueError (or SystemExit for a bad limit) saying
        which variable is wrong."""
        control = env.get("OA_CONTROL_URL", "").rstrip("/") or None
        token = env.get("OA_CONTROL_SERVICE_TOKEN") or None
        token_file = home / "control-service.token"
        if control and not token and token_file.exists():
            token = token_file.read_text().strip() or None
        origins = frozenset(
            o.strip() for o in env.get("OA_KHALA_ALLOWED_ORIGINS", "").split(",") if o.strip()
        )
        jwks = env.get("OA_KHALA_JWKS_FILE")
        values: dict[str, object] = {
            "database_url": database_url,
            "control_url": control,
            "token_issuer": env.get("OA_SYNC_TOKEN_ISSUER") or None,
            "jwks_file": Path(jwks) if jwks else None,
            "control_service_token": token,
            "allowed_origins": origins or None,
            "admin_key": env.get("KHALA_SELF_HOSTED_ADMIN_KEY") or None,
            "deployment_class": env.get("KHALA_DEPLOYMENT_CLASS", "dev"),
            "limits": SessionLimits.from_env(env),
            "node_id": env.get("OA_KHALA_NODE_ID") or None,
            "read_url": env.get("OA_KHALA_READ_URL", "").strip() or None,
            "bus": BusSettings.from_env(env),
            "sync_urls": sync_urls_from(env.get("OA_KHALA_URLS", "")),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
