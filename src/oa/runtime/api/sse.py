"""How the SSE endpoints describe themselves in OpenAPI, so fuzzers can check every event.

Before OpenAPI 3.2 the `schema` of a `text/event-stream` response describes ONE event
(`{event, data, id, retry}`), not the whole body; saying `{"type": "string"}` made every
event a schema violation. Naming `EventStream` as the route's response class also keeps
FastAPI from advertising a JSON body for a 200 that never has one.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from typing import Any

from starlette.responses import StreamingResponse

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
