"""A sync server killed with -9 mid-stream, restarted on the same port: every live query
resumes on its own from its cursor; nothing is missed and nothing is applied twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg
import httpx

from oa.khala.client import KhalaClient
from oa.khala.live_view import Change
from oa.store.database import with_user
from tests.conftest import Signer
from tests.khala.sync_fixtures import ISSUER, ChildKhala, jwks_document, running_khala, token_provider
from tests.khala.test_live_queries import RUNS, post
from tests.khala.test_live_views import client_view, store_view
from tests.support.servers import free_port


async def test_kill9_then_each_live_query_resumes_exactly(
    database_url: str, runtime_url: str, sign: Signer, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(jwks_document()))
    server = ChildKhala(
        {
            "OA_DATABASE_URL": database_url,
            "OA_HOME": str(tmp_path),
            "OA_KHALA_JWKS_FILE": str(jwks),
            "OA_SYNC_TOKEN_ISSUER": ISSUER,
        }
    )
    server.port = free_port()
    user, org = f"k9-{uuid.uuid4().hex[:6]}", f"org-{uuid.uuid4().hex[:6]}"
    runs = [f"run-{user}-{i}" for i in range(4)]
    changes: list[Change] = []
    pool = await asyncpg.create_pool(with_user(database_url, "oa_khala_reader"), min_size=1, max_size=2)
    async with (
        running_khala(database_url),
        httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h,
    ):
        server.spawn(["khala", "serve", "--port", str(server.port)], server.env, log=tmp_path / "k1.log")
        try:
            async with KhalaClient(server.url, token_provider(user, org), [], max_backoff_s=0.5) as kc:
                views = [
                    kc.watch("doc", RUNS, {"doc_key": f"runtime/run_summary:{runs[0]}"}),
                    kc.watch("stream", RUNS, {"stream": runs[0]}),
                    kc.watch("list", RUNS, {"where": {"owner": user}, "limit": 2}),
                ]
                for v in views:
                    v.on_change(changes.append)
                for r in runs:
                    await post(h, r, "run.started", {"org_id": org})
                # Each view holds a cursor before the kill (a view without one would take the
                # current documents on reconnect, skipping versions by design).
                await kc.wait_until(
                    lambda _c: (
                        all(v.live.is_set() for v in views)
                        and "runtime/run_summary:" + runs[0] in views[0].documents
                    ),
                    timeout=20,
                )

                async def stream(n: int) -> None:
                    for i in range(n):
                        await post(h, runs[i % 2], "text.delta", {"text": f"t{i}"})
                        await asyncio.sleep(0.01)

                writer = asyncio.create_task(stream(60))
                await asyncio.sleep(0.3)
                server.kill9()  # mid-stream
                await asyncio.sleep(0.5)
                server.spawn(
                    ["khala", "serve", "--port", str(server.port)], server.env, log=tmp_path / "k2.log"
                )
                await writer
                for v in views:
                    expected = await store_view(pool, v, user, org)
                    await kc.wait_until(lambda _c, v=v, e=expected: client_view(v) == e, timeout=20)  # type: ignore[misc]
                assert kc.stats.connects >= 2
        finally:
            server.stop()
    await pool.close()
    held: dict[tuple[str, str], int] = {}
    for c in changes:
        at = (c["sub"], c["doc_key"])
        if c["op"] == "remove":
            held.pop(at, None)
        else:
            assert c["doc_version"] > held.get(at, 0), f"applied twice: {c}"
            held[at] = c["doc_version"]
    # The document view saw every version of its run's summary: nothing missed.
    versions = [c["doc_version"] for c in changes if c["sub"] == "doc"]
    assert versions == list(range(1, 32))  # run.started, then 30 text.delta
