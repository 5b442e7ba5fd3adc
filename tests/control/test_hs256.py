"""HS256 only when an operator configures it, and never mixed with ES256 keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import jwt
import pytest

from oa.bootstrap import services
from oa.control.service.keyring import hs256_kid
from oa.control.settings import ControlSettings
from oa.exceptions import TokenRejected
from oa.khala.auth import KeySet, StaticKeys, SyncTokenVerifier, VerificationKey, VerifierConfig
from tests.control.conftest import ISSUER, PASSWORD, NewUser
from tests.support.servers import serve_in_loop

SECRET = b"an-explicitly-configured-shared-secret-0123456789"


@pytest.fixture
async def hs_url(database_url: str, control_settings: ControlSettings) -> AsyncIterator[str]:
    app = services.control_app(database_url, replace(control_settings, hs256_secret=SECRET))
    async with serve_in_loop(app) as url:
        yield url


async def test_hs256_mode_signs_only_hs256_and_publishes_no_secret(
    hs_url: str, new_user: NewUser, verifier: SyncTokenVerifier, control: httpx.AsyncClient
) -> None:
    user = await new_user()
    async with httpx.AsyncClient(base_url=hs_url) as c:
        r = await c.post("/api/auth/sign-in", json={"email": user["email"], "password": PASSWORD})
        headers = {"Authorization": f"Bearer {r.json()['session_token']}"}
        token = (await c.post("/api/sync/token", headers=headers)).json()["token"]
        assert (await c.get("/.well-known/jwks.json")).json() == {"keys": []}
        disc = (await c.get("/.well-known/openid-configuration")).json()
        assert disc["id_token_signing_alg_values_supported"] == ["HS256"]
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": hs256_kid(SECRET), "typ": "JWT"}

    hs = SyncTokenVerifier(
        VerifierConfig(issuer=ISSUER, audience="oa-khala-sync", algorithms=frozenset({"HS256"})),
        StaticKeys.hs256(SECRET, hs256_kid(SECRET)),
    )
    assert (await hs.verify(token)).user_id == user["user_id"]
    # The ES256 verifier refuses HS256 tokens, and the HS256 verifier refuses ES256 ones.
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(token)
    assert info.value.code == "alg_not_allowed"
    es_token = (await control.post("/api/sync/token", headers=user["headers"])).json()["token"]
    with pytest.raises(TokenRejected) as info:
        await hs.verify(es_token)
    assert info.value.code == "alg_not_allowed"


def test_never_mixed() -> None:
    with pytest.raises(ValueError, match="never"):
        VerifierConfig(issuer=ISSUER, audience="a", algorithms=frozenset({"HS256", "ES256"}))
    es = jwt.PyJWK(
        {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "kid": "k",
            "x": "_spTRaF42GfJ3Wmc9jGxmLqioZ-AM2NzDq7kphySg7g",
            "y": "791TEX8uJya9bqmUOrmUxSE5fDIkHDHWRyUH6RwPanY",
        }
    ).key
    with pytest.raises(ValueError, match="never mixes"):
        KeySet({"k": VerificationKey("k", "ES256", es), "h": VerificationKey("h", "HS256", SECRET)})
    with pytest.raises(ValueError, match="oct"):
        KeySet.from_jwks({"keys": [{"kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0"}]})
    with pytest.raises(ValueError):
        replace(ControlSettingsForTest, hs256_secret=b"short")


ControlSettingsForTest = ControlSettings(issuer=ISSUER, key_secret=b"k" * 32, service_token="t")
