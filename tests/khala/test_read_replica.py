"""A Khala node reading a real streaming replica (`OA_KHALA_READ_URL`): clients get
everything, and the node never serves a watermark the replica has not applied.

Replay on the standby is paused while the runtime appends on the primary: no update and
no head above the replica's reaches a client; a client resuming from a cursor the primary
has but the replica not yet is held (not refused with stale_cursor, not served from the
primary); replay resumes and both catch up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import psycopg
import pytest

from oa.khala.client import KhalaClient
from oa.khala.store import reader
from oa.runtime.service.container import build_runtime_app
from oa.runtime.settings import RuntimeSettings
from oa.runtime.signing import HEADER, sign_caller
from oa.store import migrate
from oa.store.database import with_user
from tests.khala.sync_fixtures import ChildKhala, node_env, running_khala, token_provider
from tests.support.pg import with_dbname
from tests.support.replica import postgres_bin, streaming_pair
from tests.support.servers import serve_in_loop

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(postgres_bin() is None, reason="needs Postgres binaries with pg_basebackup"),
]
RUNS = "runtime.run_summaries"
SECRET = b"replica-test-secret-0123456789abcdef"


async def replica_head(pool: asyncpg.Pool) -> int:
    return (await reader.heads(pool)).get(RUNS, (0, 0))[0]


async def test_a_node_on_a_replica_never_serves_past_it(tmp_path: Path) -> None:
    with streaming_pair() as pg:
        with psycopg.connect(pg.primary, autocommit=True) as c:
            c.execute("CREATE DATABASE oa")
        primary, standby = with_dbname(pg.primary, "oa"), with_dbname(pg.standby, "oa")
        await asyncio.to_thread(migrate, primary)
        await asyncio.to_thread(pg.wait_replayed)  # the roles and schema are on the standby
        node = ChildKhala(node_env(primary, tmp_path, OA_KHALA_READ_URL=standby))
        replica = await asyncpg.create_pool(with_user(standby, "oa_khala_reader"), min_size=1, max_size=2)
        on_primary = await asyncpg.create_pool(with_user(primary, "oa_khala_reader"), min_size=1, max_size=2)
        superuser = await asyncpg.connect(standby)  # pg_wal_replay_pause/resume
        headers = {HEADER: sign_caller(SECRET, "user:alice", 600)}
        runtime_app = build_runtime_app(primary, RuntimeSettings(caller_secret=SECRET))
        async with (
            serve_in_loop(runtime_app) as runtime_url,
            running_khala(primary),  # the projector, on the primary
            httpx.AsyncClient(base_url=runtime_url, headers=headers, timeout=10) as http,
        ):
            await asyncio.to_thread(node.start, tmp_path / "node.log")
            kc = KhalaClient(node.url, token_provider("alice"), [RUNS], max_backoff_s=0.5)
            try:
                await kc.start()
                await asyncio.wait_for(kc.live.wait(), 20)

                async def append(run: str, event_type: str = "text.delta") -> None:
                    r = await http.post(
                        f"/internal/v1/runs/{run}/events", json={"event_type": event_type, "payload": {}}
                    )
                    assert r.status_code == 201, r.text

                # Replicated: the client gets it through the node that reads the replica.
                await append("rep-1", "run.started")
                key = "runtime/run_summary:rep-1"
                await kc.wait_until(lambda c: key in c.documents, timeout=20)

                await superuser.execute("SELECT pg_wal_replay_pause()")
                await asyncio.sleep(0.5)  # anything in flight has been replayed or is held
                held = await replica_head(replica)
                for _ in range(5):
                    await append("rep-1")
                primary_head = 0
                for _ in range(100):  # the projector commits on the primary
                    primary_head = await replica_head(on_primary)
                    if primary_head > held:
                        break
                    await asyncio.sleep(0.1)
                assert primary_head > held
                assert await replica_head(replica) == held  # replay really is paused

                # A client resuming from the primary's head (as if it came from a node
                # reading the primary) is held, not refused and not served from the primary.
                late = KhalaClient(node.url, token_provider("alice"), [RUNS], max_backoff_s=0.5)
                late.watermarks[RUNS] = primary_head
                await late.start()
                seen_heads: list[int] = []
                for _ in range(30):  # 3 s with the replica paused
                    seen_heads += [kc.heads.get(RUNS, 0), kc.watermarks.get(RUNS, 0)]
                    assert kc.documents[key].doc_version == 1
                    await asyncio.sleep(0.1)
                assert max(seen_heads) <= held
                assert not late.live.is_set() and not late.stats.errors
                async with httpx.AsyncClient(base_url=node.url) as to_node:
                    snap = await to_node.get(
                        f"/sync/v1/topics/{RUNS}/snapshot",
                        headers={"Authorization": f"Bearer {await token_provider('alice')()}"},
                    )
                assert snap.status_code == 200 and snap.json()["watermark"] <= held

                await superuser.execute("SELECT pg_wal_replay_resume()")
                await kc.wait_until(lambda c: c.documents[key].doc_version == 6, timeout=20)
                assert kc.watermarks[RUNS] >= primary_head
                await asyncio.wait_for(late.live.wait(), 20)
                assert not late.stats.errors  # no stale_cursor, no replica_lagging
                await append("rep-1")
                await late.wait_until(lambda c: key in c.documents and c.documents[key].doc_version == 7, 20)
                await late.close()
            finally:
                await kc.close()
                node.stop()
        await superuser.close()
        await replica.close()
        await on_primary.close()
