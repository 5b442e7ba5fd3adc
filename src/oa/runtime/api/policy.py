"""`POST /internal/v1/policy/evaluate`: allow or deny a tool call (and its spend), recorded.

The answer is also a durable `policy.decision` event on the run (plus
`policy.budget_exhausted` when that is the cause). The same inputs give the same decision
id and replay the first answer, so a retried tool call is never decided twice.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.responses import Response

from oa.exceptions import InvalidRequest
from oa.http.strict import StrictJSONRoute
from oa.runtime.api.auth import principal
from oa.runtime.api.encode import json_response
from oa.runtime.api.errors import error_responses
from oa.runtime.domain.policy import CATALOG_VERSION, POLICY_BUNDLE_ID, REASON_CODES, DecisionInputs
from oa.runtime.domain.spend import MAX_SATS
from oa.runtime.service.spend import SpendService

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
TOOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"

router = APIRouter(prefix="/internal/v1/policy", tags=["policy"], route_class=StrictJSONRoute)
Principal = Annotated[str, Depends(principal)]
Id = Annotated[StrictStr, Field(pattern=ID_PATTERN, max_length=128)]
Sats = Annotated[StrictInt, Field(ge=0, le=MAX_SATS, description="Integer sats (0 = no spend)")]


class Evaluate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: Id
    tool_call_id: Id
    tool: Annotated[StrictStr, Field(pattern=TOOL_PATTERN, max_length=128)]
    amount_sats: Sats = 0
    authorization_id: Id | None = Field(
        None, description="Required when amount_sats > 0: the budget the spend is reserved on."
    )


class Budget(BaseModel):
    authorization_id: str
    max_total_sats: int
    spent_sats: int
    reserved_sats: int
    requested_sats: int
    max_per_call_sats: int | None = None
    max_per_day_sats: int | None = None


class DecisionOut(BaseModel):
    decision_id: str
    decision: Literal["allow", "deny"]
    reason_code: str
    reason: str
    message: str
    run_id: str
    tool_call_id: str
    tool: str
    amount_sats: int
    authorization_id: str | None
    reservation_id: str | None
    budget: Budget | None
    policy_bundle_id: str
    catalog_version: str
    idempotentReplay: bool


class Catalog(BaseModel):
    catalog_version: str
    policy_bundle_id: str
    reason_codes: dict[str, str]


async def service(request: Request) -> SpendService:
    svc: SpendService = request.app.state.spend
    return svc


Spend = Annotated[SpendService, Depends(service)]


def validate_inputs(body: Evaluate) -> DecisionInputs:
    if body.amount_sats > 0 and body.authorization_id is None:
        raise InvalidRequest(
            "amount_sats > 0 needs authorization_id: name the spend authorization to reserve on",
            {"field": "authorization_id"},
        )
    return DecisionInputs(body.run_id, body.tool_call_id, body.tool, body.amount_sats, body.authorization_id)


@router.post(
    "/evaluate",
    response_model=DecisionOut,
    status_code=201,
    responses={
        200: {"model": DecisionOut, "description": "the same inputs were decided before: replay"},
        **error_responses(400, 401, 403, 404, 409, 413),
    },
    summary="Decide a tool call (reserving its spend when allowed); recorded on the run",
)
async def evaluate(body: Evaluate, who: Principal, spend: Spend) -> Response:
    decision: dict[str, Any] = await spend.decide(who, validate_inputs(body))
    decision.pop("reservation", None)
    return json_response(decision, 200 if decision["idempotentReplay"] else 201)


@router.get("/catalog", response_model=Catalog, summary="The reason-code catalog decisions use")
async def catalog(who: Principal) -> Response:
    return json_response(
        {
            "catalog_version": CATALOG_VERSION,
            "policy_bundle_id": POLICY_BUNDLE_ID,
            "reason_codes": REASON_CODES,
        }
    )
