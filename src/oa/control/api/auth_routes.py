"""`/api/auth`: sign in with a password, sign out, see who you are."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from oa.control.api.deps import AccountsDep, Session, TokensDep
from oa.control.api.errors_doc import error_responses
from oa.control.api.models import SessionOut, SignIn, WhoAmI
from oa.http import json_response
from oa.http.strict import StrictJSONRoute

router = APIRouter(prefix="/api/auth", tags=["auth"], route_class=StrictJSONRoute)


@router.post(
    "/sign-in",
    response_model=SessionOut,
    responses=error_responses(400, 401, 429),
    summary="Exchange email and password for a session token",
)
async def sign_in(body: SignIn, accounts: AccountsDep) -> Response:
    s = await accounts.sign_in(body.email, body.password, body.org)
    return json_response(
        {
            "session_token": s.session_token,
            "token_type": "Bearer",
            "session_id": s.session_id,
            "user_id": s.user_id,
            "org_id": s.org_id,
            "expires_at": s.expires_at.isoformat(),
        }
    )


@router.post("/sign-out", responses=error_responses(401), summary="Revoke this session")
async def sign_out(who: Session, tokens: TokensDep) -> Response:
    revoked = await tokens.revoke_sessions(who.user_id, who.session_id, "signed out")
    return json_response({"revoked_sessions": revoked})


@router.get("/session", response_model=WhoAmI, responses=error_responses(401), summary="This session")
async def whoami(who: Session) -> Response:
    return json_response(
        {
            "session_id": who.session_id,
            "user_id": who.user_id,
            "email": who.email,
            "org_id": who.org_id,
            "sync_scopes": list(who.sync_scopes),
        }
    )
