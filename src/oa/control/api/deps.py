"""Who is calling: a signed-in session (users) or the service token (sync servers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from oa.control.adapters.accounts_sql import SessionInfo
from oa.control.domain.secrets import same_secret
from oa.control.service.accounts import Accounts
from oa.control.service.tokens import SyncTokens
from oa.exceptions import Unauthorized

bearer = HTTPBearer(auto_error=False, description="A control session token (from /api/auth/sign-in).")
service_bearer = HTTPBearer(
    auto_error=False, scheme_name="serviceToken", description="The control service token (sync servers)."
)


def accounts(request: Request) -> Accounts:
    svc: Accounts = request.app.state.accounts
    return svc


def tokens(request: Request) -> SyncTokens:
    svc: SyncTokens = request.app.state.tokens
    return svc


async def session(
    request: Request, creds: HTTPAuthorizationCredentials | None = Security(bearer)
) -> SessionInfo:
    return await accounts(request).authenticate(creds.credentials if creds else None)


async def service(
    request: Request, creds: HTTPAuthorizationCredentials | None = Security(service_bearer)
) -> None:
    expected: str = request.app.state.settings.service_token
    if creds is None or not same_secret(creds.credentials, expected):
        raise Unauthorized("the revocation feed is for sync servers: send the control service token")


Session = Annotated[SessionInfo, Depends(session)]
AccountsDep = Annotated[Accounts, Depends(accounts)]
TokensDep = Annotated[SyncTokens, Depends(tokens)]
