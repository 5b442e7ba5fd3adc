"""A running Khala: projector task + sync server on a real port, tokens from a test issuer.

The issuer here is a test ES256 key (control's own minting is tested in the control suite
and end to end in test_end_to_end); the verifier is the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

from oa.bootstrap import services
from oa.khala.auth.jwks import KeySet, StaticKeys, VerificationKey
from oa.khala.auth.verifier import SyncTokenVerifier, VerifierConfig
from oa.khala.settings import KhalaSettings
from oa.khala.sync.hub import Hub
from oa.khala.sync.session import SessionLimits
from oa.khala.topics import TOPIC_NAMES
from oa.runtime.projector.projector import Projector
from tests.support.servers import ChildProcess, free_port, serve_in_loop

ISSUER = "oa-control-test"
AUDIENCE = "oa-khala-sync"
KID = "test-key-1"
_KEY = ec.generate_private_key(ec.SECP256R1())


def mint(
    user: str, org: str = "", scopes: tuple[str, ...] = TOPIC_NAMES, ttl: int = 300, **extra: object
) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": f"user:{user}",
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "sid": f"sess-{user}",
        "oa_user_id": user,
        "oa_org_id": org or f"personal-{user}",
        "oa_sync_scopes": list(scopes),
        "oa_claims_version": 1,
        **extra,
    }
    return jwt.encode(claims, _KEY, algorithm="ES256", headers={"kid": KID})


def verifier() -> SyncTokenVerifier:
    keys = StaticKeys(KeySet({KID: VerificationKey(KID, "ES256", _KEY.public_key())}))
    return SyncTokenVerifier(VerifierConfig(issuer=ISSUER, audience=AUDIENCE), keys)


@dataclass
class Khala:
    url: str
    projector: Projector
    app: FastAPI

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.state.hub
        return hub

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def jwks_file() -> Path:
    """The test issuer's JWKS as a file (what `OA_KHALA_JWKS_FILE` names), written once."""
    path = Path(tempfile.gettempdir()) / f"oa-test-jwks-{os.getpid()}-{KID}.json"
    if not path.exists():
        path.write_text(json.dumps(jwks_document()))
    return path


def khala_settings(database_url: str, **values: Any) -> KhalaSettings:
    """What `oa khala serve` would be given, with tokens from this module's test issuer."""
    return KhalaSettings(database_url, token_issuer=ISSUER, jwks_file=jwks_file(), **values)


@asynccontextmanager
async def running_khala(
    database_url: str, limits: SessionLimits | None = None, admin_key: str | None = None
) -> AsyncIterator[Khala]:
    """The projector and a sync server built by the composition root (`oa.bootstrap`)."""
    projector = services.projector(database_url, idle_poll_s=0.5)
    projector.start()
    settings = khala_settings(database_url, limits=limits or SessionLimits(), admin_key=admin_key)
    app = services.khala_app(settings)
    try:
        async with serve_in_loop(app) as url:
            yield Khala(url, projector, app)
    finally:
        await projector.stop()


def token_provider(user: str, org: str = "", ttl: int = 300) -> Callable[[], Awaitable[str]]:
    async def provide() -> str:
        return mint(user, org, ttl=ttl)

    return provide


def jwks_document() -> dict[str, object]:
    from jwt.algorithms import ECAlgorithm

    jwk = ECAlgorithm.to_jwk(_KEY.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": KID, "alg": "ES256", "use": "sig"}]}


def node_env(database_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of an `oa khala serve` child that accepts this module's tokens."""
    jwks = home / "jwks.json"
    if not jwks.exists():
        jwks.write_text(json.dumps(jwks_document()))
    return {
        "OA_DATABASE_URL": database_url,
        "OA_HOME": str(home),
        "OA_KHALA_JWKS_FILE": str(jwks),
        "OA_SYNC_TOKEN_ISSUER": ISSUER,
        **extra,
    }


@dataclass
class ChildKhala(ChildProcess):
    """`oa khala serve` in a child process (so a test can kill -9 it, or read its RSS)."""

    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def start(self, log: Path) -> None:
        """Start on `port` (a free one the first time): a restart keeps its port."""
        self.port = self.port or free_port()
        self.logs.append(log)
        self.spawn(["khala", "serve", "--port", str(self.port)], self.env, log=log)

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@contextmanager
def khala_nodes(n: int, env: dict[str, str], logs: Path) -> Iterator[list[ChildKhala]]:
    """`n` Khala nodes (child processes on ports of their own) over one database."""
    nodes = [ChildKhala(dict(env)) for _ in range(n)]
    try:
        for i, node in enumerate(nodes):
            node.start(logs / f"node{i}.log")
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def nats_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def khala_bus(bus: str, env: dict[str, str], logs: Path) -> Iterator[dict[str, str]]:
    """The nodes' environment for `bus`: Postgres alone, or NATS with `oa khala relay`
    running (on a subject of its own, its stream deleted afterwards)."""
    if bus == "postgres":
        yield env
        return
    import os
    import sys

    subject = f"oa.test.{uuid.uuid4().hex[:10]}"
    bus_env = {**env, "OA_KHALA_BUS": "nats", "OA_KHALA_BUS_SUBJECT": subject}
    log = logs / "relay.log"
    with open(log, "ab") as out:
        relay = subprocess.Popen(
            [sys.executable, "-m", "oa.cli.main", "khala", "relay"],
            env={**os.environ, **bus_env},
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 30
        while b"publishing" not in log.read_bytes():
            if relay.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"oa khala relay did not start: see {log}")
            time.sleep(0.1)
        yield bus_env
    finally:
        relay.terminate()
        relay.wait(10)
        _drop_stream(subject)


def _drop_stream(subject: str) -> None:
    import asyncio
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    import nats

    from oa.khala.sync.bus import DEFAULT_URL, stream_name

    async def drop() -> None:
        nc = await nats.connect(DEFAULT_URL)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream_name(subject))
        await nc.close()

    # In a thread of its own: the caller may be inside a running loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, drop()).result()
