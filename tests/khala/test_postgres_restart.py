"""Postgres restarts under a running system: runtime, projector and sync server recover alone."""

from __future__ import annotations

import asyncio
import tempfile
import warnings
from pathlib import Path

import httpx
import psycopg
import pytest

from oa.bootstrap import services
from oa.khala.client import KhalaClient
from oa.runtime.settings import RuntimeSettings
from oa.runtime.signing import HEADER, sign_caller
from oa.store import migrate
from tests.khala.sync_fixtures import running_khala, token_provider
from tests.support.pg import with_dbname
from tests.support.servers import serve_in_loop

pytestmark = pytest.mark.slow
SECRET = b"restart-test-secret-0123456789abcdef"


def restart(server: object) -> None:
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # generated at import time

    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)  # type: ignore[attr-defined]


async def test_everything_recovers_after_a_postgres_restart() -> None:
    import pgserver

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")  # type: ignore[attr-defined]
        with psycopg.connect(server.get_uri(), autocommit=True) as c:
            c.execute("CREATE DATABASE restart_test")
        url = with_dbname(server.get_uri(), "restart_test")
        await asyncio.to_thread(migrate, url)
        headers = {HEADER: sign_caller(SECRET, "user:alice", 600)}
        runtime_app = services.runtime_app(url, RuntimeSettings(caller_secret=SECRET))
        async with (
            serve_in_loop(runtime_app) as runtime_url,
            running_khala(url) as khala,
            httpx.AsyncClient(base_url=runtime_url, headers=headers, timeout=10) as http,
        ):
            kc = KhalaClient(khala.url, token_provider("alice"), ["runtime.run_summaries"], max_backoff_s=0.5)
            await kc.start()
            try:
                await asyncio.wait_for(kc.live.wait(), 10)
                key = "runtime/run_summary:restart-1"
                r = await http.post(
                    "/internal/v1/runs/restart-1/events", json={"event_type": "run.started", "payload": {}}
                )
                assert r.status_code == 201
                await kc.wait_until(lambda c: key in c.documents, timeout=10)
                await asyncio.to_thread(restart, server)
                appended = 0
                for _attempt in range(200):
                    body = {
                        "event_type": "text.delta",
                        "payload": {"text": "after"},
                        "idempotency_key": f"k{appended}",
                    }
                    r = await http.post("/internal/v1/runs/restart-1/events", json=body)
                    if r.status_code in (200, 201):
                        appended += 1
                        if appended == 3:
                            break
                    else:
                        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
                        await asyncio.sleep(0.1)
                assert appended == 3
                await kc.wait_until(lambda c: c.documents[key].doc_version == 4, timeout=20)
            finally:
                await kc.close()
        server.cleanup()
