"""A running Khala: projector task + sync server on a real port, tokens from a test issuer.

The issuer here is a test ES256 key (control's own minting is tested in the control suite
and end to end in test_end_to_end); the verifier is the real one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

from oa.khala.auth.jwks import KeySet, StaticKeys, VerificationKey
from oa.khala.auth.verifier import SyncTokenVerifier, VerifierConfig
from oa.khala.sync.app import create_sync_app
from oa.khala.sync.hub import Hub
from oa.khala.sync.session import SessionLimits
from oa.khala.sync.tokens import verify_with
from oa.khala.topics import TOPIC_NAMES
from oa.runtime.projector.projector import Projector
from oa.store.database import with_user
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


@asynccontextmanager
async def running_khala(
    database_url: str, limits: SessionLimits | None = None, admin_key: str | None = None
) -> AsyncIterator[Khala]:
    projector = Projector(with_user(database_url, "oa_khala_writer"), idle_poll_s=0.5)
    projector.start()
    app = create_sync_app(
        with_user(database_url, "oa_khala_reader"), verify_with(verifier()), limits, admin_key=admin_key
    )
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
