"""Three Khala nodes over one Postgres, clients spread over them, under writes.

kill -9 one node: its clients fail over to the others and resume from their watermarks;
a rolling restart of every node, one at a time: nobody ends wrong. Each client records
every version it applied of every document (whole-topic subscription and a live query):
every version arrives exactly once and in order, and the end state equals the store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from oa.khala.client import KhalaClient, KhalaUnavailable
from oa.khala.live_view import Change, LiveView
from oa.khala.store import reader
from oa.store.database import with_user
from tests.conftest import Signer
from tests.khala.sync_fixtures import (
    ChildKhala,
    khala_bus,
    khala_nodes,
    nats_up,
    node_env,
    running_khala,
    token_provider,
)
from tests.khala.test_live_queries import post
from tests.support.servers import free_port

pytestmark = pytest.mark.slow
RUNS = "runtime.run_summaries"
NODES = 3
CLIENTS = 6
ADMIN_KEY = "failover-test-admin-key"


@dataclass
class Watcher:
    """A client given every node's URL (starting at a different one), recording what it applies."""

    client: KhalaClient
    stream: LiveView
    topic_versions: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    view_versions: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def on_topic(self, key: str, payload: dict[str, Any] | None) -> None:
        held = self.client.documents.get(key)
        if held is not None:
            self.topic_versions[key].append(held.doc_version)

    def on_view(self, change: Change) -> None:
        if change["op"] == "upsert":
            self.view_versions[change["doc_key"]].append(change["doc_version"])


def spread(urls: list[str], i: int) -> list[str]:
    return urls[i % len(urls) :] + urls[: i % len(urls)]


async def watchers(urls: list[str], user: str, org: str, stream_run: str) -> list[Watcher]:
    out = []
    for i in range(CLIENTS):
        kc = KhalaClient(spread(urls, i), token_provider(user, org), [RUNS], max_backoff_s=0.5)
        w = Watcher(kc, kc.watch("stream", RUNS, {"stream": stream_run}))
        kc.on_change = w.on_topic
        w.stream.on_change(w.on_view)
        await kc.start()
        out.append(w)
    for w in out:
        await asyncio.wait_for(w.client.live.wait(), 20)
        await asyncio.wait_for(w.stream.live.wait(), 20)
    return out


async def writes(h: httpx.AsyncClient, runs: list[str], rounds: int) -> dict[str, int]:
    """Append `rounds` text deltas to each run, a few per 10 ms; returns each run's last version."""
    count = dict.fromkeys(runs, 1)  # run.started was version 1
    for i in range(rounds):
        await asyncio.gather(*(post(h, r, "text.delta", {"text": f"t{i}"}) for r in runs))
        for r in runs:
            count[r] += 1
        await asyncio.sleep(0.01)
    return count


async def check(ws: list[Watcher], pool: asyncpg.Pool, user: str, org: str, last: dict[str, int]) -> None:
    """Each client equals the store; it applied every version of every document exactly once, in order."""
    want_summaries = {f"runtime/run_summary:{r}": v for r, v in last.items()}
    # The projector may still be folding the last appends (CI, loaded: 40 of 41 seen once).
    async with asyncio.timeout(30):
        while True:
            _head, rows = await reader.snapshot(pool, RUNS, user, org, 1000)
            expected = {r.doc_key: r.doc_version for r in rows}
            summaries = {k: v for k, v in expected.items() if k.startswith("runtime/run_summary:")}
            if summaries == want_summaries:
                break
            await asyncio.sleep(0.1)
    for w in ws:
        await w.client.wait_until(
            lambda c: {k: d.doc_version for k, d in c.documents.items()} == expected, timeout=30
        )
        for key, version in expected.items():
            assert w.topic_versions[key] == list(range(1, version + 1)), (w.client.urls[0], key)
        want = {k: v for k, v in expected.items() if k.endswith(w.stream.scope["stream"])}
        await w.client.wait_until(
            lambda _c, w=w, want=want: {k: d["doc_version"] for k, d in w.stream.documents.items()} == want,  # type: ignore[misc]
            timeout=30,
        )
        for key, version in want.items():
            assert w.view_versions[key] == list(range(1, version + 1)), (w.client.urls[0], key)


Scenario = Callable[[list[ChildKhala], Path], Awaitable[None]]


async def run_scenario(
    database_url: str,
    runtime_url: str,
    sign: Signer,
    tmp_path: Path,
    disrupt: Scenario,
    bus: str = "postgres",
) -> tuple[list[Watcher], int]:
    """The clients, and how many batches the nodes still up took from the bus."""
    user, org = f"n3-{uuid.uuid4().hex[:6]}", f"org-{uuid.uuid4().hex[:6]}"
    runs = [f"run-{user}-{i}" for i in range(4)]
    from_bus = 0
    pool = await asyncpg.create_pool(with_user(database_url, "oa_khala_reader"), min_size=1, max_size=2)
    env = node_env(database_url, tmp_path, KHALA_SELF_HOSTED_ADMIN_KEY=ADMIN_KEY)
    async with (
        running_khala(database_url),  # the projector (its own in-process server is not used)
        httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org), timeout=30) as h,
    ):
        with khala_bus(bus, env, tmp_path) as bus_env, khala_nodes(NODES, bus_env, tmp_path) as nodes:
            ws = await watchers([n.url for n in nodes], user, org, runs[0])
            try:
                for r in runs:  # every version goes over the stream: the clients started empty
                    await post(h, r, "run.started", {"org_id": org})
                writer = asyncio.create_task(writes(h, runs, 40))
                await asyncio.sleep(0.3)
                await disrupt(nodes, tmp_path)
                last = await writer
                await check(ws, pool, user, org, last)
                for node in nodes:
                    if node.proc is not None and node.proc.poll() is None:
                        resp = await h.get(
                            f"{node.url}/sync/v1/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
                        )
                        status = resp.json()
                        assert status["bus"] == bus
                        from_bus += status["bus_batches"]
                if bus == "postgres":
                    assert from_bus == 0
            finally:
                for w in ws:
                    await w.client.close()
    await pool.close()
    return ws, from_bus


BUSES = [
    "postgres",
    pytest.param("nats", marks=pytest.mark.skipif(not nats_up(), reason="no NATS at 127.0.0.1:4222")),
]


KILL9_BUSES = [
    "postgres",
    pytest.param(
        "nats",
        marks=[
            pytest.mark.skipif(not nats_up(), reason="no NATS at 127.0.0.1:4222"),
            # Seen once in CI (2026-12-03), not reproduced in 7 runs here: over the NATS bus a
            # client that started on another node than the killed one ended without version 1
            # of one run summary ([2..41] applied). The default bus (Postgres) passed every
            # run. Open: find the path (bus dispatch vs journal read race, or a cursor moved
            # past an unsent row) before the opt-in NATS bus is called exact.
            pytest.mark.xfail(strict=False, reason="rare missed first version over NATS after kill -9"),
        ],
    ),
]


@pytest.mark.parametrize("bus", KILL9_BUSES)
async def test_kill9_one_node_its_clients_fail_over_exactly(
    database_url: str, runtime_url: str, sign: Signer, tmp_path: Path, bus: str
) -> None:
    async def kill_first(nodes: list[ChildKhala], _tmp: Path) -> None:
        nodes[0].kill9()  # mid-stream; it stays dead

    ws, from_bus = await run_scenario(database_url, runtime_url, sign, tmp_path, kill_first, bus)
    if bus == "nats":  # live batches came over the bus (the journal only filled gaps)
        assert from_bus > 0
    moved = [w for w in ws if w.client.urls[0] == ws[0].client.urls[0]]
    assert moved and all(w.client.stats.connects >= 2 for w in moved)
    assert all(w.client.base_url != ws[0].client.urls[0] for w in moved)


@pytest.mark.parametrize("bus", BUSES)
async def test_rolling_restart_of_every_node(
    database_url: str, runtime_url: str, sign: Signer, tmp_path: Path, bus: str
) -> None:
    async def rolling(nodes: list[ChildKhala], tmp: Path) -> None:
        for i, node in enumerate(nodes):
            node.stop()  # SIGTERM: a deploy
            await asyncio.to_thread(node.start, tmp / f"node{i}-restarted.log")
            await asyncio.sleep(0.2)

    ws, _ = await run_scenario(database_url, runtime_url, sign, tmp_path, rolling, bus)
    assert all(w.client.stats.connects >= 2 for w in ws)  # every client lost its node once


async def test_no_node_answers_is_a_clear_error() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    async with KhalaClient(urls, token_provider("nobody"), [RUNS], max_backoff_s=0.2) as kc:
        with pytest.raises(KhalaUnavailable) as err:
            await kc.wait_until(lambda c: c.live.is_set(), timeout=3)
    message = str(err.value)
    assert all(u in message for u in urls) and "no Khala node answers" in message


def test_bad_urls_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="at least one Khala URL"):
        KhalaClient([], token_provider("x"), [])
    with pytest.raises(ValueError, match="must start with http"):
        KhalaClient("127.0.0.1:8789", token_provider("x"), [])


async def test_nodes_whose_postgres_connections_drop_recover_alone(
    database_url: str, runtime_url: str, sign: Signer, tmp_path: Path
) -> None:
    """Every Khala backend of the database is terminated (LISTEN and pools): each node
    reconnects by itself, its sockets stay up, and the next writes reach every client."""
    user, org = f"pd-{uuid.uuid4().hex[:6]}", f"org-{uuid.uuid4().hex[:6]}"
    run = f"run-{user}"
    key = f"runtime/run_summary:{run}"
    async with (
        running_khala(database_url),
        httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org), timeout=30) as h,
    ):
        with khala_nodes(2, node_env(database_url, tmp_path), tmp_path) as nodes:
            clients = [
                KhalaClient(n.url, token_provider(user, org), [RUNS], max_backoff_s=0.5) for n in nodes
            ]
            try:
                for kc in clients:
                    await kc.start()
                    await asyncio.wait_for(kc.live.wait(), 20)
                await post(h, run, "run.started", {"org_id": org})
                for kc in clients:
                    await kc.wait_until(lambda c: key in c.documents, timeout=20)
                admin = await asyncpg.connect(database_url)
                try:
                    killed = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND usename = 'oa_khala_reader'"
                    )
                finally:
                    await admin.close()
                assert killed >= 2 * len(nodes)  # at least each node's LISTEN and one pooled
                for i in range(3):
                    await post(h, run, "text.delta", {"text": f"after {i}"})
                for kc in clients:
                    await kc.wait_until(lambda c: c.documents[key].doc_version == 4, timeout=30)
                    assert kc.stats.connects == 1  # the node recovered; its client never noticed
            finally:
                for kc in clients:
                    await kc.close()
