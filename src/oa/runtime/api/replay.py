"""`GET /internal/v1/runs/{id}/receipt` and `GET .../replay` (REPLAY.jsonl).

The receipt says what happened (trajectory hash, counts, seq range, every tool call with
the policy decisions behind it); the replay file lets anyone re-check that offline with
`oa replay verify`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from oa.http.strict import StrictJSONRoute
from oa.runtime.api.auth import principal
from oa.runtime.api.encode import json_response
from oa.runtime.api.errors import error_responses
from oa.runtime.service.replay import ReplayService

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
router = APIRouter(prefix="/internal/v1/runs", tags=["replay"], route_class=StrictJSONRoute)
RunIdPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=128)]
Principal = Annotated[str, Depends(principal)]
READ_ERRORS = error_responses(400, 401, 403, 404)


class ToolCallDecision(BaseModel):
    seq: int
    decision_id: str | None
    decision: str
    reason_code: str | None
    message: str | None


class ToolCallSummary(BaseModel):
    tool_call_id: str
    tool: str | None
    decisions: list[ToolCallDecision]
    result: str | None
    called_at_seq: int | None = None


class Receipt(BaseModel):
    format: str
    run_id: str
    owner: str
    status: str
    event_count: int
    first_seq: int | None
    last_seq: int
    last_hash: str | None
    trajectory_hash: str
    counts_by_type: dict[str, int]
    tool_calls: list[ToolCallSummary]
    decisions: dict[str, int]
    policy_bundle_ids: list[str]
    policy_bundle_id: str
    hash_rule: str


async def service(request: Request) -> ReplayService:
    svc: ReplayService = request.app.state.replay
    return svc


Replay = Annotated[ReplayService, Depends(service)]


@router.get(
    "/{run_id}/receipt",
    response_model=Receipt,
    responses=READ_ERRORS,
    summary="The run's receipt: trajectory hash, counts, seq range, tool calls and their decisions",
)
async def receipt(run_id: RunIdPath, who: Principal, replay: Replay) -> Response:
    body: dict[str, Any] = await replay.receipt(who, run_id)
    return json_response(body)


@router.get(
    "/{run_id}/replay",
    responses={
        200: {
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            "description": "REPLAY.jsonl: header, session.start, one line per event, session.end",
        },
        **READ_ERRORS,
    },
    summary="Export the run as REPLAY.jsonl (verify offline with `oa replay verify`)",
)
async def replay_file(run_id: RunIdPath, who: Principal, replay: Replay) -> Response:
    lines = await replay.export(who, run_id)
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.REPLAY.jsonl"'},
    )
