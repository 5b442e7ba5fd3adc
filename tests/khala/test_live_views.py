"""Live queries through the real Python client: after each projector batch every scope
kind's view equals the same query on the store, across a dropped socket and resume."""

from __future__ import annotations

import random
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from oa.khala.client import KhalaClient
from oa.khala.live_view import Change, LiveView
from oa.khala.store import live as store
from oa.store.database import with_user
from tests.conftest import Signer
from tests.khala.sync_fixtures import Khala, running_khala, token_provider
from tests.khala.test_live_queries import RUNS, projected


@pytest.fixture
async def khala(database_url: str) -> object:
    async with running_khala(database_url) as k:
        yield k


async def store_view(pool: asyncpg.Pool, view: LiveView, user: str, org: str) -> dict[str, int]:
    s = view.scope
    if view.is_list:
        loaded = await store.list_documents(
            pool, RUNS, doc_prefix="runtime/run_summary:", where=s.get("where", {}),
            order_by="last_event_at", ascending=False, limit=s["limit"], user_id=user, org_id=org,
        )  # fmt: skip
    else:
        loaded = await store.scope_documents(
            pool, RUNS, doc_key=s.get("doc_key"), stream=s.get("stream"), user_id=user, org_id=org, limit=1000
        )
    return {r.doc_key: r.doc_version for r in loaded.rows}


def client_view(view: LiveView) -> dict[str, int]:
    return {k: d["doc_version"] for k, d in view.documents.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_views_equal_the_store_after_every_batch(
    khala: Khala, runtime_url: str, sign: Signer, database_url: str, seed: int
) -> None:
    rnd = random.Random(seed)
    user, org = f"pv-{uuid.uuid4().hex[:6]}", f"org-{uuid.uuid4().hex[:6]}"
    other = f"pv-other-{uuid.uuid4().hex[:6]}"
    runs = [f"run-{user}-{i}" for i in range(5)]
    pool = await asyncpg.create_pool(with_user(database_url, "oa_khala_reader"), min_size=1, max_size=2)
    changes: list[Change] = []
    async with (
        httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as mine,
        httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{other}", f"org-x-{seed}")) as theirs,
        KhalaClient(khala.url, token_provider(user, org), []) as kc,
    ):
        views = [
            kc.watch("running", RUNS, {"where": {"owner": user, "status": "running"}, "limit": 2}),
            kc.watch("org", RUNS, {"where": {"org_id": org}, "limit": 3}),
            kc.watch("all", RUNS, {"limit": 2}),
            kc.watch("doc", RUNS, {"doc_key": f"runtime/run_summary:{runs[0]}"}),
            kc.watch("stream", RUNS, {"stream": runs[1]}),
        ]
        for v in views:
            v.on_change(changes.append)
        started: set[str] = set()
        finished: set[str] = set()
        for step in range(14):
            run = rnd.choice(runs)
            if run in finished:
                continue
            if step == 6:  # drop the socket mid-stream: every view resumes on its own
                assert kc._ws is not None
                kc._ws.transport.abort()
            event = (
                "run.started"
                if run not in started
                else rnd.choice(["text.delta", "text.delta", "run.finished"])
            )
            payload: dict[str, Any] = {"org_id": org} if event == "run.started" else {"text": "x"}
            if event == "run.finished":
                payload = {"status": "succeeded"}
                finished.add(run)
            started.add(run)
            await projected(khala, mine, run, event, **payload)
            if rnd.random() < 0.4:  # another org's activity, which no list may show
                await projected(khala, theirs, f"run-{other}-{step}", "run.started")
            for v in views:
                expected = await store_view(pool, v, user, org)
                await kc.wait_until(lambda _c, v=v, e=expected: client_view(v) == e, timeout=10)  # type: ignore[misc]
                assert all(d["payload"].get("org_id") in (org, None) for d in v.documents.values())
        # Nothing applied twice: a document's version is applied again only after it left
        # the view (a list's document that dropped out of the top N and came back).
        held: dict[tuple[str, str], int] = {}
        for c in changes:
            at = (c["sub"], c["doc_key"])
            if c["op"] == "remove":
                held.pop(at, None)
            else:
                assert c["doc_version"] > held.get(at, 0), f"applied twice: {c}"
                held[at] = c["doc_version"]
    await pool.close()
