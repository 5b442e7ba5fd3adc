"""How the SSE endpoints describe themselves in OpenAPI, so fuzzers can check every event.

Before OpenAPI 3.2 the `schema` of a `text/event-stream` response describes ONE event
(`{event, data, id, retry}`), not the whole body; saying `{"type": "string"}` made every
event a schema violation. Naming `EventStream` as the route's response class also keeps
FastAPI from advertising a JSON body for a 200 that never has one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from oa.exceptions import InvalidRequest
from oa.runtime.domain.journal import Event

SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event: `id` is the seq, `event` the event type (`end` once the "
    "stream is finished), `data` the event as JSON.",
    "required": ["event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "minLength": 1},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer", "minimum": 0},
    },
}

STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def sse_ok(description: str) -> dict[str, Any]:
    """The `200` entry of an SSE route's `responses`."""
    return {"content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}, "description": description}


class EventStream(StreamingResponse):
    """`text/event-stream`, set per instance: a class-level media type would make FastAPI
    document the route's JSON error responses as event streams too."""

    def __init__(
        self, content: AsyncIterable[bytes], status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(content, status_code, headers, media_type="text/event-stream")


def resume_cursor(cursor: int | None, last_event_id: str | None) -> int:
    """Where a stream resumes: `?cursor=` or `Last-Event-ID` (both and different is a 400)."""
    header_cursor: int | None = None
    if last_event_id is not None:
        if not re.fullmatch(r"[0-9]{1,18}", last_event_id):
            raise InvalidRequest(
                "Last-Event-ID must be a seq (a non-negative integer)", {"header": "Last-Event-ID"}
            )
        header_cursor = int(last_event_id)
    if cursor is not None and header_cursor is not None and cursor != header_cursor:
        raise InvalidRequest(
            f"Last-Event-ID ({header_cursor}) and ?cursor= ({cursor}) disagree; send one of them",
            {"cursor": cursor, "last_event_id": header_cursor},
        )
    return cursor if cursor is not None else (header_cursor or 0)


async def sse_body(
    events: AsyncIterator[Event | None], encode: Callable[[Event], dict[str, Any]], *, end_event: bool
) -> AsyncIterator[bytes]:
    """Frame journal events as SSE (`id` = seq); `None` from `events` is a keep-alive tick."""
    yield b"retry: 1000\n\n"
    async for ev in events:
        if ev is None:
            yield b": keepalive\n\n"
            continue
        data = orjson.dumps(encode(ev))
        yield b"id: %d\nevent: %s\ndata: %s\n\n" % (ev.seq, ev.event_type.encode(), data)
    if end_event:
        yield b"event: end\ndata: {}\n\n"
