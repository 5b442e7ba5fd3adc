"""`GET runs/{id}/stream` (SSE) over the real socket: replay, live, resume, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from oa.canonical import event_hash

Signer = Callable[[str], dict[str, str]]
WINDOW = 50  # the test server's stream_replay_window


class SSE:
    """Reads server-sent events off a streaming httpx response, one frame at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.retry: int | None = None

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame that is an event (comments and `retry:` are consumed on the way)."""
        async with asyncio.timeout(timeout):
            frame: dict[str, Any] = {}
            async for line in self._lines:
                if line == "":
                    if "event" in frame or "data" in frame:
                        if "data" in frame:
                            frame["json"] = orjson.loads(frame["data"])
                        return frame
                    frame = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "retry":
                    self.retry = int(value)
                else:
                    frame[name] = value
            raise EOFError("the stream ended")

    async def until_end(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        while True:
            frame = await self.next(timeout)
            if frame.get("event") == "end":
                return frames
            frames.append(frame)


@asynccontextmanager
async def stream(
    client: httpx.AsyncClient, run_id: str, headers: dict[str, str] | None = None, **params: Any
) -> AsyncIterator[SSE]:
    async with client.stream(
        "GET", f"/internal/v1/runs/{run_id}/stream", params=params, headers=headers or {}
    ) as r:
        assert r.status_code == 200, (await r.aread()).decode()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        yield SSE(r)


async def append(client: httpx.AsyncClient, run_id: str, *events: dict[str, Any]) -> int:
    r = await client.post(f"/internal/v1/runs/{run_id}/events/batch", json={"events": list(events)})
    assert r.status_code == 201, r.text
    last: int = r.json()["last_seq"]
    return last


def texts(n: int, prefix: str = "t") -> list[dict[str, Any]]:
    return [{"event_type": "text.delta", "payload": {"text": f"{prefix}{i}"}} for i in range(n)]


FINISH = {"event_type": "run.finished", "payload": {"status": "succeeded"}}


async def finished_run(client: httpx.AsyncClient, run_id: str, n: int = 3) -> int:
    return await append(client, run_id, {"event_type": "run.started"}, *texts(n), FINISH)


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [int(f["id"]) for f in frames]


async def test_replay_from_zero_then_end(client: httpx.AsyncClient, run_id: str) -> None:
    last = await finished_run(client, run_id, 3)
    async with stream(client, run_id) as sse:
        frames = await sse.until_end()
        assert sse.retry == 1000
    assert seqs(frames) == list(range(1, last + 1)) == [1, 2, 3, 4, 5]
    assert [f["event"] for f in frames] == [
        "run.started",
        "text.delta",
        "text.delta",
        "text.delta",
        "run.finished",
    ]
    prev = None
    for f in frames:
        ev = f["json"]
        assert ev["seq"] == int(f["id"]) and ev["event_type"] == f["event"] and ev["run_id"] == run_id
        assert ev["prev_hash"] == prev
        assert ev["hash"] == event_hash(run_id, ev["seq"], ev["event_type"], ev["payload_hash"], prev)
        prev = ev["hash"]
    assert frames[2]["json"]["payload"] == {"text": "t1"}


async def test_live_events_arrive_after_subscribing(client: httpx.AsyncClient, run_id: str) -> None:
    await append(client, run_id, {"event_type": "run.started"})
    async with stream(client, run_id, cursor=0) as sse:
        assert seqs([await sse.next()]) == [1]

        async def producer() -> None:
            for i in range(3):
                await append(client, run_id, *texts(2, prefix=f"live{i}-"))
                await asyncio.sleep(0.05)
            await append(client, run_id, FINISH)

        task = asyncio.create_task(producer())
        frames = await sse.until_end(timeout=10)
        await task
    assert seqs(frames) == list(range(2, 9))
    assert frames[0]["json"]["payload"] == {"text": "live0-0"}
    assert frames[-1]["event"] == "run.finished"


async def test_live_stream_wakes_promptly(client: httpx.AsyncClient, run_id: str) -> None:
    """A live subscriber hears of a commit without waiting for the keep-alive period (15 s)."""
    await append(client, run_id, {"event_type": "run.started"})
    async with stream(client, run_id, cursor=1) as sse:
        await asyncio.sleep(0.2)  # let the server reach its wait
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await append(client, run_id, *texts(1))
        frame = await sse.next(timeout=5)
        assert int(frame["id"]) == 2
        assert loop.time() - sent < 2.0


async def test_resume_from_last_event_id(client: httpx.AsyncClient, run_id: str) -> None:
    last = await finished_run(client, run_id, 4)
    async with stream(client, run_id, headers={"Last-Event-ID": "2"}) as sse:
        assert seqs(await sse.until_end()) == list(range(3, last + 1))


async def test_resume_from_cursor_param(client: httpx.AsyncClient, run_id: str) -> None:
    last = await finished_run(client, run_id, 4)
    async with stream(client, run_id, cursor=4) as sse:
        assert seqs(await sse.until_end()) == list(range(5, last + 1))
    # Both, agreeing, is fine.
    async with stream(client, run_id, headers={"Last-Event-ID": "4"}, cursor=4) as sse:
        assert seqs(await sse.until_end()) == list(range(5, last + 1))
    # At the last seq: nothing to replay, the run is finished, so just the end.
    async with stream(client, run_id, cursor=last) as sse:
        assert await sse.until_end() == []


async def test_cursor_and_last_event_id_disagree(client: httpx.AsyncClient, run_id: str) -> None:
    await finished_run(client, run_id)
    r = await client.get(
        f"/internal/v1/runs/{run_id}/stream", params={"cursor": 1}, headers={"Last-Event-ID": "2"}
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_request"
    assert "Last-Event-ID" in err["message"] and "cursor" in err["message"] and "send one" in err["message"]
    assert err["details"] == {"cursor": 1, "last_event_id": 2}


@pytest.mark.parametrize(
    "value",
    ["abc", "-1", "1.5", "", "²", "١٢"],
    ids=["word", "negative", "float", "empty", "superscript", "arabic-digits"],
)
async def test_last_event_id_must_be_a_seq(client: httpx.AsyncClient, run_id: str, value: str) -> None:
    await finished_run(client, run_id)
    # Headers arrive as latin-1: "²" is one byte and str.isdigit() says yes, int() says no.
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raw = value.encode("utf-8")
    r = await client.get(f"/internal/v1/runs/{run_id}/stream", headers={b"Last-Event-ID": raw})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert "Last-Event-ID" in r.json()["error"]["message"]


async def test_cursor_beyond_last_seq(client: httpx.AsyncClient, run_id: str) -> None:
    last = await finished_run(client, run_id)
    for kind, kwargs in (
        ("param", {"params": {"cursor": last + 1}}),
        ("header", {"headers": {"Last-Event-ID": str(last + 5)}}),
    ):
        r = await client.get(f"/internal/v1/runs/{run_id}/stream", **kwargs)
        assert r.status_code == 400, kind
        err = r.json()["error"]
        assert err["code"] == "invalid_request" and "beyond the run's last seq" in err["message"]
        assert err["details"]["last_seq"] == last


async def test_negative_cursor(client: httpx.AsyncClient, run_id: str) -> None:
    await finished_run(client, run_id)
    r = await client.get(f"/internal/v1/runs/{run_id}/stream", params={"cursor": -1})
    assert r.status_code == 400 and "cursor" in r.json()["error"]["message"]


async def test_cursor_below_retention_floor(client: httpx.AsyncClient, run_id: str) -> None:
    last = await append(client, run_id, {"event_type": "run.started"}, *texts(WINDOW + 10))
    floor = last - WINDOW
    assert floor == 11
    for kwargs in ({"params": {"cursor": floor - 1}}, {"headers": {"Last-Event-ID": "0"}}, {}):
        r = await client.get(f"/internal/v1/runs/{run_id}/stream", **kwargs)
        assert r.status_code == 410, (kwargs, r.text)
        err = r.json()["error"]
        assert err["code"] == "stale_cursor"
        assert err["details"]["retention_floor"] == floor and err["details"]["last_seq"] == last
        assert f"/internal/v1/runs/{run_id}/events" in err["message"], "the message must say how to catch up"
    # Exactly at the floor is still served, live; finishing ends it.
    async with stream(client, run_id, cursor=floor) as sse:
        first = await sse.next()
        assert int(first["id"]) == floor + 1
        await append(client, run_id, FINISH)
        rest = await sse.until_end()
    assert seqs(rest) == list(range(floor + 2, last + 2))


async def test_unknown_run(client: httpx.AsyncClient, run_id: str) -> None:
    r = await client.get(f"/internal/v1/runs/{run_id}/stream")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found" and run_id in r.json()["error"]["message"]


async def test_unsigned_and_other_principal(
    client: httpx.AsyncClient, runtime_url: str, sign: Signer, run_id: str
) -> None:
    await finished_run(client, run_id)
    async with httpx.AsyncClient(base_url=runtime_url) as anon:
        r = await anon.get(f"/internal/v1/runs/{run_id}/stream")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert "X-OA-RUNTIME-SIGNATURE" in r.json()["error"]["message"]
        r = await anon.get(f"/internal/v1/runs/{run_id}/stream", headers=sign("user:mallory"))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
