"""Live queries over real sockets (raw frames): one document, one stream, an exact list,
per-subscription resume, and the refusals of bad scopes."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from oa.khala.sync.live import stream_of
from oa.khala.sync.session import SessionLimits
from tests.conftest import Signer
from tests.khala.sync_fixtures import Khala, mint, running_khala
from tests.khala.test_sync import raw_session

RUNS = "runtime.run_summaries"


@pytest.fixture
async def khala(database_url: str) -> object:
    async with running_khala(database_url, SessionLimits(max_subscriptions=3, max_list_limit=20)) as k:
        yield k


_unread: dict[int, list[dict[str, Any]]] = {}  # frames of other subs, kept for their turn


async def frame_for(
    ws: ClientConnection, sub: str, kind: str = "update_batch", timeout: float = 5.0
) -> dict[str, Any]:
    kept = _unread.setdefault(id(ws), [])
    for i, frame in enumerate(kept):
        if frame.get("sub") == sub and frame["type"] in (kind, "error"):
            return kept.pop(i)
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            assert isinstance(frame, dict)
            if frame.get("sub") == sub and frame["type"] in (kind, "error"):
                return frame
            if frame.get("sub"):
                kept.append(frame)


async def subscribe(ws: ClientConnection, sub: str, scope: dict[str, Any], **extra: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "subscribe", "sub": sub, "topic": RUNS, "scope": scope, **extra}))
    return await frame_for(ws, sub, "subscribed")


async def until_complete(ws: ClientConnection, sub: str) -> list[dict[str, Any]]:
    updates: list[dict[str, Any]] = []
    while True:
        f = await frame_for(ws, sub)
        assert f["type"] == "update_batch", f
        updates += f["updates"]
        if f["replay_complete"]:
            return updates


async def post(
    h: httpx.AsyncClient, run: str, event_type: str, payload: dict[str, Any] | None = None
) -> None:
    r = await h.post(
        f"/internal/v1/runs/{run}/events", json={"event_type": event_type, "payload": payload or {}}
    )
    assert r.status_code in (200, 201, 202), r.text


async def projected(khala: Khala, h: httpx.AsyncClient, run: str, event_type: str, **payload: Any) -> None:
    """Append one run event and wait until the hub has its two documents (summary, timeline)."""
    before = khala.hub.heads[RUNS]
    await post(h, run, event_type, payload)
    async with asyncio.timeout(10):
        while khala.hub.heads[RUNS] < before + 2:
            await asyncio.sleep(0.02)
        while True:  # and until the projector is done with it (other projections of the topic)
            seen = khala.hub.heads[RUNS]
            await asyncio.sleep(0.15)
            if khala.hub.heads[RUNS] == seen:
                return


async def test_doc_and_stream_scopes_get_only_their_run(khala: Khala, client: httpx.AsyncClient) -> None:
    mine, other = f"run-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"
    await projected(khala, client, mine, "run.started")
    ws = await raw_session(khala, mint("alice"))
    assert (await subscribe(ws, "d", {"doc_key": f"runtime/run_summary:{mine}"}))["type"] == "subscribed"
    first = await until_complete(ws, "d")  # no cursor: the current document
    assert [u["doc_key"] for u in first] == [f"runtime/run_summary:{mine}"]
    # A socket with only live queries counts as the topic's subscriber (status, metrics).
    assert khala.hub.subscribers(RUNS) >= 1 and not khala.hub.topic_sessions
    await subscribe(ws, "s", {"stream": mine})
    keys = {u["doc_key"] for u in await until_complete(ws, "s")}
    assert {f"runtime/run_summary:{mine}", f"runtime/run_timeline:{mine}"} <= keys
    assert {stream_of(k) for k in keys} == {mine}  # every document of that run, no other
    await post(client, other, "run.started")
    await post(client, mine, "text.delta", {"text": "hi"})
    f = await frame_for(ws, "s")
    assert {u["doc_key"] for u in f["updates"]} <= keys  # the other run never arrives
    assert all(u["op"] == "upsert" and u["doc_version"] == 2 for u in f["updates"])
    d = await frame_for(ws, "d")
    assert [u["doc_version"] for u in d["updates"]] == [2]
    await ws.close()


async def test_list_is_exact_when_documents_leave_and_enter(
    khala: Khala, runtime_url: str, sign: Signer
) -> None:
    user = f"lister-{uuid.uuid4().hex[:6]}"
    runs = [f"run-{user}-{i}" for i in range(3)]
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}")) as h:
        for r in runs:
            await projected(khala, h, r, "run.started")
        ws = await raw_session(khala, mint(user))
        await subscribe(ws, "l", {"where": {"owner": user, "status": "running"}, "limit": 2})
        view = {u["doc_key"] for u in await until_complete(ws, "l")}
        keys = [f"runtime/run_summary:{r}" for r in runs]
        assert view == set(keys[1:])  # newest first, limit 2
        await post(h, runs[2], "run.finished", {"status": "succeeded"})  # leaves the filter
        changes: dict[str, str] = {}
        while len(changes) < 2:
            for u in (await frame_for(ws, "l"))["updates"]:
                changes[u["doc_key"]] = u["op"]
        assert changes == {keys[2]: "remove", keys[0]: "upsert"}  # run 0 enters the top 2
        await post(h, runs[0], "text.delta", {"text": "x"})  # moves to the top, stays in
        f = await frame_for(ws, "l")
        assert [(u["doc_key"], u["op"]) for u in f["updates"]] == [(keys[0], "upsert")]
        await ws.close()


async def test_resume_per_subscription_replays_only_its_scope(
    khala: Khala, client: httpx.AsyncClient
) -> None:
    run = f"run-{uuid.uuid4().hex[:8]}"
    await projected(khala, client, run, "run.started")
    ws = await raw_session(khala, mint("alice"))
    await subscribe(ws, "d", {"doc_key": f"runtime/run_summary:{run}"})
    await until_complete(ws, "d")
    await ws.close()
    heads = khala.hub.heads[RUNS]
    for i in range(3):
        await projected(khala, client, f"{run}-noise-{i}", "run.started")
    await projected(khala, client, run, "text.delta", text="a")
    ws = await raw_session(khala, mint("alice"))
    await subscribe(ws, "d", {"doc_key": f"runtime/run_summary:{run}"}, resume_after={RUNS: heads})
    replay = await until_complete(ws, "d")
    assert [(u["doc_key"], u["doc_version"]) for u in replay] == [(f"runtime/run_summary:{run}", 2)]
    await ws.close()


@pytest.mark.parametrize(
    ("scope", "needle"),
    [
        ({"where": {"model": "x"}}, "queryable fields: owner, org_id, status"),
        ({"order_by": "model"}, "orderable fields: last_event_at, created_at"),
        ({"limit": 21}, "from 1 to 20"),
        ({"doc_key": "a", "stream": "b"}, "exactly one of"),
        ({"colour": 1}, "allowed: doc_key, stream"),
    ],
)
async def test_bad_scopes_are_refused_clearly(khala: Khala, scope: dict[str, Any], needle: str) -> None:
    ws = await raw_session(khala, mint("alice"))
    err = await subscribe(ws, "bad", scope)
    assert err["type"] == "error" and err["code"] == "bad_subscription" and not err["fatal"]
    assert needle in err["message"], err["message"]
    await ws.close()


async def test_subscriptions_per_socket_are_capped(khala: Khala) -> None:
    ws = await raw_session(khala, mint("alice"))
    for i in range(3):
        assert (await subscribe(ws, f"s{i}", {"stream": f"r{i}"}))["type"] == "subscribed"
    err = await subscribe(ws, "s3", {"stream": "r3"})
    assert err["code"] == "bad_subscription" and "3 live queries" in err["message"]
    await ws.close()


async def test_cli_watch_doc_json_prints_one_line_per_change(
    khala: Khala, client: httpx.AsyncClient, tmp_path: Any
) -> None:
    import os
    import sys

    run = f"run-{uuid.uuid4().hex[:8]}"
    await projected(khala, client, run, "run.started")
    key = f"runtime/run_summary:{run}"
    env = {**os.environ, "KHALA_URL": khala.url, "OA_SYNC_TOKEN": mint("alice"), "OA_HOME": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oa.cli.main", "khala", "watch", RUNS, "--doc", key, "--json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert (first["sub"], first["op"], first["doc_key"], first["doc_version"]) == (
            "watch",
            "upsert",
            key,
            1,
        )
        assert first["payload"]["status"] == "running"
        await post(client, run, "run.finished", {"status": "succeeded"})
        second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert (second["doc_version"], second["payload"]["status"]) == (2, "succeeded")
    finally:
        proc.kill()
        await proc.wait()


def test_cli_watch_refuses_mixed_scopes() -> None:
    from typer.testing import CliRunner

    from oa.cli.khala_cmd import app

    result = CliRunner().invoke(app, ["watch", RUNS, "--doc", "a", "--run", "b"])
    assert result.exit_code != 0 and "use one of --doc, --run" in result.output
    result = CliRunner().invoke(app, ["watch", RUNS, "--where", "status"])
    assert result.exit_code != 0 and "FIELD=VALUE" in result.output


async def test_a_document_of_another_user_never_reaches_a_doc_query(
    khala: Khala, runtime_url: str, sign: Signer
) -> None:
    bob_run = f"run-bob-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign("user:bob")) as bob:
        await projected(khala, bob, bob_run, "run.started")
        ws = await raw_session(khala, mint("alice"))
        await subscribe(ws, "peek", {"doc_key": f"runtime/run_summary:{bob_run}"})
        assert await until_complete(ws, "peek") == []
        await subscribe(ws, "peek-stream", {"stream": bob_run})
        assert await until_complete(ws, "peek-stream") == []
        await projected(khala, bob, bob_run, "text.delta", text="secret")
        with pytest.raises(TimeoutError):
            await frame_for(ws, "peek", timeout=0.5)
        await ws.close()


def test_live_query_limits_come_from_the_environment() -> None:
    limits = SessionLimits.from_env({"OA_KHALA_MAX_SUBSCRIPTIONS": "5", "OA_KHALA_MAX_LIST_LIMIT": "100"})
    assert (limits.max_subscriptions, limits.max_list_limit) == (5, 100)


async def test_a_scoped_resume_reads_the_journal_through_its_index(reader_conn: Any) -> None:
    """Resume cost follows what the scope matches: the key and stream indexes (0008) serve it."""
    await reader_conn.execute("SET enable_seqscan = off")
    for cond, index in (
        ("doc_key = 'runtime/run_summary:x'", "stream_journal_doc"),
        ("split_part(doc_key, ':', 2) = 'x'", "stream_journal_stream"),
    ):
        plan = "\n".join(
            r[0]
            for r in await reader_conn.fetch(
                f"EXPLAIN SELECT * FROM khala.stream_journal WHERE topic = 'runtime.run_summaries' AND {cond}"
                " AND watermark > 5 ORDER BY watermark LIMIT 10"
            )
        )
        assert index in plan, plan
