"""The deployment's admin key: who may use `/admin/v1` and Khala's operator endpoints
(`/sync/v1/status`, `/sync/v1/lag`, `/metrics`). Compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from oa.exceptions import Unauthorized

# Documents the admin key in OpenAPI (auto_error off: the dependency below refuses, with
# the error envelope).
ADMIN_BEARER = HTTPBearer(
    auto_error=False, scheme_name="adminKey", description="The deployment's KHALA_SELF_HOSTED_ADMIN_KEY."
)


def admin_key_required(admin_key: str | None) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that refuses a request without `Authorization: Bearer <key>`."""
    key = admin_key.encode() if admin_key else None

    async def authorized(creds: HTTPAuthorizationCredentials | None = Security(ADMIN_BEARER)) -> None:
        if key is None:
            raise Unauthorized("this deployment has no admin key: start it with KHALA_SELF_HOSTED_ADMIN_KEY")
        if creds is None:
            raise Unauthorized("send Authorization: Bearer <KHALA_SELF_HOSTED_ADMIN_KEY>")
        if not hmac.compare_digest(creds.credentials.strip().encode(), key):
            raise Unauthorized("wrong admin key for this deployment")

    return authorized
