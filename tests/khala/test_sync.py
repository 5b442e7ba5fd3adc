"""The sync server over real sockets with the real Python client (and raw frames)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from oa.khala.client import KhalaClient
from oa.khala.sync.session import SessionLimits
from tests.khala.sync_fixtures import Khala, mint, running_khala, token_provider

RUNS = "runtime.run_summaries"


@pytest.fixture
async def khala(database_url: str) -> object:
    async with running_khala(database_url) as k:
        yield k


async def raw_session(khala: Khala, token: str) -> ClientConnection:
    ws = await connect(khala.url.replace("http", "ws") + "/sync/v1/ws")
    await ws.send(json.dumps({"type": "auth", "token": token}))
    return ws


async def next_frame(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind or frame["type"] == "error":
                assert isinstance(frame, dict)
                return frame


async def test_live_update_reaches_client(khala: Khala, client: httpx.AsyncClient, run_id: str) -> None:
    async with KhalaClient(khala.url, token_provider("alice"), [RUNS]) as kc:
        await asyncio.wait_for(kc.live.wait(), 5)
        await client.post(
            f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {}}
        )
        key = f"runtime/run_summary:{run_id}"
        await kc.wait_until(lambda c: key in c.documents and c.documents[key].payload["status"] == "running")  # type: ignore[index]
        await client.post(
            f"/internal/v1/runs/{run_id}/events",
            json={"event_type": "run.finished", "payload": {"status": "succeeded"}},
        )
        await kc.wait_until(lambda c: c.documents[key].doc_version == 2)
        assert c_status(kc, key) == "succeeded"


def c_status(kc: KhalaClient, key: str) -> object:
    doc = kc.documents[key].payload
    assert doc is not None
    return doc["status"]


async def test_per_document_authorization(khala: Khala, runtime_url: str, sign: object) -> None:
    """Randomized: several users and orgs write runs; each client holds exactly what it may see."""
    import random

    rnd = random.Random(7)
    users = {"u1": "org-a", "u2": "org-a", "u3": "org-b", "u4": ""}
    clients = {u: KhalaClient(khala.url, token_provider(u, org), [RUNS]) for u, org in users.items()}
    for c in clients.values():
        await c.start()
    try:
        expected: dict[str, set[str]] = {u: set() for u in users}
        for i in range(24):
            owner = rnd.choice(list(users))
            org = users[owner] if rnd.random() < 0.6 else ""
            rid = f"authz-{owner}-{i}-{rnd.randrange(10**6)}"
            async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{owner}", org or None)) as h:  # type: ignore[operator]
                r = await h.post(
                    f"/internal/v1/runs/{rid}/events",
                    json={"event_type": "run.started", "payload": {"org_id": org}},
                )
                assert r.status_code == 201
            for u, uorg in users.items():
                if u == owner or (org and org == uorg):
                    expected[u].add(f"runtime/run_summary:{rid}")
        for u, c in clients.items():
            await c.wait_until(lambda c, u=u: expected[u] <= set(c.documents), timeout=10)  # type: ignore[misc]
        await asyncio.sleep(0.5)
        for u, c in clients.items():
            mine = {k for k in c.documents if k.startswith("runtime/run_summary:authz-")}
            assert mine == expected[u], f"{u} sees {mine ^ expected[u]} wrongly"
    finally:
        for c in clients.values():
            await c.close()


async def test_client_writes_are_forbidden(khala: Khala) -> None:
    ws = await raw_session(khala, mint("alice"))
    assert (await next_frame(ws, "ready"))["type"] == "ready"
    for attempt in ({"type": "mutation", "doc_key": "x", "payload": {}}, {"type": "set", "topic": RUNS}):
        await ws.send(json.dumps(attempt))
        err = await next_frame(ws, "never")
        assert err["code"] == "forbidden" and "read-only" in str(err["message"])
    await ws.close()


async def test_subscription_errors(khala: Khala) -> None:
    ws = await raw_session(khala, mint("alice", scopes=("runtime.notifications",)))
    await next_frame(ws, "ready")
    await ws.send(json.dumps({"type": "subscribe", "topics": [RUNS]}))
    assert (await next_frame(ws, "never"))["code"] == "forbidden_topic"
    await ws.send(json.dumps({"type": "subscribe", "topics": ["nope"]}))
    assert (await next_frame(ws, "never"))["code"] == "bad_subscription"
    await ws.send(
        json.dumps(
            {
                "type": "subscribe",
                "topics": ["runtime.notifications"],
                "resume_after": {"runtime.notifications": 10**9},
            }
        )
    )
    err = await next_frame(ws, "never")
    assert err["code"] == "stale_cursor" and err["full_resync_required"] is True and "retention_floor" in err
    await ws.close()


async def test_bad_tokens_are_refused(khala: Khala) -> None:
    for token, code in ((mint("alice", ttl=-120), "token_expired"), ("garbage", "unauthorized")):
        ws = await raw_session(khala, token)
        err = await next_frame(ws, "ready")
        assert err["type"] == "error" and err["code"] == code and err["fatal"] is True
        await ws.close()


async def test_token_expiry_then_refresh_resumes_with_nothing_lost(
    database_url: str, client: httpx.AsyncClient, run_id: str
) -> None:
    async with running_khala(database_url, SessionLimits(heartbeat_s=1)) as khala:
        kc = KhalaClient(khala.url, token_provider("alice", ttl=3), [RUNS], refresh_before_s=None)
        await kc.start()
        try:
            await asyncio.wait_for(kc.live.wait(), 5)
            for i in range(6):
                await client.post(
                    f"/internal/v1/runs/{run_id}/events",
                    json={"event_type": "text.delta", "payload": {"text": str(i)}},
                )
                await asyncio.sleep(1)
            key = f"runtime/run_summary:{run_id}"
            await kc.wait_until(
                lambda c: key in c.documents and c.documents[key].doc_version == 6, timeout=10
            )
            assert any(e.get("code") == "token_expired" for e in kc.stats.errors)
            assert kc.stats.connects >= 2
        finally:
            await kc.close()


async def test_live_refresh_keeps_subscriptions(khala: Khala, client: httpx.AsyncClient, run_id: str) -> None:
    kc = KhalaClient(khala.url, token_provider("alice", ttl=60), [RUNS], refresh_before_s=59)
    await kc.start()
    try:
        await asyncio.wait_for(kc.live.wait(), 5)
        await kc.wait_until(lambda c: c.stats.refreshes >= 1, timeout=5)
        await client.post(
            f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started", "payload": {}}
        )
        await kc.wait_until(lambda c: f"runtime/run_summary:{run_id}" in c.documents, timeout=5)
        assert kc.stats.connects == 1
    finally:
        await kc.close()


async def test_one_projector_transaction_is_one_batch(
    khala: Khala, client: httpx.AsyncClient, run_id: str
) -> None:
    ws = await raw_session(khala, mint("alice"))
    await next_frame(ws, "ready")
    await ws.send(json.dumps({"type": "subscribe", "topics": [RUNS, "runtime.notifications"]}))
    await next_frame(ws, "subscribed")
    first = await next_frame(ws, "update_batch")
    assert first["replay_complete"] is True
    await client.post(
        f"/internal/v1/runs/{run_id}/events/batch",
        json={
            "events": [
                {"event_type": "run.started", "payload": {}},
                {"event_type": "run.finished", "payload": {"status": "failed"}},
            ]
        },
    )
    batch = await next_frame(ws, "update_batch")
    topics = {u["topic"] for u in batch["updates"]}
    assert topics == {RUNS, "runtime.notifications"}, batch
    await ws.close()


async def test_a_malformed_refresh_is_refused_and_the_socket_stays_open(khala: Khala) -> None:
    """Like any other refused refresh (e.g. a garbage token): an error, then business as usual."""
    ws = await raw_session(khala, mint("alice"))
    await next_frame(ws, "ready")
    for bad in ({}, {"token": ""}, {"token": 42}, {"token": None}, {"token": ["x"]}, {"token": "garbage"}):
        await ws.send(json.dumps({"type": "refresh_token", **bad}))
        err = await next_frame(ws, "never")
        assert err["code"] == "unauthorized" and err["fatal"] is False, (bad, err)
    await ws.send(json.dumps({"type": "subscribe", "topics": [RUNS]}))
    assert (await next_frame(ws, "subscribed"))["type"] == "subscribed"
    await ws.send(json.dumps({"type": "refresh_token", "token": mint("alice")}))
    assert (await next_frame(ws, "token_refreshed"))["type"] == "token_refreshed"
    await ws.close()
