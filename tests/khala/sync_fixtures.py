"""A running Khala: projector task + sync server on a real port, tokens from a test issuer.

The issuer here is a test ES256 key (control's own minting is tested in the control suite
and end to end in test_end_to_end); the verifier is the real one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
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
from tests.support.servers import serve_in_loop

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
