"""What each error status means on `/internal/v1`, for the OpenAPI document.

The envelope itself, and the handlers that produce it, are shared (`oa.http.errors`).
"""

from __future__ import annotations

from oa.http import documented_errors
from oa.runtime.api.models import ErrorEnvelope

error_responses = documented_errors(
    ErrorEnvelope,
    {
        400: "invalid_request: the body, a parameter or a header is wrong; the message says which",
        401: "unauthorized: missing, forged or expired X-OA-RUNTIME-SIGNATURE",
        403: "forbidden: the resource belongs to another principal",
        404: "not_found",
        409: "conflict: invalid transition, seq mismatch or idempotency conflict",
        410: "stale_cursor: the cursor is older than the stream keeps",
        413: "invalid_request: the body is larger than the configured limit",
    },
)
