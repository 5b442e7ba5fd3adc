"""Agent fixtures: a projector, a `dev` and a `prod` Khala (real sync apps on real ports).

Both deployments share the session database; what differs is the class each server was
configured with, which is exactly what the MCP server must learn from the deployment.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from mcp import Client

from oa.agent.selection import SelfHosted
from oa.agent.server import Options, build_server, provider_for
from oa.bootstrap import services
from oa.runtime.projector.projector import Projector
from tests.conftest import SECRET
from tests.khala.sync_fixtures import khala_settings
from tests.support.servers import serve_in_loop

ADMIN_KEY = "admin-key-" + uuid.uuid4().hex


@dataclass
class Deployment:
    url: str
    admin_key: str
    runtime_url: str

    def selection(self) -> SelfHosted:
        return SelfHosted(self.url, self.admin_key, self.runtime_url, SECRET.decode(), None)

    def env_file_text(self) -> str:
        return (
            f"KHALA_SELF_HOSTED_URL={self.url}\nKHALA_SELF_HOSTED_ADMIN_KEY={self.admin_key}\n"
            f"OA_RUNTIME_URL={self.runtime_url}\nOA_RUNTIME_CALLER_SECRET={SECRET.decode()}\n"
        )

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url + "/admin/v1", headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=30
        )


@pytest.fixture(scope="module")
async def projector(database_url: str) -> AsyncIterator[Projector]:
    p = services.projector(database_url, idle_poll_s=0.2)
    p.start()
    yield p
    await p.stop()


async def _deployment(database_url: str, runtime_url: str, cls: str) -> AsyncIterator[Deployment]:
    app = services.khala_app(khala_settings(database_url, admin_key=ADMIN_KEY, deployment_class=cls))
    async with serve_in_loop(app) as url:
        yield Deployment(url, ADMIN_KEY, runtime_url)


@pytest.fixture(scope="module")
async def dev(database_url: str, runtime_url: str, projector: Projector) -> AsyncIterator[Deployment]:
    async for d in _deployment(database_url, runtime_url, "dev"):
        yield d


@pytest.fixture(scope="module")
async def prod(database_url: str, runtime_url: str, projector: Projector) -> AsyncIterator[Deployment]:
    async for d in _deployment(database_url, runtime_url, "prod"):
        yield d


@pytest.fixture
async def superuser(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def no_grants(superuser: asyncpg.Connection) -> None:
    """Each production test starts without a live grant (the clock is the database's)."""
    await superuser.execute("UPDATE khala_admin.grants SET revoked_at = now() WHERE revoked_at IS NULL")


ClientFor = Callable[[Deployment], Client]


@pytest.fixture
def mcp_client() -> ClientFor:
    """An in-memory SDK client for an MCP server pointed at a deployment."""

    def make(dep: Deployment) -> Client:
        server = build_server(
            provider_for(dep.selection(), Path(".")), Options(principal="user:alice", wait_s=30)
        )
        return Client(server)

    return make
