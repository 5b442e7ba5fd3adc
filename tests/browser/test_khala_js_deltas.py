"""khala.js's deltas in Chromium: canonical JSON hashes equal Python's, patches apply and are
checked by hash, and both fall-backs to the whole document (a hash mismatch, a missing base)
ask with `fetch` and take the `documents` reply without moving a cursor.

The client talks to a small real WebSocket server written here, which plays the server's
side of the wire (COMMON wire decisions: Update.patch/base_version, fetch -> documents) frame
by frame, so each case is forced exactly. The same JS files are served as Khala serves them
(/client/khala.js, /client/live.js, /client/vendor/...).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from oa.canonical import canonical_json, payload_hash
from oa.khala.sync.web import WEB_DIR
from tests.support.servers import serve_in_loop

TOPIC = "runtime.run_summaries"
KEY = "runtime/run_timeline:r1"


@dataclass
class Wire:
    """The server's side of each socket: frames the client sent, frames to send it."""

    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    outbox: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    connects: int = 0
    closed: bool = False

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.inbox.get()
                if frame.get("type") == kind:
                    return frame

    async def nothing(self, kind: str, wait: float = 0.4) -> None:
        await asyncio.sleep(wait)
        seen = []
        while not self.inbox.empty():
            seen.append(self.inbox.get_nowait())
        assert not [f for f in seen if f.get("type") == kind], seen

    async def send(self, frame: dict[str, Any]) -> None:
        await self.outbox.put(frame)

    async def hang_up(self) -> None:
        await self.outbox.put(None)


def scripted_app(wire: Wire) -> FastAPI:
    app = FastAPI()

    @app.get("/blank")
    async def blank() -> HTMLResponse:
        return HTMLResponse("<!doctype html><meta charset=utf-8><title>khala.js</title>")

    @app.websocket("/sync/v1/ws")
    async def ws(sock: WebSocket) -> None:
        if wire.closed:
            await sock.close()
            return
        await sock.accept()
        wire.connects += 1

        async def read() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    frame = orjson.loads(await sock.receive_text())
                    if frame.get("type") == "auth":
                        await sock.send_text(
                            orjson.dumps({"type": "ready", "user_id": "u1", "expires_at": 0}).decode()
                        )
                    await wire.inbox.put(frame)

        reader = asyncio.create_task(read())
        try:
            while True:
                out = await wire.outbox.get()
                if out is None:
                    break
                await sock.send_text(orjson.dumps(out).decode())
        finally:
            reader.cancel()
            with contextlib.suppress(Exception):
                await sock.close()

    app.mount("/client", StaticFiles(directory=WEB_DIR), name="client")
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Wire]]:
    wire = Wire()
    async with serve_in_loop(scripted_app(wire)) as url:
        try:
            yield url, wire
        finally:
            wire.closed = True
            await wire.hang_up()  # the server stops only once its sockets are closed


def timeline(n: int, text: str = "") -> dict[str, Any]:
    return {
        "run_id": "r1",
        "owner": "u1",
        "events": [
            {"seq": i, "type": "text.delta", "payload": {"text": f"{text}{i}"}} for i in range(1, n + 1)
        ],
        "last_seq": n,
    }


def whole(version: int, doc: dict[str, Any], watermark: int) -> dict[str, Any]:
    return {
        "topic": TOPIC, "watermark": watermark, "doc_key": KEY, "doc_version": version,
        "payload": doc, "payload_hash": payload_hash(doc), "op": "upsert",
    }  # fmt: skip


def patched(
    version: int, base: int, old: dict[str, Any], new: dict[str, Any], watermark: int, *, hash_of: Any = None
) -> dict[str, Any]:
    # RFC 6902 as the server writes it for a growing timeline: append the new events.
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/events/-", "value": e} for e in new["events"][len(old["events"]) :]
    ]
    ops.append({"op": "replace", "path": "/last_seq", "value": new["last_seq"]})
    return {
        "topic": TOPIC, "watermark": watermark, "doc_key": KEY, "doc_version": version, "base_version": base,
        "payload": None, "patch": ops, "payload_hash": payload_hash(new if hash_of is None else hash_of), "op": "upsert",
    }  # fmt: skip


def batch(updates: list[dict[str, Any]], head: int, sub: str | None = "q1") -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "update_batch", "updates": updates, "replay_complete": True}
    frame["head_watermarks"] = {TOPIC: head}
    if sub:
        frame["sub"] = sub
    return frame


START = """async ([url, topics, watch]) => {
  const { KhalaClient } = await import("/client/khala.js");
  const c = new KhalaClient({ urls: [url], tokenProvider: async () => "t", topics, hydrate: false });
  window.c = c;
  window.changes = [];
  c.start();
  if (watch) {
    window.v = c.watch("q1", "runtime.run_summaries", { stream: "r1" });
    v.onChange((x) => changes.push([x.op, x.doc_key, x.doc_version]));
  }
}"""


HELD = """([k, topicWide]) => {
  const d = topicWide ? window.c.get(k) : window.v.documents.get(k);
  return {
    doc: d ? d.payload : null,
    version: d ? d.doc_version : null,
    watermark: topicWide ? window.c.watermarks["runtime.run_summaries"] : window.v.watermark,
    stats: { ...window.c.stats, errors: window.c.stats.errors.length },
  };
}"""


async def held(page: Any, topic_wide: bool = False) -> dict[str, Any]:
    return dict(await page.evaluate(HELD, [KEY, topic_wide]))


async def until_version(page: Any, version: int, topic_wide: bool = False) -> dict[str, Any]:
    await page.wait_for_function(
        "([k, n, topicWide]) => { const d = topicWide ? window.c.get(k) : window.v.documents.get(k);"
        " return d && d.doc_version === n; }",
        arg=[KEY, version, topic_wide],
        timeout=5000,
    )
    return await held(page, topic_wide)


DOCS: list[Any] = [
    {"b": 1, "a": [1, [2, [3, {"z": None, "y": True}]]], "é": "café", "Z": False},
    {
        "text": "naïve résumé — 日本語 テキスト 🚀 emoji",
        "quote": 'she said "hi"\\n',
        "ctl": "a\tb\nc\u0001\u001f\u007f",
    },
    {"\uffff": 1, "\U0001f600": 2, "\u00e9": 3, "z": 4, "": 5, "a\u0000b": 6},
    {
        "nested": {"deep": [[[]], {}, [{"k": "v"}]]},
        "neg": -42,
        "big": 2**53 - 1,
        "half": 0.5,
        "small": 1.25e-3,
    },
    [{"events": [{"seq": i, "payload": {"text": "ü" * i}} for i in range(5)]}],
    "a string",
    12345,
    None,
    True,
]


async def test_canonical_json_and_hash_equal_python(context: Any, served: tuple[str, Wire]) -> None:
    url, _ = served
    page = await context.new_page()
    await page.goto(url + "/blank")
    got = await page.evaluate(
        """async (docs) => {
          const m = await import("/client/khala.js");
          const out = [];
          for (const d of docs) out.push([m.canonicalJson(d), await m.payloadHash(d)]);
          return out;
        }""",
        DOCS,
    )
    for doc, (text, digest) in zip(DOCS, got, strict=True):
        assert text.encode() == canonical_json(doc), doc
        assert digest == payload_hash(doc), doc


async def test_patches_apply_by_hash_and_both_fallbacks_fetch_whole(
    context: Any, served: tuple[str, Wire]
) -> None:
    url, wire = served
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(url + "/blank")
    await page.evaluate(START, [url, [], True])
    sub = await wire.expect("subscribe")
    assert sub["sub"] == "q1" and sub["scope"] == {"stream": "r1"} and "resume_after" not in sub

    d = {n: timeline(n, "tok") for n in range(1, 13)}
    await wire.send(batch([whole(1, d[1], 10)], 10))
    assert (await until_version(page, 1))["doc"] == d[1]

    # A patch on the base it holds, with the right hash: applied, no fetch.
    await wire.send(batch([patched(2, 1, d[1], d[2], 11)], 11))
    s = await until_version(page, 2)
    assert s["doc"] == d[2] and s["stats"]["patched"] == 1 and s["stats"]["fetches"] == 0
    assert s["watermark"] == 11

    # A hash mismatch: not applied; the whole document is fetched, and moves no cursor.
    await wire.send(batch([patched(3, 2, d[2], d[3], 12, hash_of={"not": "it"})], 12))
    fetch = await wire.expect("fetch")
    assert fetch["topic"] == TOPIC and fetch["doc_keys"] == [KEY] and fetch["sub"] == "q1"
    assert (await held(page))["version"] == 2
    await wire.send({"type": "documents", "topic": TOPIC, "sub": "q1", "request_id": fetch.get("request_id"),
                     "documents": [whole(3, d[3], 12)]})  # fmt: skip
    s = await until_version(page, 3)
    assert s["doc"] == d[3] and s["stats"]["fetched"] == 1 and s["watermark"] == 12

    # A missing base (v4 never came); a second patch on the missing line asks nothing more
    # until the answer, which predates it: then the client asks again and ends on v6.
    await wire.send(batch([patched(5, 4, d[4], d[5], 14)], 14))
    await wire.expect("fetch")
    await wire.send(batch([patched(6, 5, d[5], d[6], 15)], 15))
    await wire.nothing("fetch")
    await wire.send({"type": "documents", "topic": TOPIC, "sub": "q1", "documents": [whole(5, d[5], 14)]})
    again = await wire.expect("fetch")
    assert again["doc_keys"] == [KEY]
    assert (await until_version(page, 5))["doc"] == d[5]
    await wire.send({"type": "documents", "topic": TOPIC, "sub": "q1", "documents": [whole(6, d[6], 15)]})
    s = await until_version(page, 6)
    assert s["doc"] == d[6] and s["watermark"] == 15

    # A stale `documents` answer is dropped (the client holds newer).
    await wire.send(batch([patched(7, 6, d[6], d[7], 16)], 16))
    await until_version(page, 7)
    await wire.send({"type": "documents", "topic": TOPIC, "sub": "q1", "documents": [whole(3, d[3], 12)]})
    await asyncio.sleep(0.3)
    assert (await held(page))["version"] == 7

    # The document leaves while its fetch is out: the late answer must not bring it back.
    await wire.send(batch([patched(9, 8, d[8], d[9], 18)], 18))
    await wire.expect("fetch")
    remove = {**whole(9, d[9], 19), "payload": None, "payload_hash": None, "op": "remove"}
    await wire.send(batch([remove], 19))
    await page.wait_for_function("(k) => !window.v.documents.has(k)", arg=KEY, timeout=5000)
    await wire.send({"type": "documents", "topic": TOPIC, "sub": "q1", "documents": [whole(9, d[9], 18)]})
    await asyncio.sleep(0.3)
    assert (await held(page))["doc"] is None

    # A fetch the dying socket never answered is asked again after the resume (the cursor
    # moved past that update), on the new socket after the subscribe.
    await wire.send(batch([whole(10, d[10], 20)], 20))
    await until_version(page, 10)
    await wire.send(batch([patched(11, 10, d[10], d[11], 21, hash_of=[1])], 21))
    await wire.expect("fetch")
    await wire.hang_up()
    resub = await wire.expect("subscribe", timeout=10)
    assert resub["sub"] == "q1" and resub["resume_after"] == {TOPIC: 21}
    refetch = await wire.expect("fetch")
    assert refetch["doc_keys"] == [KEY] and refetch["sub"] == "q1" and wire.connects == 2
    await wire.send({"type": "documents", "topic": TOPIC, "sub": "q1", "documents": [whole(11, d[11], 21)]})
    assert (await until_version(page, 11))["doc"] == d[11]

    # A fetch the server refused by its rate limit (which says so only by the error): asked
    # again once reconnect_after_ms has passed.
    await wire.send(batch([patched(12, 10, d[10], d[12], 22)], 22))  # base 10: it holds 11
    await wire.expect("fetch")
    await wire.send(
        {"type": "error", "code": "rate_limited", "message": "slow down", "reconnect_after_ms": 200}
    )
    retry = await wire.expect("fetch", timeout=3)
    assert retry["doc_keys"] == [KEY] and retry["sub"] == "q1"
    await wire.send({"type": "documents", "topic": TOPIC, "sub": "q1", "documents": [whole(12, d[12], 22)]})
    assert (await until_version(page, 12))["doc"] == d[12]

    changes = await page.evaluate("window.changes")
    versions = [c[2] for c in changes if c[0] == "upsert"]
    assert versions == sorted(set(versions)), f"a version applied twice or out of order: {changes}"
    assert errors == []


async def test_topic_subscription_patches_and_fetch(context: Any, served: tuple[str, Wire]) -> None:
    """The whole-topic cache takes deltas the same way (fetch without `sub`)."""
    url, wire = served
    page = await context.new_page()
    await page.goto(url + "/blank")
    await page.evaluate(START, [url, [TOPIC], False])
    sub = await wire.expect("subscribe")
    assert sub["topics"] == [TOPIC]
    d = {n: timeline(n) for n in range(1, 4)}
    await wire.send(batch([whole(1, d[1], 5)], 5, sub=None))
    await wire.send(batch([patched(2, 1, d[1], d[2], 6)], 6, sub=None))
    s = await until_version(page, 2, topic_wide=True)
    assert s["doc"] == d[2] and s["stats"]["patched"] == 1
    await wire.send(batch([patched(3, 1, d[1], d[3], 7)], 7, sub=None))  # base 1: it holds 2
    fetch = await wire.expect("fetch")
    assert fetch["doc_keys"] == [KEY] and "sub" not in fetch
    await wire.send({"type": "documents", "topic": TOPIC, "documents": [whole(3, d[3], 7)]})
    s = await until_version(page, 3, topic_wide=True)
    assert s["doc"] == d[3] and s["watermark"] == 7
