"""Control on a real port over the session database; users made through its services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from oa.bootstrap import services
from oa.control.service.accounts import Accounts
from oa.control.service.keyring import Keyring
from oa.control.settings import ControlSettings
from oa.khala.auth import (
    HttpRevocationSource,
    JwksCache,
    RevocationList,
    SyncTokenVerifier,
    VerifierConfig,
)
from oa.store.database import Database
from tests.support.servers import serve_in_loop

ISSUER = "https://control.test"
SERVICE_TOKEN = "test-service-token-0123456789"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def control_settings() -> ControlSettings:
    return ControlSettings(
        issuer=ISSUER,
        key_secret=b"test-key-secret-0123456789abcdef",
        service_token=SERVICE_TOKEN,
        rotation_lead_s=1.0,
        key_reload_s=0.5,
        sign_in_max_failures=3,
        # Cheap Argon2id for tests; production uses argon2-cffi's defaults.
        argon2_time_cost=1,
        argon2_memory_kib=8192,
    )


@pytest.fixture(scope="session")
async def control_url(database_url: str, control_settings: ControlSettings) -> AsyncIterator[str]:
    async with serve_in_loop(services.control_app(database_url, control_settings)) as url:
        yield url


@pytest.fixture(scope="session")
def accounts(db: Database, control_settings: ControlSettings) -> Accounts:
    return Accounts(db, control_settings)


@pytest.fixture
async def keyring(db: Database, control_settings: ControlSettings, control_url: str) -> Keyring:
    """The same keys the running control signs with (for crafting attack tokens)."""
    ring = Keyring(db, control_settings)
    await ring.reload()
    return ring


NewUser = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def new_user(accounts: Accounts, control: httpx.AsyncClient) -> NewUser:
    """`await new_user(scopes=[...])` -> {email, user_id, session, headers} signed in over HTTP."""

    async def make(scopes: list[str] | None = None, org: str = "acme") -> dict[str, Any]:
        email = f"u-{uuid.uuid4().hex[:10]}@example.com"
        user_id = await accounts.add_user(email, PASSWORD, org=org, scopes=scopes)
        r = await control.post("/api/auth/sign-in", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        body = r.json()
        return {
            "email": email,
            "user_id": user_id,
            "session": body,
            "headers": {"Authorization": f"Bearer {body['session_token']}"},
        }

    return make


@pytest.fixture
async def control(control_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=control_url, timeout=30) as c:
        yield c


async def mint(c: httpx.AsyncClient, user: dict[str, Any], **body: Any) -> dict[str, Any]:
    r = await c.post("/api/sync/token", json=body, headers=user["headers"])
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


@pytest.fixture
async def revocations(control_url: str) -> AsyncIterator[RevocationList]:
    source = HttpRevocationSource(f"{control_url}/api/sync/revocations", SERVICE_TOKEN)
    rl = RevocationList(source, poll_interval_s=0.5)
    await rl.start()
    yield rl
    await rl.stop()
    await source.close()


@pytest.fixture
def verifier_config() -> VerifierConfig:
    return VerifierConfig(issuer=ISSUER, audience="oa-khala-sync")


@pytest.fixture
async def verifier(
    control_url: str, verifier_config: VerifierConfig, revocations: RevocationList
) -> AsyncIterator[SyncTokenVerifier]:
    jwks = JwksCache(f"{control_url}/.well-known/jwks.json", min_refetch_interval_s=0.2)
    await jwks.refresh(force=True)
    yield SyncTokenVerifier(verifier_config, jwks, revocations)
    await jwks.aclose()


def with_settings(settings: ControlSettings, **changes: Any) -> ControlSettings:
    return replace(settings, **changes)
