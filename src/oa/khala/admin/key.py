"""The deployment's admin key: who may use `/admin/v1` and Khala's operator endpoints
(`/sync/v1/status`, `/sync/v1/lag`, `/metrics`). Compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Header

from oa.exceptions import Unauthorized


def admin_key_required(admin_key: str | None) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that refuses a request without `Authorization: Bearer <key>`."""
    key = admin_key.encode() if admin_key else None

    async def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if key is None:
            raise Unauthorized("this deployment has no admin key: start it with KHALA_SELF_HOSTED_ADMIN_KEY")
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("send Authorization: Bearer <KHALA_SELF_HOSTED_ADMIN_KEY>")
        if not hmac.compare_digest(authorization[7:].strip().encode(), key):
            raise Unauthorized("wrong admin key for this deployment")

    return authorized
