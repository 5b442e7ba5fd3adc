"""JWKS, discovery, and key rotation while tokens are live."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import jwt
import pytest

from oa.control.domain.tokens import MAX_TTL_S
from oa.control.service.keyring import Keyring
from oa.control.settings import ControlSettings
from oa.exceptions import InternalError
from oa.khala.auth import JwksCache, KeySet, SyncTokenVerifier
from oa.store.database import Database
from tests.control.conftest import ISSUER, NewUser, mint


async def test_jwks_and_discovery(control: httpx.AsyncClient) -> None:
    jwks = await control.get("/.well-known/jwks.json")
    assert jwks.status_code == 200 and "max-age" in jwks.headers["cache-control"]
    keys = jwks.json()["keys"]
    assert keys and all(k["kty"] == "EC" and k["crv"] == "P-256" and k["alg"] == "ES256" for k in keys)
    assert all("d" not in k for k in keys), "a private key part was published"
    assert len(KeySet.from_jwks(jwks.json()).kids()) == len(keys)
    disc = (await control.get("/.well-known/openid-configuration")).json()
    assert disc["issuer"] == ISSUER
    assert disc["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert disc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert disc["oa_audiences"]["khala-sync"] == "oa-khala-sync"


async def test_private_keys_are_encrypted_at_rest(db: Database, control_url: str) -> None:
    rows = await db.fetch("SELECT private_key FROM control.signing_keys")
    assert rows and all(
        bytes(r["private_key"]).startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") for r in rows
    )


async def test_rotation_while_tokens_are_live(
    new_user: NewUser,
    control: httpx.AsyncClient,
    keyring: Keyring,
    verifier: SyncTokenVerifier,
    control_url: str,
) -> None:
    user = await new_user()
    old = await mint(control, user)
    old_kid = jwt.get_unverified_header(old["token"])["kid"]
    await verifier.verify(old["token"])  # warm cache: knows only the keys published so far

    rotation = await keyring.rotate(lead_s=1.5)
    assert rotation.new_kid != old_kid
    # Published before it signs: the JWKS lists it at once, tokens still carry the old kid.
    published = [k["kid"] for k in (await control.get("/.well-known/jwks.json")).json()["keys"]]
    assert rotation.new_kid in published and old_kid in published
    await asyncio.sleep(0.6)  # > the server's key reload interval, < the lead
    still_old = await mint(control, user)
    assert jwt.get_unverified_header(still_old["token"])["kid"] != rotation.new_kid

    await asyncio.sleep(1.5)  # the lead has passed
    new = await mint(control, user)
    assert jwt.get_unverified_header(new["token"])["kid"] == rotation.new_kid

    jwks: JwksCache = verifier.keys  # type: ignore[assignment]
    fetches = jwks.fetches
    assert (await verifier.verify(new["token"])).kid == rotation.new_kid  # unknown kid -> one refetch
    assert jwks.fetches == fetches + 1
    assert (await verifier.verify(old["token"])).kid == old_kid  # old tokens keep verifying
    # The old key stays published for the longest TTL plus leeway after the new one signs.
    old_record = next(k for k in keyring.records() if k.kid == old_kid)
    assert old_record.retire_after is not None
    assert (old_record.retire_after - rotation.activates_at).total_seconds() >= MAX_TTL_S + 60
    assert old_record.published(datetime.now(UTC))
    assert not old_record.published(old_record.retire_after)


async def test_a_fresh_verifier_trusts_a_jwks_it_fetched_only(control_url: str) -> None:
    jwks = JwksCache(f"{control_url}/.well-known/jwks.json", min_refetch_interval_s=60)
    assert await jwks.refresh() is True
    assert await jwks.refresh() is False  # rate-limited
    assert jwks.fetches == 1 and jwks.keys.kids()


async def test_a_control_with_the_wrong_key_secret_refuses_to_start(
    database_url: str, control_settings: ControlSettings, control_url: str
) -> None:
    wrong = replace(control_settings, key_secret=b"another-secret-0123456789abcdefgh")
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        with pytest.raises(InternalError, match="OA_CONTROL_KEY_SECRET"):
            await Keyring(db, wrong).start()
    finally:
        await db.close()
