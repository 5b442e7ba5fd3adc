"""The principal of a request comes from its verified signature, never from its body."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from oa.runtime.signing import HEADER, verify_caller

signature_header = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    description="Short-lived caller signature (HS256 JWT); `oa token runtime --user ID` mints one.",
)


async def principal(request: Request, token: str | None = Security(signature_header)) -> str:
    secret: bytes = request.app.state.runtime_settings.caller_secret
    return verify_caller(secret, token)
