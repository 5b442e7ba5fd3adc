"""Session fixtures: one fresh, migrated database and one runtime server on a real port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import httpx
import pytest

from oa.bootstrap import services
from oa.runtime.settings import RuntimeSettings
from oa.runtime.signing import HEADER, sign_caller
from oa.store import migrate
from oa.store.database import Database
from tests.support.pg import fresh_database
from tests.support.servers import serve_in_loop

SECRET = b"test-caller-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url)
    yield database
    await database.close()


@pytest.fixture(scope="session")
def runtime_settings() -> RuntimeSettings:
    return RuntimeSettings(caller_secret=SECRET, max_body_bytes=64 * 1024, stream_replay_window=50)


@pytest.fixture(scope="session")
async def runtime_url(database_url: str, runtime_settings: RuntimeSettings) -> AsyncIterator[str]:
    app = services.runtime_app(database_url, runtime_settings)
    async with serve_in_loop(app) as url:
        yield url


class Signer(Protocol):
    def __call__(self, principal: str, org: str | None = None) -> dict[str, str]: ...


@pytest.fixture(scope="session")
def sign() -> Signer:
    """`sign("user:alice")` -> headers carrying a valid caller signature (acting for `org`)."""

    def headers(principal: str, org: str | None = None) -> dict[str, str]:
        return {HEADER: sign_caller(SECRET, principal, 300, org=org)}

    return headers


@pytest.fixture
async def client(runtime_url: str, sign: Signer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign("user:alice"), timeout=30) as c:
        yield c


@pytest.fixture
def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"
