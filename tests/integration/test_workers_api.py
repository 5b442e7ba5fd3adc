"""The Codex workers API over a real socket against a real Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
import pytest

from oa.canonical import event_hash
from oa.runtime.adapters.listener import JournalListener
from oa.runtime.service.appender import GroupAppender
from oa.runtime.service.workers import WorkerService
from oa.store.database import Database

W = "/internal/v1/codex/workers"
Signer = Callable[[str], dict[str, str]]


@pytest.fixture
def worker_id() -> str:
    return f"wkr-{uuid.uuid4().hex[:12]}"


async def test_create_reattach_stop_chain(client: httpx.AsyncClient, worker_id: str) -> None:
    r = await client.post(W, json={"worker_id": worker_id, "workspace_ref": "ws-1", "adapter": "codex"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] is True and body["worker"]["status"] == "running"
    assert body["event"]["seq"] == 1 and body["event"]["event_type"] == "worker.started"
    assert body["worker"]["heartbeat_state"] == "missing"

    again = await client.post(W, json={"worker_id": worker_id})
    assert again.status_code == 200 and again.json()["result"] == "noop"

    stop = await client.post(f"{W}/{worker_id}/stop", json={"reason": "done"})
    assert stop.status_code == 202 and stop.json()["status"] == "stopped"
    stop2 = await client.post(f"{W}/{worker_id}/stop")
    assert stop2.status_code == 200 and stop2.json()["result"] == "noop"

    back = await client.post(W, json={"worker_id": worker_id, "workspace_ref": "ws-2"})
    assert back.status_code == 200, back.text
    assert back.json()["reattached"] is True and back.json()["event"]["payload"]["reattached"] is True
    assert back.json()["worker"]["status"] == "running" and back.json()["worker"]["workspace_ref"] == "ws-2"

    page = (await client.get(f"{W}/{worker_id}/events")).json()
    events = page["events"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    prev = None
    for e in events:
        assert e["prev_hash"] == prev
        assert e["hash"] == event_hash(worker_id, e["seq"], e["event_type"], e["payload_hash"], prev)
        prev = e["hash"]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 3


async def test_illegal_transitions_name_the_allowed_ones(client: httpx.AsyncClient, worker_id: str) -> None:
    r = await client.post(W, json={"worker_id": worker_id, "status": "starting"})
    assert r.status_code == 201 and r.json()["worker"]["status"] == "starting"
    stop = await client.post(f"{W}/{worker_id}/stop")
    assert [e["payload"]["status"] for e in stop.json()["events"]] == ["stopping", "stopped"]

    bad = await client.post(
        f"{W}/{worker_id}/events", json={"event_type": "worker.stopped", "payload": {"status": "stopping"}}
    )
    assert bad.status_code == 409, bad.text
    err = bad.json()["error"]
    assert err["code"] == "conflict" and err["details"]["allowed"] == ["starting", "running"]
    assert "starting" in err["message"] and "running" in err["message"]

    hb = await client.post(f"{W}/{worker_id}/events", json={"event_type": "worker.heartbeat"})
    assert hb.status_code == 409 and "reattach" in hb.json()["error"]["message"]

    await client.post(W, json={"worker_id": worker_id})
    fail = await client.post(
        f"{W}/{worker_id}/events",
        json={"event_type": "worker.error", "payload": {"fatal": True, "code": "oom"}},
    )
    assert fail.status_code == 201 and fail.json()["status"] == "failed"
    assert fail.json()["event"]["payload"]["status"] == "failed"
    stop_failed = await client.post(f"{W}/{worker_id}/stop")
    assert stop_failed.status_code == 409
    assert stop_failed.json()["error"]["details"]["allowed"] == ["starting", "running"]


async def test_heartbeat_state_is_computed(client: httpx.AsyncClient, db: Database, worker_id: str) -> None:
    await client.post(W, json={"worker_id": worker_id})
    hb = await client.post(
        f"{W}/{worker_id}/events", json={"event_type": "worker.heartbeat", "payload": {"executor": "host-1"}}
    )
    assert hb.status_code == 201, hb.text
    snap = (await client.get(f"{W}/{worker_id}/snapshot")).json()
    assert snap["heartbeat_state"] == "fresh" and 0 <= snap["heartbeat_age_ms"] < 60_000
    assert snap["heartbeat_stale_after_ms"] == 120_000
    # Nothing rewrites a flag: the same row reads as stale once its heartbeat is old.
    await db.pool.execute(
        "UPDATE runtime.codex_workers SET last_heartbeat_at = now() - interval '10 minutes' WHERE worker_id = $1",
        worker_id,
    )
    snap = (await client.get(f"{W}/{worker_id}/snapshot")).json()
    assert snap["heartbeat_state"] == "stale" and snap["heartbeat_age_ms"] >= 600_000
    await client.post(f"{W}/{worker_id}/stop")
    assert (await client.get(f"{W}/{worker_id}/snapshot")).json()["heartbeat_state"] == "stopped"


async def test_requests_are_idempotent(client: httpx.AsyncClient, worker_id: str) -> None:
    await client.post(W, json={"worker_id": worker_id})
    body = {"request_id": "req-1", "method": "turn/start", "params": {"text": "hi"}}
    first = await client.post(f"{W}/{worker_id}/requests", json=body)
    assert first.status_code == 201 and first.json()["event"]["event_type"] == "worker.request.received"
    again = await client.post(f"{W}/{worker_id}/requests", json=body)
    assert again.status_code == 200 and again.json()["idempotentReplay"] is True
    assert again.json()["event"]["seq"] == first.json()["event"]["seq"]
    clash = await client.post(f"{W}/{worker_id}/requests", json={**body, "method": "turn/stop"})
    assert clash.status_code == 409 and "req-1" in clash.json()["error"]["message"]
    page = (await client.get(f"{W}/{worker_id}/events")).json()
    assert page["last_seq"] == 2


async def test_bad_input_writes_nothing(client: httpx.AsyncClient, db: Database, worker_id: str) -> None:
    await client.post(W, json={"worker_id": worker_id})
    cases = [
        ({"event_type": "run.started"}, "worker."),
        ({"event_type": "worker.heartbeat", "payload": {"bogus": 1}}, "bogus"),
        ({"event_type": "worker.started", "payload": {"status": "stopped"}}, "starting or running"),
    ]
    for body, word in cases:
        r = await client.post(f"{W}/{worker_id}/events", json=body)
        assert r.status_code == 400, r.text
        assert word in r.json()["error"]["message"]
    for params in ({"limit": 0}, {"limit": 201}, {"status": "sleeping"}):
        r = await client.get(W, params=params)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    missing = await client.post(f"{W}/nope-{worker_id}/events", json={"event_type": "worker.heartbeat"})
    assert missing.status_code == 404
    assert (
        await db.fetchval("SELECT last_seq FROM runtime.codex_workers WHERE worker_id = $1", worker_id) == 1
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM runtime.codex_workers WHERE worker_id = $1", f"nope-{worker_id}"
        )
        == 0
    )


async def test_list_filters(client: httpx.AsyncClient) -> None:
    ws = f"ws-{uuid.uuid4().hex[:8]}"
    ids = [f"wkr-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for wid in ids:
        await client.post(W, json={"worker_id": wid, "workspace_ref": ws})
    await client.post(f"{W}/{ids[0]}/stop")
    listed = (await client.get(W, params={"workspace_ref": ws})).json()["workers"]
    assert {w["worker_id"] for w in listed} == set(ids)
    stopped = (await client.get(W, params={"workspace_ref": ws, "status": "stopped"})).json()["workers"]
    assert [w["worker_id"] for w in stopped] == [ids[0]]
    assert len((await client.get(W, params={"workspace_ref": ws, "limit": 2})).json()["workers"]) == 2


async def test_other_principal_is_refused(
    runtime_url: str, sign: Signer, client: httpx.AsyncClient, worker_id: str
) -> None:
    await client.post(W, json={"worker_id": worker_id})
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign("user:mallory")) as other:
        for r in (
            await other.get(f"{W}/{worker_id}/snapshot"),
            await other.post(W, json={"worker_id": worker_id}),
            await other.post(f"{W}/{worker_id}/stop"),
        ):
            assert r.status_code == 403, r.text
        assert (await other.get(W)).json()["workers"] == []


async def _sse(client: httpx.AsyncClient, url: str, want: int, **kw: object) -> list[int]:
    seqs: list[int] = []
    async with client.stream("GET", url, **kw) as resp:  # type: ignore[arg-type]
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("id: "):
                seqs.append(int(line[4:]))
                if len(seqs) == want:
                    break
    return seqs


async def test_stream_resumes_from_cursor(client: httpx.AsyncClient, worker_id: str) -> None:
    await client.post(W, json={"worker_id": worker_id})
    for i in range(3):
        await client.post(
            f"{W}/{worker_id}/events", json={"event_type": "worker.event", "payload": {"name": f"e{i}"}}
        )
    url = f"{W}/{worker_id}/stream"
    assert await asyncio.wait_for(_sse(client, url, 3, params={"cursor": 1}), 10) == [2, 3, 4]
    assert await asyncio.wait_for(_sse(client, url, 1, headers={"Last-Event-ID": "3"}), 10) == [4]

    async def later() -> None:
        await asyncio.sleep(0.2)
        await client.post(f"{W}/{worker_id}/events", json={"event_type": "worker.heartbeat"})

    task = asyncio.create_task(later())
    assert await asyncio.wait_for(_sse(client, url, 1, params={"cursor": 4}), 10) == [5]
    await task
    both = await client.get(url, params={"cursor": 1}, headers={"Last-Event-ID": "2"})
    assert both.status_code == 400 and "disagree" in both.json()["error"]["message"]
    ahead = await client.get(url, params={"cursor": 99})
    assert ahead.status_code == 400


async def test_sweeper_fails_lost_executors_and_tells_the_run(
    client: httpx.AsyncClient, db: Database, database_url: str, worker_id: str, run_id: str
) -> None:
    assert (
        await client.post(f"/internal/v1/runs/{run_id}/events", json={"event_type": "run.started"})
    ).status_code == 201
    await client.post(W, json={"worker_id": worker_id, "run_id": run_id})
    await client.post(f"{W}/{worker_id}/events", json={"event_type": "worker.heartbeat"})
    fresh = f"wkr-fresh-{uuid.uuid4().hex[:8]}"
    await client.post(W, json={"worker_id": fresh})
    await client.post(f"{W}/{fresh}/events", json={"event_type": "worker.heartbeat"})
    await db.pool.execute(
        "UPDATE runtime.codex_workers SET last_heartbeat_at = now() - interval '1 hour' WHERE worker_id = $1",
        worker_id,
    )
    appender = GroupAppender(db)
    appender.start()
    try:
        svc = WorkerService(
            db, appender, JournalListener(database_url), stale_after_ms=120_000, replay_window=100
        )
        assert await svc.sweep_lost_executors(lost_after_ms=30 * 60_000) >= 1
        # A second sweep (or another node's) changes nothing.
        await svc.sweep_lost_executors(lost_after_ms=30 * 60_000)
    finally:
        await appender.stop()
    snap = (await client.get(f"{W}/{worker_id}/snapshot")).json()
    assert snap["status"] == "failed" and snap["heartbeat_state"] == "failed"
    events = (await client.get(f"{W}/{worker_id}/events")).json()["events"]
    assert events[-1]["event_type"] == "worker.error"
    assert (
        events[-1]["payload"]["code"] == "executor_lost"
        and "no heartbeat" in events[-1]["payload"]["message"]
    )
    assert sum(e["event_type"] == "worker.error" for e in events) == 1
    run_events = (await client.get(f"/internal/v1/runs/{run_id}/events")).json()["events"]
    lost = [e for e in run_events if e["event_type"] == "run.executor_lost"]
    assert len(lost) == 1 and lost[0]["payload"]["worker_id"] == worker_id
    assert (await client.get(f"{W}/{fresh}/snapshot")).json()["status"] == "running"
