"""Every error the system reports on purpose, as one tree.

    OAError                      code              HTTP
    ├── InvalidRequest           invalid_request   400
    │   └── PayloadTooLarge      invalid_request   413
    ├── Unauthorized             unauthorized      401
    ├── Forbidden                forbidden         403
    ├── NotFound                 not_found         404
    ├── Conflict                 conflict          409
    │   ├── InvalidTransition    conflict          409
    │   ├── SeqMismatch          conflict          409
    │   └── IdempotencyConflict  conflict          409
    ├── StaleCursor              stale_cursor      410
    └── InternalError            internal_error    500

Each carries a message that says what was wrong and how to fix it, and `details` a
client can act on. The HTTP layer turns them into `{"error": {code, message, details}}`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OAError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidRequest(OAError):
    code = "invalid_request"
    status = 400


class PayloadTooLarge(InvalidRequest):
    status = 413


class Unauthorized(OAError):
    code = "unauthorized"
    status = 401


class Forbidden(OAError):
    code = "forbidden"
    status = 403


class NotFound(OAError):
    code = "not_found"
    status = 404


class Conflict(OAError):
    code = "conflict"
    status = 409


class InvalidTransition(Conflict):
    """The run (or worker) state machine does not allow this event now."""


class SeqMismatch(Conflict):
    """`expected_previous_seq` is not the stream's current last seq."""


class IdempotencyConflict(Conflict):
    """An idempotency key (or frame id) was reused with a different payload."""


class StaleCursor(OAError):
    code = "stale_cursor"
    status = 410


class InternalError(OAError):
    code = "internal_error"
    status = 500


ERROR_CODES = (
    "unauthorized",
    "forbidden",
    "invalid_request",
    "not_found",
    "conflict",
    "stale_cursor",
    "internal_error",
)
