"""Every attack in the issue against the Khala verifier, each refused with its own code.

Tokens come from the running control (real keys, over HTTP); forged ones are made the way
an attacker would (edited bytes, the public key as an HMAC secret), and the checks that
need a validly signed but wrong token are signed with control's own key.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from oa.control.service.keyring import Keyring
from oa.exceptions import TokenRejected
from oa.khala.auth import JwksCache, SyncTokenVerifier
from tests.control.conftest import ISSUER, NewUser, mint


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def edit_payload(token: str, change: Callable[[dict[str, Any]], None]) -> str:
    h, p, s = token.split(".")
    claims = json.loads(unb64(p))
    change(claims)
    return f"{h}.{b64(json.dumps(claims).encode())}.{s}"


def unsigned(header: dict[str, Any], claims: dict[str, Any], sig: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(sig)}"


async def refused(verifier: SyncTokenVerifier, token: str, code: str, **kw: Any) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(token, **kw)
    assert info.value.code == code, f"expected {code}, got {info.value.code}: {info.value.message}"
    assert info.value.status == 401
    return info.value


@pytest.fixture
async def good(new_user: NewUser, control: httpx.AsyncClient) -> dict[str, Any]:
    user = await new_user(scopes=["runtime.run_summaries"])
    body = await mint(control, user)
    return {
        "user": user,
        "token": body["token"],
        "claims": jwt.decode(body["token"], options={"verify_signature": False}),
    }


def resign(keyring: Keyring, claims: dict[str, Any], **changes: Any) -> str:
    """Validly signed by control's current key, with some claims changed."""
    return keyring.signer().sign({**claims, **changes})


async def test_the_genuine_token_passes(verifier: SyncTokenVerifier, good: dict[str, Any]) -> None:
    claims = await verifier.verify(good["token"])
    assert claims.user_id == good["user"]["user_id"] and claims.scopes == {"runtime.run_summaries"}
    assert claims.missing_topics(["runtime.run_summaries", "runtime.notifications"]) == [
        "runtime.notifications"
    ]


async def test_alg_none(verifier: SyncTokenVerifier, good: dict[str, Any]) -> None:
    kid = jwt.get_unverified_header(good["token"])["kid"]
    await refused(verifier, unsigned({"alg": "none", "kid": kid}, good["claims"]), "alg_not_allowed")
    await refused(verifier, unsigned({"alg": "None", "typ": "JWT"}, good["claims"]), "alg_not_allowed")


async def test_hs256_signed_with_the_public_key(
    verifier: SyncTokenVerifier, good: dict[str, Any], control: httpx.AsyncClient
) -> None:
    kid = jwt.get_unverified_header(good["token"])["kid"]
    jwk = next(k for k in (await control.get("/.well-known/jwks.json")).json()["keys"] if k["kid"] == kid)
    public_pem = jwt.PyJWK(jwk).key.public_bytes(
        encoding=__import__(
            "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]
        ).Encoding.PEM,
        format=__import__(
            "cryptography.hazmat.primitives.serialization", fromlist=["x"]
        ).PublicFormat.SubjectPublicKeyInfo,
    )
    header = b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    payload = b64(json.dumps({**good["claims"], "oa_sync_scopes": ["runtime.notifications"]}).encode())
    import hashlib
    import hmac

    sig = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    await refused(verifier, f"{header}.{payload}.{b64(sig)}", "alg_not_allowed")


async def test_wrong_audience(verifier: SyncTokenVerifier, good: dict[str, Any], keyring: Keyring) -> None:
    await refused(verifier, resign(keyring, good["claims"], aud="oa-runtime-internal"), "wrong_audience")
    await refused(verifier, resign(keyring, good["claims"], aud=["oa-khala-sync", "other"]), "wrong_audience")


async def test_token_minted_for_another_resource(
    verifier: SyncTokenVerifier, good: dict[str, Any], control: httpx.AsyncClient
) -> None:
    other = await mint(control, good["user"], resource="khala-http")
    err = await refused(verifier, other["token"], "wrong_audience")
    assert err.details["aud"] == "oa-khala-http"


async def test_wrong_issuer(verifier: SyncTokenVerifier, good: dict[str, Any], keyring: Keyring) -> None:
    await refused(verifier, resign(keyring, good["claims"], iss=ISSUER + ".evil"), "wrong_issuer")
    await refused(verifier, resign(keyring, good["claims"], iss="https://control.tes"), "wrong_issuer")


async def test_expired(verifier: SyncTokenVerifier, good: dict[str, Any], keyring: Keyring) -> None:
    now = int(time.time())
    await refused(
        verifier, resign(keyring, good["claims"], iat=now - 400, nbf=now - 400, exp=now - 31), "token_expired"
    )
    # Within the 30 s leeway it still passes.
    ok = resign(keyring, good["claims"], iat=now - 300, nbf=now - 300, exp=now - 20)
    assert (await verifier.verify(ok)).expires_at == now - 20
    # A token accepted earlier is refused once it expires (the cached path re-checks time).
    await refused(verifier, good["token"], "token_expired", now=good["claims"]["exp"] + 31)


async def test_nbf_in_the_future(verifier: SyncTokenVerifier, good: dict[str, Any], keyring: Keyring) -> None:
    now = int(time.time())
    await refused(
        verifier, resign(keyring, good["claims"], nbf=now + 120, exp=now + 300), "token_not_yet_valid"
    )
    await refused(
        verifier,
        resign(keyring, good["claims"], iat=now + 120, nbf=now, exp=now + 300),
        "token_not_yet_valid",
    )


async def test_tampered_payload_with_the_old_signature(
    verifier: SyncTokenVerifier, good: dict[str, Any]
) -> None:
    def become_someone_else(c: dict[str, Any]) -> None:
        c["oa_user_id"] = "u_admin"
        c["sub"] = "user:u_admin"

    await refused(verifier, edit_payload(good["token"], become_someone_else), "bad_signature")
    h, p, s = good["token"].split(".")
    flipped = s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1]
    await refused(verifier, f"{h}.{p}.{flipped}", "bad_signature")


async def test_scopes_edited_by_the_client(verifier: SyncTokenVerifier, good: dict[str, Any]) -> None:
    def widen(c: dict[str, Any]) -> None:
        c["oa_sync_scopes"] = [*c["oa_sync_scopes"], "runtime.notifications"]

    await refused(verifier, edit_payload(good["token"], widen), "bad_signature")


async def test_scopes_must_be_known_even_when_signed(
    verifier: SyncTokenVerifier, good: dict[str, Any], keyring: Keyring
) -> None:
    await refused(
        verifier, resign(keyring, good["claims"], oa_sync_scopes=["runtime.everything"]), "bad_scopes"
    )
    await refused(verifier, resign(keyring, good["claims"], oa_sync_scopes=[]), "bad_scopes")
    await refused(
        verifier, resign(keyring, good["claims"], oa_sync_scopes="runtime.notifications"), "bad_scopes"
    )


async def test_unknown_kid_refetches_once_then_refuses(
    verifier: SyncTokenVerifier, good: dict[str, Any], keyring: Keyring, control_url: str
) -> None:
    jwks = JwksCache(f"{control_url}/.well-known/jwks.json", min_refetch_interval_s=30)
    fresh = SyncTokenVerifier(verifier.config, jwks)
    forged = jwt.encode(good["claims"], keyring.signer().key, algorithm="ES256", headers={"kid": "made-up"})
    await refused(fresh, forged, "unknown_kid")
    assert jwks.fetches == 1  # an unknown kid triggers a JWKS fetch
    for _ in range(20):  # a flood of unknown kids cannot become a flood of fetches
        await refused(fresh, forged, "unknown_kid")
    assert jwks.fetches == 1
    assert (await fresh.verify(good["token"])).jti == good["claims"]["jti"]
    await jwks.aclose()


async def test_missing_and_inconsistent_claims(
    verifier: SyncTokenVerifier, good: dict[str, Any], keyring: Keyring
) -> None:
    for name in ("sub", "exp", "iat", "jti", "oa_sync_scopes", "sid"):
        claims = {k: v for k, v in good["claims"].items() if k != name}
        err = await refused(verifier, keyring.signer().sign(claims), "missing_claim")
        assert err.details["claim"] == name
    await refused(verifier, resign(keyring, good["claims"], sub="user:someone-else"), "bad_claims")
    now = int(time.time())
    await refused(verifier, resign(keyring, good["claims"], iat=now, nbf=now, exp=now + 3600), "bad_claims")


async def test_oversized_and_malformed(verifier: SyncTokenVerifier, good: dict[str, Any]) -> None:
    await refused(verifier, good["token"] + "A" * 9000, "token_too_large")
    for junk in (
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        good["token"].replace(".", "", 1),
        "e30.e30.e30",
    ):
        await refused(verifier, junk, "token_malformed")
    await refused(verifier, unsigned({"alg": "ES256"}, good["claims"], b"x"), "token_malformed")  # no kid


async def test_origin_allow_list(good: dict[str, Any], verifier: SyncTokenVerifier) -> None:
    from dataclasses import replace

    strict = SyncTokenVerifier(
        replace(verifier.config, allowed_origins=frozenset({"https://app.example"})), verifier.keys
    )
    assert (await strict.verify(good["token"], origin="https://app.example")).jti == good["claims"]["jti"]
    await refused(strict, good["token"], "origin_not_allowed", origin="https://evil.example")
    assert (await strict.verify(good["token"])).jti  # non-browser clients send no Origin
