"""OpenAPI descriptions of control's error responses."""

from __future__ import annotations

from typing import Any

from oa.control.api.models import ErrorEnvelope

_DESCRIPTIONS = {
    400: "invalid_request: a bad body or parameter (e.g. ttl_seconds outside 60..900)",
    401: "unauthorized: no, an unknown, expired or revoked session (or service token)",
    403: "forbidden: scopes you were not granted; details.denied_scopes names them",
    404: "not_found: no such token or session of yours",
    429: "rate_limited: too many failed sign-ins; see Retry-After",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[c]} for c in codes}
