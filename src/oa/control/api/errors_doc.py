"""What each error status means on control's API, for the OpenAPI document.

The envelope itself, and the handlers that produce it, are shared (`oa.http.errors`).
"""

from __future__ import annotations

from oa.control.api.models import ErrorEnvelope
from oa.http import documented_errors

error_responses = documented_errors(
    ErrorEnvelope,
    {
        400: "invalid_request: a bad body or parameter (e.g. ttl_seconds outside 60..900)",
        401: "unauthorized: no, an unknown, expired or revoked session (or service token)",
        403: "forbidden: scopes you were not granted; details.denied_scopes names them",
        404: "not_found: no such token or session of yours",
        429: "rate_limited: too many failed sign-ins; see Retry-After",
    },
)
