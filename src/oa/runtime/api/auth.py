"""The principal of a request (and the org it acts for) comes from its verified signature,
never from its body."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from oa.runtime.signing import HEADER, Caller, verify_caller

signature_header = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    description="Short-lived caller signature (HS256 JWT); `oa token runtime --user ID` mints one.",
)


async def caller(request: Request, token: str | None = Security(signature_header)) -> Caller:
    secret: bytes = request.app.state.runtime_settings.caller_secret
    return verify_caller(secret, token)


async def principal(request: Request, token: str | None = Security(signature_header)) -> str:
    return (await caller(request, token)).principal
