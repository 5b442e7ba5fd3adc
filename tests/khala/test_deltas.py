"""Deltas for growing documents (issue 11.2, 11.3): patches over real sockets from a real
server fed by the real projector, applied by the real client and checked by hash; both
fall-backs to the whole document (missing base, hash mismatch) forced; `fetch` answers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import jsonpatch
import pytest
from websockets.asyncio.client import ClientConnection

from oa.canonical import canonical_json, sha256_hex
from oa.khala.client import KhalaClient
from oa.khala.store import live as store
from oa.khala.sync.session import SessionLimits
from oa.store.database import with_user
from tests.conftest import Signer
from tests.khala.sync_fixtures import Khala, mint, running_khala, token_provider
from tests.khala.test_live_queries import RUNS, frame_for, projected, subscribe, until_complete
from tests.khala.test_sync import next_frame, raw_session


@pytest.fixture
async def khala(database_url: str) -> AsyncIterator[Khala]:
    async with running_khala(database_url, SessionLimits(messages_per_s=50, burst=20)) as k:
        yield k


@pytest.fixture
async def reader(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(with_user(database_url, "oa_khala_reader"), min_size=1, max_size=2)
    yield pool
    await pool.close()


def user_ids() -> tuple[str, str, str]:
    u = uuid.uuid4().hex[:8]
    return f"dl-{u}", f"org-{u}", f"run-dl-{u}"


async def stored(pool: asyncpg.Pool, key: str, user: str, org: str) -> dict[str, Any]:
    (row,) = await store.documents_by_key(pool, RUNS, [key], user_id=user, org_id=org)
    assert row.payload is not None
    return {"doc_version": row.doc_version, "payload": json.loads(row.payload), "hash": row.payload_hash}


def canonical_hash(payload: Any) -> str:
    return sha256_hex(canonical_json(payload))


async def test_a_timeline_travels_as_patches_that_hash_right_and_are_smaller(
    khala: Khala, runtime_url: str, sign: Signer, reader: asyncpg.Pool
) -> None:
    user, org, run = user_ids()
    key = f"runtime/run_timeline:{run}"
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h:
        await projected(khala, h, run, "run.started", org_id=org)
        ws = await raw_session(khala, mint(user, org))
        await next_frame(ws, "ready")
        await subscribe(ws, "tl", {"doc_key": key})
        (loaded,) = await until_complete(ws, "tl")
        assert loaded["payload"] is not None and "patch" not in loaded  # a load goes whole
        doc, version = loaded["payload"], loaded["doc_version"]
        for i in range(12):
            await projected(khala, h, run, "text.delta", text=f"token {i} ")
        updates: list[dict[str, Any]] = []
        while len(updates) < 12:
            updates += (await frame_for(ws, "tl"))["updates"]
        for u in updates:
            assert u["payload"] is None and isinstance(u["patch"], list), u
            assert u["base_version"] == version, "each patch applies to the version sent before it"
            version = u["doc_version"]
            doc = jsonpatch.apply_patch(doc, u["patch"])
            assert canonical_hash(doc) == u["payload_hash"], "the patched result hashes as the server says"
            assert len(json.dumps(u["patch"], separators=(",", ":"))) < len(canonical_json(doc))
        last = len(json.dumps(updates[-1]["patch"], separators=(",", ":")))
        assert last * 5 < len(canonical_json(doc)), "13 events in, an append is a fraction of the whole"
        now = await stored(reader, key, user, org)
        assert doc == now["payload"] and updates[-1]["doc_version"] == now["doc_version"]
        await ws.close()


async def test_client_applies_patches_and_falls_back_to_fetch_on_missing_base_and_bad_hash(
    khala: Khala, runtime_url: str, sign: Signer, reader: asyncpg.Pool
) -> None:
    user, org, run = user_ids()
    key = f"runtime/run_timeline:{run}"
    async with (
        httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h,
        KhalaClient(khala.url, token_provider(user, org), []) as kc,
    ):
        await projected(khala, h, run, "run.started", org_id=org)
        view = kc.watch("tl", RUNS, {"doc_key": key})
        await asyncio.wait_for(view.live.wait(), 10)

        async def converged() -> None:
            want = await stored(reader, key, user, org)
            await kc.wait_until(
                lambda _c: key in view.documents and view.documents[key]["doc_version"] == want["doc_version"]
            )
            assert view.documents[key]["payload"] == want["payload"]
            assert canonical_hash(view.documents[key]["payload"]) == want["hash"]

        await projected(khala, h, run, "text.delta", text="a")
        await converged()
        assert view.patches_applied >= 1 and view.fetched == 0

        # Hash mismatch: the held copy is corrupted behind the view's back (same version).
        view.documents[key]["payload"]["events"][0]["type"] = "corrupted"
        await projected(khala, h, run, "text.delta", text="b")
        await converged()
        assert view.hash_mismatches == 1 and view.fetched == 1
        assert view.documents[key]["payload"]["events"][0]["type"] == "run.started"

        # Missing base: the client lost its copy; the next patch cannot apply.
        del view.documents[key]
        await projected(khala, h, run, "text.delta", text="c")
        await converged()
        assert view.missing_base == 1 and view.fetched == 2
        patched_before = view.patches_applied
        await projected(khala, h, run, "text.delta", text="d")  # and patches resume on the fetched copy
        await converged()
        assert view.patches_applied == patched_before + 1


async def test_topic_wide_client_takes_patches_after_the_base_and_fetches_when_it_lacks_it(
    khala: Khala, runtime_url: str, sign: Signer, reader: asyncpg.Pool
) -> None:
    user, org, run = user_ids()
    key = f"runtime/run_timeline:{run}"
    async with (
        httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h,
        KhalaClient(khala.url, token_provider(user, org), [RUNS]) as kc,
    ):
        await asyncio.wait_for(kc.live.wait(), 10)
        await projected(khala, h, run, "run.started", org_id=org)
        await projected(khala, h, run, "text.delta", text="one")
        want = await stored(reader, key, user, org)
        await kc.wait_until(
            lambda c: key in c.documents and c.documents[key].doc_version == want["doc_version"]
        )
        assert kc.documents[key].payload == want["payload"] and kc.stats.patches_applied >= 1
        # The client's copy is corrupted: the next patch's result hashes wrong -> fetch.
        held = kc.documents[key].payload
        assert held is not None
        held["events"] = []
        await projected(khala, h, run, "text.delta", text="two")
        want = await stored(reader, key, user, org)
        await kc.wait_until(lambda c: c.documents[key].doc_version == want["doc_version"])
        assert kc.documents[key].payload == want["payload"]
        assert kc.stats.hash_mismatches >= 1 and kc.stats.fetched >= 1


async def test_a_subscriber_without_cursor_gets_whole_documents_until_it_was_sent_the_base(
    khala: Khala, runtime_url: str, sign: Signer
) -> None:
    """Topic-wide "live from now": a document written before the subscribe goes whole
    (the client may not hold it); once a version was sent, the next ones are patches."""
    user, org, run = user_ids()
    key = f"runtime/run_timeline:{run}"
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h:
        await projected(khala, h, run, "run.started", org_id=org)
        ws = await raw_session(khala, mint(user, org))
        await next_frame(ws, "ready")
        await ws.send(json.dumps({"type": "subscribe", "topics": [RUNS]}))
        await next_frame(ws, "subscribed")
        seen: list[dict[str, Any]] = []
        for text in ("x", "y"):
            await projected(khala, h, run, "text.delta", text=text)
        async with asyncio.timeout(10):
            while len([u for u in seen if u["doc_key"] == key]) < 2:
                seen += (await next_frame(ws, "update_batch"))["updates"]
        first, second = [u for u in seen if u["doc_key"] == key][:2]
        assert first["payload"] is not None and "patch" not in first
        assert second["payload"] is None and second["base_version"] == first["doc_version"]
        await ws.close()


async def test_fetch_answers_whole_documents_and_remove_for_foreign_or_missing_keys(
    khala: Khala, runtime_url: str, sign: Signer, reader: asyncpg.Pool
) -> None:
    user, org, run = user_ids()
    key = f"runtime/run_timeline:{run}"
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h:
        await projected(khala, h, run, "run.started", org_id=org)
    mine = await raw_session(khala, mint(user, org))
    await next_frame(mine, "ready")
    await mine.send(
        json.dumps({"type": "fetch", "topic": RUNS, "doc_keys": [key], "sub": "s", "request_id": "r1"})
    )
    answer = await next_frame(mine, "documents")
    want = await stored(reader, key, user, org)
    assert (answer["topic"], answer["sub"], answer["request_id"]) == (RUNS, "s", "r1")
    (doc,) = answer["documents"]
    assert doc["op"] == "upsert" and doc["payload"] == want["payload"] and doc["payload_hash"] == want["hash"]
    stranger = await raw_session(khala, mint(f"stranger-{uuid.uuid4().hex[:6]}"))
    await next_frame(stranger, "ready")
    missing = f"runtime/run_timeline:no-such-{uuid.uuid4().hex[:6]}"
    await stranger.send(json.dumps({"type": "fetch", "topic": RUNS, "doc_keys": [key, missing]}))
    foreign, absent = (await next_frame(stranger, "documents"))["documents"]
    assert foreign["op"] == absent["op"] == "remove" and foreign["payload"] is None
    assert {k: v for k, v in foreign.items() if k != "doc_key"} == {
        k: v for k, v in absent.items() if k != "doc_key"
    }
    await mine.close()
    await stranger.close()


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ({"topic": RUNS}, "doc_keys"),
        ({"topic": RUNS, "doc_keys": []}, "1 to 100"),
        ({"topic": RUNS, "doc_keys": ["k"] * 101}, "1 to 100"),
        ({"topic": RUNS, "doc_keys": [7]}, "non-empty string"),
        ({"topic": "nope", "doc_keys": ["k"]}, "one of"),
        ({"topic": RUNS, "doc_keys": ["k"], "scope": {}}, "unknown fetch fields"),
        ({"topic": RUNS, "doc_keys": ["k"], "sub": 5}, "`sub`"),
    ],
)
async def test_bad_fetch_messages_get_clear_refusals(
    khala: Khala, message: dict[str, Any], says: str
) -> None:
    ws = await raw_session(khala, mint("alice"))
    await next_frame(ws, "ready")
    await ws.send(json.dumps({"type": "fetch", **message}))
    err = await next_frame(ws, "error")
    assert err["code"] == "bad_request" and says in err["message"] and not err["fatal"], err
    await ws.send(json.dumps({"type": "heartbeat"}))
    assert (await next_frame(ws, "heartbeat"))["type"] == "heartbeat", "the socket stays open"
    await ws.close()


async def test_fetch_of_an_ungranted_topic_is_forbidden_and_fetches_count_against_the_rate_limit(
    database_url: str,
) -> None:
    async with running_khala(database_url, SessionLimits(messages_per_s=1, burst=3)) as k:
        ws = await raw_session(k, mint("alice", scopes=(RUNS,)))
        await next_frame(ws, "ready")
        await ws.send(json.dumps({"type": "fetch", "topic": "runtime.notifications", "doc_keys": ["k"]}))
        assert (await next_frame(ws, "error"))["code"] == "forbidden_topic"
        for _ in range(4):
            await ws.send(json.dumps({"type": "fetch", "topic": RUNS, "doc_keys": ["runtime/run_text:x"]}))
        codes = [(await _answer(ws))["type"] for _ in range(4)]
        assert codes.count("documents") == 2 and "error" in codes, codes
        await ws.close()


async def _answer(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame["type"] in ("documents", "error"):
                return frame


async def test_list_members_get_patches_and_entering_documents_go_whole(
    khala: Khala, runtime_url: str, sign: Signer
) -> None:
    user, org, run = user_ids()
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h:
        await projected(khala, h, run, "run.started", org_id=org)
        ws = await raw_session(khala, mint(user, org))
        await next_frame(ws, "ready")
        await subscribe(ws, "mine", {"where": {"owner": user}, "limit": 5})
        (member,) = await until_complete(ws, "mine")
        await projected(khala, h, run, "text.delta", text="hello")
        (changed,) = (await frame_for(ws, "mine"))["updates"]
        assert changed["payload"] is None and changed["base_version"] == member["doc_version"]
        summary = jsonpatch.apply_patch(member["payload"], changed["patch"])
        assert canonical_hash(summary) == changed["payload_hash"] and summary["text_chars"] == 5
        newcomer = f"{run}-b"
        await projected(khala, h, newcomer, "run.started", org_id=org)
        (entered,) = (await frame_for(ws, "mine"))["updates"]
        assert (
            entered["doc_key"].endswith(newcomer)
            and entered["payload"] is not None
            and "patch" not in entered
        )
        await ws.close()


async def test_streamed_text_grows_by_patches_on_a_run_query(
    khala: Khala, runtime_url: str, sign: Signer, reader: asyncpg.Pool
) -> None:
    """A run's text.delta events reach a client watching the run (`--run`: a stream query)
    as the run_text document, growing by append patches."""
    user, org, run = user_ids()
    key = f"runtime/run_text:{run}"
    tokens = [f"tok{i} " for i in range(15)]
    async with (
        httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h,
        KhalaClient(khala.url, token_provider(user, org), []) as kc,
    ):
        await projected(khala, h, run, "run.started", org_id=org)
        view = kc.watch("run", RUNS, {"stream": run})
        await asyncio.wait_for(view.live.wait(), 10)
        assert view.documents[key]["payload"]["chunks"] == []
        seen: list[str] = []
        view.on_change(
            lambda c: seen.append("".join(c["payload"]["chunks"])) if c["doc_key"] == key else None
        )
        for t in tokens:
            await h.post(
                f"/internal/v1/runs/{run}/events", json={"event_type": "text.delta", "payload": {"text": t}}
            )
        text = "".join(tokens)
        await kc.wait_until(lambda _c: "".join(view.documents[key]["payload"]["chunks"]) == text, timeout=15)
        want = await stored(reader, key, user, org)
        assert view.documents[key]["payload"] == want["payload"] and want["payload"]["chars"] == len(text)
        assert view.patches_applied >= 3 and view.missing_base == view.hash_mismatches == 0
        assert all(text.startswith(s) for s in seen) and seen[-1] == text, "the text only grows"


async def test_cli_watch_run_json_shows_the_text_growing_as_whole_payloads(
    khala: Khala, runtime_url: str, sign: Signer, tmp_path: Any
) -> None:
    """`oa khala watch runtime.run_summaries --run ID --json`: one line per applied change,
    each with the whole resulting payload, though the text travels as patches."""
    import os
    import sys

    user, org, run = user_ids()
    key = f"runtime/run_text:{run}"
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h:
        await projected(khala, h, run, "run.started", org_id=org)
        env = {
            **os.environ,
            "KHALA_URL": khala.url,
            "OA_SYNC_TOKEN": mint(user, org),
            "OA_HOME": str(tmp_path),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "oa.cli.main", "khala", "watch", RUNS, "--run", run, "--json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None

            async def text_line() -> dict[str, Any]:
                while True:
                    line: dict[str, Any] = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))  # type: ignore[union-attr]
                    if line["doc_key"] == key:
                        return line

            first = await text_line()
            assert (
                set(first) == {"sub", "op", "doc_key", "doc_version", "payload"}
                and first["payload"]["chunks"] == []
            )
            for word in ("Hello", ", ", "world"):
                await projected(khala, h, run, "text.delta", text=word)
                line = await text_line()
                assert line["op"] == "upsert" and line["payload"]["run_id"] == run
            assert "".join(line["payload"]["chunks"]) == "Hello, world" and line["payload"]["chars"] == 12
        finally:
            proc.kill()
            await proc.wait()


async def test_a_heavy_fetch_answer_is_split_under_the_sockets_byte_cap(
    database_url: str, runtime_url: str, sign: Signer
) -> None:
    user, org, run = user_ids()
    cap = 4096
    async with running_khala(database_url, SessionLimits(max_queued_bytes=cap)) as k:
        keys = []
        async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h:
            for i in range(3):
                await projected(k, h, f"{run}-{i}", "run.started", org_id=org)
                keys += [f"runtime/run_summary:{run}-{i}", f"runtime/run_timeline:{run}-{i}"]
        ws = await raw_session(k, mint(user, org))
        await next_frame(ws, "ready")
        await ws.send(json.dumps({"type": "fetch", "topic": RUNS, "doc_keys": keys, "request_id": "big"}))
        frames: list[dict[str, Any]] = []
        answered: list[str] = []
        while len(answered) < len(keys):
            frame = await next_frame(ws, "documents")
            assert frame["request_id"] == "big"
            frames.append(frame)
            answered += [d["doc_key"] for d in frame["documents"]]
        assert sorted(answered) == sorted(keys) and len(frames) > 1
        assert all(d["op"] == "upsert" for f in frames for d in f["documents"])
        assert all(len(json.dumps(f)) < cap for f in frames), "each frame fits the socket's cap"
        await ws.close()


async def test_a_view_resuming_with_a_cursor_past_a_base_it_lacks_fetches_the_document(
    khala: Khala, runtime_url: str, sign: Signer, reader: asyncpg.Pool
) -> None:
    """A client resumes a run's query from a cursor (it claims the scope's state there)
    without holding the documents: the replayed and live rows are patches whose base it
    lacks, so it fetches, and ends with exactly the store's documents."""
    user, org, run = user_ids()
    timeline, text = f"runtime/run_timeline:{run}", f"runtime/run_text:{run}"
    async with httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h:
        await projected(khala, h, run, "run.started", org_id=org)
        await projected(khala, h, run, "text.delta", text="before ")
        cursor = khala.hub.heads[RUNS]
        await projected(khala, h, run, "text.delta", text="after")  # journaled past the cursor
        async with KhalaClient(khala.url, token_provider(user, org), []) as kc:
            view = kc.watch("run", RUNS, {"stream": run})
            view.watermark = cursor  # as a client that kept its cursor but lost its copies
            await asyncio.wait_for(view.live.wait(), 10)
            for key in (timeline, text):
                want = await stored(reader, key, user, org)
                await kc.wait_until(
                    lambda _c, k=key, w=want: (
                        k in view.documents  # type: ignore[misc]
                        and view.documents[k]["doc_version"] == w["doc_version"]
                    )
                )
                assert view.documents[key]["payload"] == want["payload"]
            assert view.missing_base >= 2 and view.fetched >= 2
            assert "".join(view.documents[text]["payload"]["chunks"]) == "before after"


async def test_a_fetch_refused_by_the_rate_limit_is_asked_again(
    database_url: str, runtime_url: str, sign: Signer
) -> None:
    """Three subscribes spend the socket's burst; the fetch after a hash mismatch is refused
    (rate_limited) and the client asks again once the limit allows, ending with the store's
    document."""
    user, org, run = user_ids()
    key = f"runtime/run_timeline:{run}"
    limits = SessionLimits(messages_per_s=0.5, burst=3, reconnect_after_ms=2500)
    async with (
        running_khala(database_url, limits) as k,
        httpx.AsyncClient(base_url=runtime_url, headers=sign(f"user:{user}", org)) as h,
        KhalaClient(k.url, token_provider(user, org), []) as kc,
    ):
        await projected(k, h, run, "run.started", org_id=org)
        view = kc.watch("tl", RUNS, {"doc_key": key})
        kc.watch("summary", RUNS, {"doc_key": f"runtime/run_summary:{run}"})
        kc.watch("text", RUNS, {"doc_key": f"runtime/run_text:{run}"})
        await asyncio.wait_for(view.live.wait(), 10)
        view.documents[key]["payload"]["events"] = []  # corrupt the held copy
        await projected(k, h, run, "text.delta", text="z")
        await kc.wait_until(lambda c: any(e.get("code") == "rate_limited" for e in c.stats.errors))
        pool = await asyncpg.create_pool(with_user(database_url, "oa_khala_reader"), min_size=1, max_size=1)
        want = await stored(pool, key, user, org)
        await pool.close()
        await kc.wait_until(lambda _c: view.documents[key]["doc_version"] == want["doc_version"], timeout=15)
        assert view.documents[key]["payload"] == want["payload"] and view.fetched == 1
        assert kc.stats.fetches_sent == 2, "the refused fetch, then the one answered"
