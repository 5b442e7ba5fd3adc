"""Request and response bodies of `/internal/v1`, which also make the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from oa.http.strict import NoNul  # identifiers are stored in Postgres text columns

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"

RunId = Annotated[str, Field(pattern=ID_PATTERN, description="1-128 of A-Z a-z 0-9 _ . : -")]
Key = Annotated[StrictStr, Field(min_length=1, max_length=200), NoNul]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: Literal[
        "unauthorized",
        "forbidden",
        "invalid_request",
        "not_found",
        "conflict",
        "stale_cursor",
        "internal_error",
    ]
    message: str
    details: dict[str, Any]


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class AppendEvent(Strict):
    event_type: Annotated[StrictStr, Field(pattern=EVENT_TYPE_PATTERN, max_length=64)]
    payload: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Key | None = None
    expected_previous_seq: Annotated[StrictInt, Field(ge=0, le=2**62)] | None = None


class AppendBatch(Strict):
    events: Annotated[list[AppendEvent], Field(min_length=1, max_length=1000)]


class EventOut(BaseModel):
    run_id: str
    seq: int
    event_type: str
    payload: dict[str, Any]
    payload_hash: str
    prev_hash: str | None
    hash: str
    position: int
    idempotency_key: str | None
    principal: str
    recorded_at: str


class AppendResult(BaseModel):
    run_id: str
    result: Literal["appended", "replayed", "noop"]
    idempotentReplay: bool
    event: EventOut | None
    status: str
    last_seq: int


class BatchResult(BaseModel):
    run_id: str
    results: list[AppendResult]
    status: str
    last_seq: int


class EventPage(BaseModel):
    run_id: str
    events: list[EventOut]
    next_after_seq: int
    last_seq: int
    status: str


class Frame(Strict):
    thread_id: Annotated[StrictStr, Field(min_length=1, max_length=200), NoNul]
    frame_id: Annotated[StrictStr, Field(min_length=1, max_length=200), NoNul]
    type: Annotated[StrictStr, Field(min_length=1, max_length=64), NoNul]
    payload: dict[str, Any] = Field(default_factory=dict)


class FrameOut(BaseModel):
    run_id: str
    frame_id: str
    thread_id: str
    type: str
    payload: dict[str, Any]
    payload_hash: str
    received_at: str


class FrameResult(BaseModel):
    accepted: bool
    idempotentReplay: bool
    frame: FrameOut


class CancelRequest(Strict):
    reason: Annotated[StrictStr, Field(max_length=500)] | None = None


class CancelResult(BaseModel):
    run_id: str
    status: str
    result: Literal["appended", "noop"]
    event: EventOut | None
    last_seq: int


class Snapshot(BaseModel):
    run_id: str
    owner: str
    status: str
    last_seq: int
    last_hash: str | None
    frame_count: int
    created_at: str
    updated_at: str
