"""The whole system for a real browser: control and the projector in this process, the
Khala sync server as a child process (so a test can kill -9 it and start it again on the
same port), the runtime from the session fixture, and Debian's Chromium driven by
Playwright. The browser tests skip, saying why, only when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from oa.bootstrap import services
from oa.bootstrap.servers import EmbeddedServer
from oa.control.service.accounts import Accounts
from oa.control.settings import ControlSettings
from oa.store.database import Database
from tests.support.servers import ChildProcess, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
ISSUER = "oa-control-browser-test"
ADMIN_KEY = "browser-admin-key-0123456789abcdef"  # the health page's status and lag need it
PASSWORD = "correct horse battery staple"

if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium; "
        ".ci/run installs it)",
        allow_module_level=True,
    )


@dataclass
class KhalaChild(ChildProcess):
    """`oa khala serve` in a child process on a fixed port."""

    database_url: str
    control_url: str
    home: Path
    port: int
    sync_urls: tuple[str, ...] = ()  # every node the dashboard may use (its config's sync_urls)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = {
            "OA_DATABASE_URL": self.database_url,
            "OA_CONTROL_URL": self.control_url,
            "OA_SYNC_TOKEN_ISSUER": ISSUER,
            "OA_HOME": str(self.home),
            "KHALA_SELF_HOSTED_ADMIN_KEY": ADMIN_KEY,
            "OA_KHALA_URLS": ",".join(self.sync_urls),
        }
        self.spawn(["khala", "serve", "--port", str(self.port)], env, self.home / "khala.log", timeout)


@dataclass
class Stack:
    khala: KhalaChild
    control_url: str
    runtime_url: str
    email: str
    user_id: str
    database_url: str
    spare_port: int  # a second node's port, in the dashboard's sync_urls (down unless a test starts it)


async def _serve_on(app: Any, port: int) -> tuple[EmbeddedServer, asyncio.Task[None]]:
    server = EmbeddedServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task


@pytest.fixture(scope="module")  # its projector must not outlive these tests (others reset Khala)
async def stack(
    database_url: str, db: Database, runtime_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    cport, kport, spare = free_port(), free_port(), free_port()
    control_url = f"http://127.0.0.1:{cport}"
    khala_url = f"http://127.0.0.1:{kport}"
    settings = ControlSettings(
        issuer=ISSUER,
        key_secret=b"test-key-secret-0123456789abcdef",  # the one secret every control in the session shares (one database)
        service_token="browser-service-token-0123456789",
        rotation_lead_s=1.0,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        cors_origins=(khala_url,),  # what `oa run` gives its control
    )
    server, task = await _serve_on(services.control_app(database_url, settings), cport)
    email = f"dash-{uuid.uuid4().hex[:8]}@example.com"
    user_id = await Accounts(db, settings).add_user(email, PASSWORD)
    projector = services.projector(database_url, idle_poll_s=0.2)
    projector.start()
    home = tmp_path_factory.mktemp("khala-home")
    khala = KhalaChild(database_url, control_url, home, kport, (khala_url, f"http://127.0.0.1:{spare}"))
    await asyncio.to_thread(khala.start)
    try:
        yield Stack(khala, control_url, runtime_url, email, user_id, database_url, spare)
    finally:
        khala.stop()
        await projector.stop()
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    ctx = await browser.new_context(viewport={"width": 1200, "height": 900})
    yield ctx
    await ctx.close()


@pytest.fixture(scope="session")
def artifacts() -> Iterator[Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield ARTIFACTS
