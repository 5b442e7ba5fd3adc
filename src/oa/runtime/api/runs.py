"""`/internal/v1/runs/...`: events, batches, frames, cancel, snapshot, the SSE stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from starlette.responses import Response

from oa.http.strict import StrictJSONRoute
from oa.runtime.api.auth import caller, principal
from oa.runtime.api.encode import batch_json, event_json, json_response, outcome_json, plan_status
from oa.runtime.api.errors import error_responses
from oa.runtime.api.models import (
    ID_PATTERN,
    AppendBatch,
    AppendEvent,
    AppendResult,
    BatchResult,
    CancelRequest,
    CancelResult,
    EventPage,
    Frame,
    FrameResult,
    Snapshot,
)
from oa.runtime.api.sse import STREAM_HEADERS, EventStream, resume_cursor, sse_body, sse_ok
from oa.runtime.domain.journal import AppendRequest
from oa.runtime.service.runs import RunService
from oa.runtime.signing import Caller

router = APIRouter(prefix="/internal/v1/runs", tags=["runs"], route_class=StrictJSONRoute)
RunIdPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=128)]
Principal = Annotated[str, Depends(principal)]
Signed = Annotated[Caller, Depends(caller)]
WRITE_ERRORS = error_responses(400, 401, 403, 409, 413)
READ_ERRORS = error_responses(400, 401, 403, 404)


async def service(request: Request) -> RunService:
    svc: RunService = request.app.state.runs
    return svc


Runs = Annotated[RunService, Depends(service)]


def _request(body: AppendEvent) -> AppendRequest:
    return AppendRequest(body.event_type, body.payload, body.idempotency_key, body.expected_previous_seq)


@router.post(
    "/{run_id}/events",
    response_model=AppendResult,
    status_code=201,
    responses={200: {"model": AppendResult, "description": "idempotent replay or no-op"}, **WRITE_ERRORS},
    summary="Append one event (creates the run on first write)",
)
async def append_event(run_id: RunIdPath, body: AppendEvent, who: Signed, runs: Runs) -> Response:
    plan = await runs.append(who.principal, run_id, [_request(body)], who.org)
    return json_response(outcome_json(run_id, plan.outcomes[0]), plan_status(plan))


@router.post(
    "/{run_id}/events/batch",
    response_model=BatchResult,
    status_code=201,
    responses={
        200: {"model": BatchResult, "description": "nothing new: all replays or no-ops"},
        **WRITE_ERRORS,
    },
    summary="Append many events in one transaction, all or none",
)
async def append_batch(run_id: RunIdPath, body: AppendBatch, who: Signed, runs: Runs) -> Response:
    plan = await runs.append(who.principal, run_id, [_request(e) for e in body.events], who.org)
    return json_response(batch_json(run_id, plan), plan_status(plan))


@router.get(
    "/{run_id}/events", response_model=EventPage, responses=READ_ERRORS, summary="Page a run's events"
)
async def list_events(
    run_id: RunIdPath,
    who: Principal,
    runs: Runs,
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    head, events = await runs.events(who, run_id, after_seq, limit)
    return json_response(
        {
            "run_id": run_id,
            "events": [event_json(e) for e in events],
            "next_after_seq": events[-1].seq if events else after_seq,
            "last_seq": head.last_seq,
            "status": head.status,
        }
    )


@router.post(
    "/{run_id}/frames",
    response_model=FrameResult,
    status_code=202,
    responses={200: {"model": FrameResult, "description": "identical repeat"}, **WRITE_ERRORS},
    summary="Send a frame to a run (idempotent by frame_id)",
)
async def post_frame(run_id: RunIdPath, body: Frame, who: Principal, runs: Runs) -> Response:
    result = await runs.post_frame(who, run_id, body.thread_id, body.frame_id, body.type, body.payload)
    return json_response(
        {"accepted": True, "idempotentReplay": result.replay, "frame": result.frame},
        200 if result.replay else 202,
    )


@router.post(
    "/{run_id}/cancel",
    response_model=CancelResult,
    status_code=202,
    responses={
        200: {"model": CancelResult, "description": "already canceling or finished"},
        **WRITE_ERRORS,
        **error_responses(404),
    },
    summary="Request cancellation (idempotent)",
)
async def cancel(
    run_id: RunIdPath, who: Principal, runs: Runs, body: CancelRequest | None = None
) -> Response:
    plan = await runs.cancel(who, run_id, body.reason if body else None)
    o = plan.outcomes[0]
    return json_response(
        {
            "run_id": run_id,
            "status": o.status,
            "result": "appended" if o.result == "appended" else "noop",
            "event": event_json(o.event) if o.result == "appended" and o.event else None,
            "last_seq": o.last_seq,
        },
        202 if plan.changed else 200,
    )


@router.get(
    "/{run_id}/snapshot", response_model=Snapshot, responses=READ_ERRORS, summary="The run's current state"
)
async def snapshot(run_id: RunIdPath, who: Principal, runs: Runs) -> Response:
    return json_response(await runs.snapshot(who, run_id))


@router.get(
    "/{run_id}/stream",
    response_class=EventStream,
    responses={
        200: sse_ok("SSE, id = seq; ends with `event: end` once the run is finished"),
        **READ_ERRORS,
        **error_responses(410),
    },
    summary="Follow a run's events (SSE); resume with Last-Event-ID or ?cursor=",
)
async def stream(
    request: Request,
    run_id: RunIdPath,
    who: Principal,
    runs: Runs,
    cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> Response:
    start = resume_cursor(cursor, last_event_id)
    head = await runs.head(who, run_id)
    runs.check_cursor(head, start)
    keepalive: float = request.app.state.runtime_settings.stream_keepalive_s
    body = sse_body(runs.follow(run_id, start, keepalive), event_json, end_event=True)
    return EventStream(body, headers=STREAM_HEADERS)
