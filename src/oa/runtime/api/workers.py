"""`/internal/v1/codex/workers`: create or reattach, list, snapshot, requests, events,
the SSE stream, stop. Same envelope, signatures and cursor rules as the runs API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.responses import Response

from oa.http.strict import StrictJSONRoute
from oa.runtime.api.auth import caller, principal
from oa.runtime.api.encode import event_json as encode_event
from oa.runtime.api.encode import json_response
from oa.runtime.api.errors import error_responses
from oa.runtime.api.sse import STREAM_HEADERS, EventStream, resume_cursor, sse_body, sse_ok
from oa.runtime.domain.journal import AppendRequest, Event, Outcome, Plan
from oa.runtime.service.workers import WorkerService
from oa.runtime.signing import Caller

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"
NO_NUL = r"^[^\x00]*$"

router = APIRouter(prefix="/internal/v1/codex/workers", tags=["codex workers"], route_class=StrictJSONRoute)
WorkerIdPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=128)]
Principal = Annotated[str, Depends(principal)]
Signed = Annotated[Caller, Depends(caller)]
Text = Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=NO_NUL)]
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 413)
READ_ERRORS = error_responses(400, 401, 403, 404)
Status = Literal["starting", "running", "stopping", "stopped", "failed"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateWorker(Strict):
    worker_id: Annotated[StrictStr, Field(pattern=ID_PATTERN)] | None = Field(
        None, description="Reattach to this worker if it exists; a new id is made when absent."
    )
    status: Literal["starting", "running"] = "running"
    workspace_ref: Text | None = None
    adapter: Text | None = None
    run_id: Annotated[StrictStr, Field(pattern=ID_PATTERN)] | None = Field(
        None, description="The run this worker executes; told `run.executor_lost` if the worker vanishes."
    )
    metadata: dict[str, Any] | None = None
    org_id: Text | None = Field(
        None, description="Must equal the org of the caller signature (which sets it when absent)."
    )


class WorkerRequest(Strict):
    request_id: Text
    method: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=NO_NUL)]
    params: dict[str, Any] = Field(default_factory=dict)


class WorkerEventIn(Strict):
    event_type: Annotated[StrictStr, Field(pattern=EVENT_TYPE_PATTERN, max_length=64)] = Field(
        description="Must start with `worker.`"
    )
    payload: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: Text | None = None
    expected_previous_seq: Annotated[StrictInt, Field(ge=0, le=2**62)] | None = None


class StopWorker(Strict):
    reason: Annotated[StrictStr, Field(max_length=500, pattern=NO_NUL)] | None = None


class WorkerSnapshot(BaseModel):
    worker_id: str
    owner: str
    status: Status
    workspace_ref: str | None
    adapter: str | None
    run_id: str | None
    metadata: dict[str, Any]
    last_seq: int
    last_hash: str | None
    last_heartbeat_at: str | None
    heartbeat_state: Literal["fresh", "stale", "missing", "stopped", "failed"]
    heartbeat_age_ms: int | None
    heartbeat_stale_after_ms: int
    created_at: str
    updated_at: str


class WorkerEventOut(BaseModel):
    worker_id: str
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


class WorkerAppendResult(BaseModel):
    worker_id: str
    result: Literal["appended", "replayed", "noop"]
    idempotentReplay: StrictBool
    event: WorkerEventOut | None
    status: str
    last_seq: int


class AttachResult(BaseModel):
    created: bool
    reattached: bool
    result: Literal["appended", "replayed", "noop"]
    event: WorkerEventOut | None
    worker: WorkerSnapshot


class StopResult(BaseModel):
    worker_id: str
    result: Literal["appended", "noop"]
    events: list[WorkerEventOut]
    status: str
    last_seq: int


class WorkerList(BaseModel):
    workers: list[WorkerSnapshot]


class WorkerEventPage(BaseModel):
    worker_id: str
    events: list[WorkerEventOut]
    next_after_seq: int
    last_seq: int
    status: str


async def service(request: Request) -> WorkerService:
    svc: WorkerService = request.app.state.workers
    return svc


Workers = Annotated[WorkerService, Depends(service)]


def event_json(ev: Event) -> dict[str, Any]:
    """A worker event on the wire: the run event shape, keyed by `worker_id`."""
    return encode_event(ev, id_field="worker_id")


def outcome_json(worker_id: str, o: Outcome) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "result": o.result,
        "idempotentReplay": o.result == "replayed",
        "event": event_json(o.event) if o.event is not None else None,
        "status": o.status,
        "last_seq": o.last_seq,
    }


def _status(plan: Plan) -> int:
    return 201 if plan.changed else 200


@router.post(
    "",
    response_model=AttachResult,
    status_code=201,
    responses={
        200: {"model": AttachResult, "description": "reattached to an existing worker"},
        **WRITE_ERRORS,
    },
    summary="Create a worker, or reattach to an existing one (appends worker.started)",
)
async def create_or_attach(body: CreateWorker, who: Signed, workers: Workers) -> Response:
    att = await workers.create_or_attach(
        who.principal,
        body.worker_id,
        status=body.status,
        workspace_ref=body.workspace_ref,
        adapter=body.adapter,
        run_id=body.run_id,
        metadata=body.metadata,
        org_id=body.org_id,
        org=who.org,
    )
    o = att.plan.outcomes[0]
    return json_response(
        {
            "created": att.created,
            "reattached": not att.created,
            "result": o.result,
            "event": event_json(o.event) if o.event is not None else None,
            "worker": att.snapshot,
        },
        201 if att.created else 200,
    )


@router.get("", response_model=WorkerList, responses=READ_ERRORS, summary="List your workers")
async def list_workers(
    who: Principal,
    workers: Workers,
    status: Status | None = None,
    workspace_ref: Annotated[str | None, Query(min_length=1, max_length=200, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    return json_response({"workers": await workers.list_workers(who, status, workspace_ref, limit)})


@router.get(
    "/{worker_id}/snapshot",
    response_model=WorkerSnapshot,
    responses=READ_ERRORS,
    summary="The worker's state, with its heartbeat state computed now",
)
async def snapshot(worker_id: WorkerIdPath, who: Principal, workers: Workers) -> Response:
    return json_response(await workers.snapshot(who, worker_id))


@router.post(
    "/{worker_id}/requests",
    response_model=WorkerAppendResult,
    status_code=201,
    responses={200: {"model": WorkerAppendResult, "description": "same request_id: replay"}, **WRITE_ERRORS},
    summary="Hand the worker a request (idempotent by request_id)",
)
async def post_request(
    worker_id: WorkerIdPath, body: WorkerRequest, who: Principal, workers: Workers
) -> Response:
    plan = await workers.request(who, worker_id, body.request_id, body.method, body.params)
    return json_response(outcome_json(worker_id, plan.outcomes[0]), _status(plan))


@router.post(
    "/{worker_id}/events",
    response_model=WorkerAppendResult,
    status_code=201,
    responses={200: {"model": WorkerAppendResult, "description": "replay or no-op"}, **WRITE_ERRORS},
    summary="Append a worker.* event (heartbeats, responses, errors, lifecycle)",
)
async def append_event(
    worker_id: WorkerIdPath, body: WorkerEventIn, who: Signed, workers: Workers
) -> Response:
    req = AppendRequest(body.event_type, body.payload, body.idempotency_key, body.expected_previous_seq)
    plan = await workers.append(who.principal, worker_id, req, who.org)
    return json_response(outcome_json(worker_id, plan.outcomes[0]), _status(plan))


@router.get(
    "/{worker_id}/events",
    response_model=WorkerEventPage,
    responses=READ_ERRORS,
    summary="Page a worker's events",
)
async def list_events(
    worker_id: WorkerIdPath,
    who: Principal,
    workers: Workers,
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    head, events = await workers.events(who, worker_id, after_seq, limit)
    return json_response(
        {
            "worker_id": worker_id,
            "events": [event_json(e) for e in events],
            "next_after_seq": events[-1].seq if events else after_seq,
            "last_seq": head.last_seq,
            "status": head.status,
        }
    )


@router.post(
    "/{worker_id}/stop",
    response_model=StopResult,
    status_code=202,
    responses={200: {"model": StopResult, "description": "already stopped"}, **WRITE_ERRORS},
    summary="Stop the worker (idempotent; a starting worker goes through stopping)",
)
async def stop(
    worker_id: WorkerIdPath, who: Principal, workers: Workers, body: StopWorker | None = None
) -> Response:
    plan = await workers.stop(who, worker_id, body.reason if body else None)
    return json_response(
        {
            "worker_id": worker_id,
            "result": "appended" if plan.changed else "noop",
            "events": [event_json(e) for e in plan.new_events],
            "status": plan.head.status,
            "last_seq": plan.head.last_seq,
        },
        202 if plan.changed else 200,
    )


@router.get(
    "/{worker_id}/stream",
    response_class=EventStream,
    responses={
        200: sse_ok("SSE, id = seq"),
        **READ_ERRORS,
        **error_responses(410),
    },
    summary="Follow a worker's events (SSE); resume with Last-Event-ID or ?cursor=",
)
async def stream(
    request: Request,
    worker_id: WorkerIdPath,
    who: Principal,
    workers: Workers,
    cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> Response:
    start = resume_cursor(cursor, last_event_id)
    head = await workers.head(who, worker_id)
    workers.check_cursor(head, start)
    keepalive: float = request.app.state.runtime_settings.stream_keepalive_s
    body = sse_body(workers.follow(worker_id, start, keepalive), event_json, end_event=False)
    return EventStream(body, headers=STREAM_HEADERS)
