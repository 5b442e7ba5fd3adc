"""`/internal/v1/spend`: authorizations and reservations, in integer sats.

Amounts are JSON integers from 1 to the bitcoin supply in sats: strings, fractions,
zero, negatives and anything larger are refused with a 400 that says so, before any
row is touched.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.responses import Response

from oa.exceptions import InvalidRequest
from oa.http.strict import StrictJSONRoute
from oa.runtime.api.auth import principal
from oa.runtime.api.encode import json_response
from oa.runtime.api.errors import error_responses
from oa.runtime.api.policy import ID_PATTERN, TOOL_PATTERN, DecisionOut
from oa.runtime.domain.policy import MODES, DecisionInputs
from oa.runtime.domain.spend import MAX_SATS
from oa.runtime.service.spend import SpendService, refusal

router = APIRouter(prefix="/internal/v1/spend", tags=["spend"], route_class=StrictJSONRoute)
Principal = Annotated[str, Depends(principal)]
Id = Annotated[StrictStr, Field(pattern=ID_PATTERN, max_length=128)]
IdPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=128)]
Sats = Annotated[
    StrictInt, Field(gt=0, le=MAX_SATS, description=f"Integer sats, 1..{MAX_SATS} (the bitcoin supply)")
]
Reason = Annotated[StrictStr, Field(max_length=500, pattern=r"^[^\x00]*$")]
State = Literal["reserved", "committed", "released", "reconcile_required"]
WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 413)
READ_ERRORS = error_responses(400, 401, 403, 404)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateAuthorization(Strict):
    authorization_id: Id
    mode: Literal["interactive", "delegated_budget", "delegated_budget_with_threshold", "deny"]
    max_total_sats: Sats
    max_per_call_sats: Sats | None = None
    max_per_day_sats: Sats | None = None
    threshold_sats: Sats | None = Field(None, description="delegated_budget_with_threshold only")
    allowed_tools: (
        Annotated[
            list[Annotated[StrictStr, Field(pattern=TOOL_PATTERN, max_length=128)]], Field(max_length=100)
        ]
        | None
    ) = None
    expires_at: AwareDatetime | None = Field(None, description="RFC 3339 with a timezone")


class Authorization(BaseModel):
    authorization_id: str
    owner: str
    mode: str
    max_total_sats: int
    max_per_call_sats: int | None
    max_per_day_sats: int | None
    threshold_sats: int | None
    allowed_tools: list[str] | None
    spent_sats: int
    reserved_sats: int
    available_sats: int
    day: str
    day_used_sats: int
    expires_at: str | None
    revoked_at: str | None
    revoke_reason: str | None
    created_at: str | None


class Revoke(Strict):
    reason: Reason | None = None


class Reserve(Strict):
    authorization_id: Id
    run_id: Id
    tool_call_id: Id
    amount_sats: Sats
    tool: Annotated[StrictStr, Field(pattern=TOOL_PATTERN, max_length=128)] = "spend"


class Reservation(BaseModel):
    reservation_id: str
    authorization_id: str
    run_id: str
    tool_call_id: str
    tool: str
    amount_sats: int
    committed_sats: int | None
    state: State
    decision_id: str
    deadline_at: str | None
    reason: str | None
    created_at: str | None
    updated_at: str | None


class ReserveResult(BaseModel):
    reservation: Reservation
    decision: DecisionOut
    idempotentReplay: bool


class Commit(Strict):
    amount_sats: Annotated[StrictInt, Field(ge=0, le=MAX_SATS)] | None = Field(
        None, description="The actual cost, at most the reserved amount (default: all of it)"
    )


class Release(Strict):
    reason: Reason | None = None


class Resolve(Strict):
    outcome: Literal["committed", "released"]
    amount_sats: Annotated[StrictInt, Field(ge=0, le=MAX_SATS)] | None = None
    reason: Reason | None = None


class SettleResult(BaseModel):
    reservation: Reservation
    idempotentReplay: bool


class ReservationList(BaseModel):
    reservations: list[Reservation]


async def service(request: Request) -> SpendService:
    svc: SpendService = request.app.state.spend
    return svc


Spend = Annotated[SpendService, Depends(service)]


@router.post(
    "/authorizations",
    response_model=Authorization,
    status_code=201,
    responses={200: {"model": Authorization, "description": "identical repeat"}, **WRITE_ERRORS},
    summary="Grant a spend authorization (idempotent by id; immutable once made)",
)
async def create_authorization(body: CreateAuthorization, who: Principal, spend: Spend) -> Response:
    if body.threshold_sats is not None and body.mode != "delegated_budget_with_threshold":
        raise InvalidRequest(
            "threshold_sats only applies to mode delegated_budget_with_threshold; drop it or change the mode",
            {"field": "threshold_sats", "modes": list(MODES)},
        )
    if body.mode == "delegated_budget_with_threshold" and body.threshold_sats is None:
        raise InvalidRequest(
            "mode delegated_budget_with_threshold needs threshold_sats (above it a person approves)",
            {"field": "threshold_sats"},
        )
    for name in ("max_per_call_sats", "max_per_day_sats"):
        value = getattr(body, name)
        if value is not None and value > body.max_total_sats:
            raise InvalidRequest(
                f"{name} ({value}) is above max_total_sats ({body.max_total_sats}); lower it",
                {"field": name},
            )
    values: dict[str, Any] = body.model_dump()
    if body.allowed_tools is not None:
        values["allowed_tools"] = sorted(set(body.allowed_tools))
    created, auth = await spend.create_authorization(who, values)
    return json_response(auth, 201 if created else 200)


@router.get(
    "/authorizations/{authorization_id}",
    response_model=Authorization,
    responses=READ_ERRORS,
    summary="An authorization's limits, what is spent and reserved, what is left",
)
async def get_authorization(authorization_id: IdPath, who: Principal, spend: Spend) -> Response:
    return json_response(await spend.get_authorization(who, authorization_id))


@router.post(
    "/authorizations/{authorization_id}/revoke",
    response_model=Authorization,
    responses=WRITE_ERRORS,
    summary="Revoke an authorization (idempotent); open reservations may still settle",
)
async def revoke(
    authorization_id: IdPath, who: Principal, spend: Spend, body: Revoke | None = None
) -> Response:
    return json_response(await spend.revoke(who, authorization_id, body.reason if body else None))


@router.post(
    "/reservations",
    response_model=ReserveResult,
    status_code=201,
    responses={
        200: {"model": ReserveResult, "description": "the same reserve again: replay"},
        **WRITE_ERRORS,
    },
    summary="Reserve sats for a tool call (unique per authorization, run, tool call)",
)
async def reserve(body: Reserve, who: Principal, spend: Spend) -> Response:
    inputs = DecisionInputs(
        body.run_id, body.tool_call_id, body.tool, body.amount_sats, body.authorization_id
    )
    decision = await spend.decide(who, inputs)
    if decision["decision"] != "allow":
        raise refusal(decision)
    reservation = decision.pop("reservation")
    replay = bool(decision["idempotentReplay"])
    return json_response(
        {"reservation": reservation, "decision": decision, "idempotentReplay": replay}, 200 if replay else 201
    )


@router.get(
    "/reservations",
    response_model=ReservationList,
    responses=READ_ERRORS,
    summary="List your reservations (state=reconcile_required: what needs reconciling)",
)
async def list_reservations(
    who: Principal,
    spend: Spend,
    state: State | None = None,
    authorization_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    return json_response({"reservations": await spend.list_reservations(who, state, authorization_id, limit)})


@router.get(
    "/reservations/{reservation_id}",
    response_model=Reservation,
    responses=READ_ERRORS,
    summary="One reservation",
)
async def get_reservation(reservation_id: IdPath, who: Principal, spend: Spend) -> Response:
    return json_response(await spend.reservation(who, reservation_id))


def _settled(replay: bool, reservation: dict[str, Any]) -> Response:
    return json_response({"reservation": reservation, "idempotentReplay": replay})


@router.post(
    "/reservations/{reservation_id}/commit",
    response_model=SettleResult,
    responses=WRITE_ERRORS,
    summary="Commit a reservation (spend it); a repeat replays, after release it is a 409",
)
async def commit(
    reservation_id: IdPath, who: Principal, spend: Spend, body: Commit | None = None
) -> Response:
    return _settled(*await spend.settle(who, reservation_id, "commit", body.amount_sats if body else None))


@router.post(
    "/reservations/{reservation_id}/release",
    response_model=SettleResult,
    responses=WRITE_ERRORS,
    summary="Release a reservation (return its sats); a repeat replays, after commit it is a 409",
)
async def release(
    reservation_id: IdPath, who: Principal, spend: Spend, body: Release | None = None
) -> Response:
    return _settled(*await spend.settle(who, reservation_id, "release", None, body.reason if body else None))


@router.post(
    "/reservations/{reservation_id}/resolve",
    response_model=SettleResult,
    responses=WRITE_ERRORS,
    summary="Resolve a reconcile_required reservation as committed or released",
)
async def resolve(reservation_id: IdPath, body: Resolve, who: Principal, spend: Spend) -> Response:
    action = "commit" if body.outcome == "committed" else "release"
    reason = body.reason or "resolved by reconciliation"
    return _settled(
        *await spend.settle(who, reservation_id, action, body.amount_sats, reason, resolving=True)
    )
