"""`/api/sync`: mint a sync token, revoke tokens and sessions, the revocation feed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from oa.control.api.deps import Session, TokensDep, service
from oa.control.api.errors_doc import error_responses
from oa.control.api.models import RevocationPage, RevokeOut, RevokeRequest, TokenOut, TokenRequest
from oa.exceptions import InvalidRequest
from oa.http import json_response
from oa.http.strict import StrictJSONRoute

router = APIRouter(prefix="/api/sync", tags=["sync"], route_class=StrictJSONRoute)
NO_STORE = {"Cache-Control": "no-store"}


@router.post(
    "/token",
    response_model=TokenOut,
    responses=error_responses(400, 401, 403),
    summary="Mint a short-lived sync token (ES256) for this session",
)
async def sync_token(who: Session, tokens: TokensDep, body: TokenRequest | None = None) -> Response:
    body = body or TokenRequest()
    minted = await tokens.mint(who, body.scopes, body.ttl_seconds, body.resource)
    return json_response(minted.body(), headers=NO_STORE)


@router.post(
    "/sessions/revoke",
    response_model=RevokeOut,
    responses=error_responses(400, 401, 404),
    summary="Revoke one of your tokens (jti), one of your sessions, or all your sessions",
)
async def revoke(body: RevokeRequest, who: Session, tokens: TokensDep) -> Response:
    given = [body.jti is not None, body.session_id is not None, body.all_sessions]
    if sum(given) != 1:
        raise InvalidRequest("give exactly one of jti, session_id or all_sessions: true")
    if body.jti is not None:
        await tokens.revoke_jti(who.user_id, body.jti, "revoked by user")
        return json_response({"revoked_jtis": [body.jti], "revoked_sessions": []})
    sessions = await tokens.revoke_sessions(
        who.user_id, body.session_id, "revoked by user" if body.session_id else "all sessions revoked"
    )
    return json_response({"revoked_jtis": [], "revoked_sessions": sessions})


@router.get(
    "/revocations",
    response_model=RevocationPage,
    responses=error_responses(400, 401),
    dependencies=[Depends(service)],
    summary="Revoked jti and session ids after a cursor (for sync servers; service token)",
)
async def revocations(
    tokens: TokensDep,
    since: Annotated[
        int, Query(ge=0, le=2**62, description="The cursor of the previous page; 0 for all")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    return json_response(await tokens.revocations(since, limit), headers=NO_STORE)
